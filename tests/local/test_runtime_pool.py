"""A pool instance (``KUBEFAAS_POOL=1``): generic until specialised, then one function only
(docs/warm-pool.md). The real runtime process over loopback HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
import yaml

from kubefaas.api import parse_function
from kubefaas.pool import specialization_document
from tests.loopback import free_port

pytestmark = pytest.mark.local

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "runtime"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPECIALIZE = "/_kubefaas/specialize"
HELLO = """\
import os

GREETING = os.environ["GREETING"]

def handler(event, context):
    return {"message": f"{GREETING}, {event['name']}!", "function": context.function_name}
"""


def identity(name: str, version: str = "1") -> dict[str, str]:
    return {
        "KUBEFAAS_FUNCTION_NAMESPACE": "team-a",
        "KUBEFAAS_FUNCTION_NAME": name,
        "KUBEFAAS_FUNCTION_VERSION": version,
        "KUBEFAAS_HANDLER": "main.handler",
    }


@pytest.fixture
def pool_instance(tmp_path: Path) -> Iterator[Callable[[], httpx.Client]]:
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    logs: list[BinaryIO] = []

    def start() -> httpx.Client:
        port = free_port()
        scratch = tmp_path / f"scratch-{port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(RUNTIME_SOURCE), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "TMPDIR": str(scratch),
            "KUBEFAAS_POOL": "1",
            # Where a function-less start would look: must not matter to a pool instance.
            "KUBEFAAS_CODE_DIR": str(tmp_path / "nothing-here"),
        }
        log = (tmp_path / f"runtime-{port}.log").open("wb")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "kubefaas_runtime"], env=env, stdout=log, stderr=log
            )
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)
        clients.append(client)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / f"runtime-{port}.log").read_text()
            time.sleep(0.02)

    yield start
    for client in clients:
        client.close()
    for process in processes:
        process.terminate()
        process.wait(timeout=20)
    for log in logs:
        log.close()


def test_a_pool_instance_is_ready_without_a_function_and_serves_none(
    pool_instance: Callable[[], httpx.Client],
) -> None:
    client = pool_instance()
    assert client.get("/healthz").json() == {"status": "pool"}
    response = client.post("/", json={"name": "x"})
    assert response.status_code == 503
    assert "no function" in response.json()["error"]


def test_specialised_once_it_serves_that_function_and_refuses_another(
    pool_instance: Callable[[], httpx.Client],
) -> None:
    client = pool_instance()
    doc = {"env": {**identity("hello"), "GREETING": "hi"}, "files": {"main.py": HELLO}}
    first = client.post(SPECIALIZE, json=doc)
    assert first.status_code == 200
    assert first.json()["status"] == "ok"
    assert client.get("/healthz").json() == {"status": "ok"}
    call = client.post("/", json={"name": "kube"})
    assert call.status_code == 200
    assert call.json() == {"message": "hi, kube!", "function": "hello"}

    # The same function again (a retry after a lost answer): the same outcome.
    again = client.post(SPECIALIZE, json=doc)
    assert again.status_code == 200
    assert again.json()["status"] == "ok"
    # Another function, or another version of it: refused, and the first one still serves.
    for other in (identity("other"), identity("hello", version="2")):
        refused = client.post(SPECIALIZE, json={"env": other, "files": {"main.py": HELLO}})
        assert refused.status_code == 409
        assert "team-a/hello/1" in refused.json()["error"]
    assert client.post("/", json={"name": "again"}).json()["message"] == "hi, again!"


def test_an_init_failure_is_reported_by_the_specialisation_and_by_every_call(
    pool_instance: Callable[[], httpx.Client],
) -> None:
    client = pool_instance()
    doc = {"env": identity("broken"), "files": {"main.py": "raise RuntimeError('no db')\n"}}
    response = client.post(SPECIALIZE, json=doc)
    assert response.status_code == 200
    assert response.json()["status"] == "init-failed"
    assert response.json()["error"]["errorMessage"] == "no db"
    assert client.post("/", json={}).status_code == 500


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"files": {"main.py": HELLO}}, "'env'"),
        ({"env": identity("x"), "files": {}}, "'files'"),
        ({"env": identity("x"), "files": {"../escape.py": HELLO}}, "relative path"),
        ({"env": {**identity("x"), "KUBEFAAS_CODE_DIR": "/"}, "files": {"m.py": ""}}, "must not"),
        ({"env": {"KUBEFAAS_FUNCTION_NAME": "x"}, "files": {"m.py": ""}}, "must set"),
    ],
)
def test_a_bad_specialisation_says_what_is_wrong_and_leaves_the_instance_generic(
    pool_instance: Callable[[], httpx.Client], doc: dict[str, object], message: str
) -> None:
    client = pool_instance()
    response = client.post(SPECIALIZE, json=doc)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get("/healthz").json() == {"status": "pool"}


def test_the_document_built_from_a_function_makes_the_instance_that_function(
    pool_instance: Callable[[], httpx.Client],
) -> None:
    example = yaml.safe_load((EXAMPLES / "hello.yaml").read_text())
    example["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    fn = parse_function(example)
    client = pool_instance()
    response = client.post(SPECIALIZE, json=specialization_document(fn, version=1))
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    call = client.post("/", json={"name": "pool"})
    assert call.status_code == 200
    assert call.json()["message"] == "hello, pool!"
