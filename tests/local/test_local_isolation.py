"""Local mode isolation (docs/security.md, "Local mode isolation"): a gateway running as
root runs its instances as `nobody`, so a function cannot read the gateway's environment
(its admin token) from `/proc/<gateway pid>/environ`, nor the queue file; it still runs,
reads its code and writes its own TMPDIR."""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.local.conftest import _wait_for
from tests.wheels import offline_index

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(os.geteuid() != 0, reason="the gateway must be root to change users"),
]

ADMIN_TOKEN = "isolation-admin-token-0123456789"

SNOOP = """
import os, tempfile

def handler(event, context):
    def read(path):
        try:
            with open(path, 'rb') as f:
                return f.read().decode('latin-1')
        except OSError as exc:
            return type(exc).__name__
    with tempfile.NamedTemporaryFile(dir=os.environ['TMPDIR']) as scratch:
        scratch.write(b'x')
    return {
        'uid': os.getuid(),
        'environ': read('/proc/%d/environ' % os.getppid()),
        'queue': read(event['queue']),
        'code': 'def handler' in read('main.py'),
    }
"""


@pytest.fixture
def open_state_dir() -> Iterator[Path]:
    """A state folder `nobody` can reach (pytest's own tmp folder is root's, mode 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="kubefaas-isolation-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _runtime_command() -> str:
    """This project's runtime on the system interpreter, which `nobody` may execute (the
    test's own interpreter may live in root's home)."""
    site = sysconfig.get_paths()["purelib"]
    boot = (
        f"import runpy, site; site.addsitedir({site!r}); "
        "runpy.run_module('kubefaas_runtime', run_name='__main__', alter_sys=True)"
    )
    return json.dumps(["/usr/bin/python3.11", "-c", boot])


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs /usr/bin/python3.11")
def test_instances_of_a_root_gateway_cannot_read_its_environment(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    open_state_dir: Path,
) -> None:
    manifest_dir.add_function("snoop", SNOOP)
    gateway = start_gateway(
        manifest_dir.path,
        state_dir=open_state_dir,
        env={"KUBEFAAS_ADMIN_TOKEN": ADMIN_TOKEN, "KUBEFAAS_RUNTIME_COMMAND": _runtime_command()},
    )
    queue = open_state_dir / "async-queue.sqlite3"
    response = gateway.invoke("snoop", {"queue": str(queue)})
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["uid"] != 0
    assert ADMIN_TOKEN not in seen["environ"]
    assert seen["environ"] == "PermissionError"
    assert seen["queue"] == "PermissionError"
    assert seen["code"] is True

    # Still tied to the gateway: the death signal survives the change of user.
    pids = gateway.instance_pids()
    assert pids
    gateway.process.kill()
    gateway.process.wait()
    assert _wait_for(lambda: not gateway.instance_pids(), 10), gateway.instance_pids()


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs /usr/bin/python3.11")
def test_an_instance_as_nobody_imports_its_installed_requirements(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    open_state_dir: Path,
    tmp_path: Path,
) -> None:
    # pip runs as the gateway (root); the dependency cache must stay readable to nobody.
    env = {**offline_index(tmp_path / "wheels"), "KUBEFAAS_RUNTIME_COMMAND": _runtime_command()}
    code = {
        "main.py": "import os, tinytext\n\ndef handler(event, context):\n"
        "    return {'text': tinytext.shout('hi'), 'uid': os.getuid()}\n",
        "requirements.txt": "tinytext==1.0\n",
    }
    manifest_dir.path.joinpath("deps.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubefaas.io/v1alpha1",
                "kind": "Function",
                "metadata": {"name": "deps"},
                "spec": {"runtime": "python3.11", "code": {"inline": code}},
            }
        )
    )
    gateway = start_gateway(manifest_dir.path, env=env, state_dir=open_state_dir)
    response = gateway.invoke("deps", {})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "HI!"
    assert response.json()["uid"] != 0


VICTIM = """
import os

SECRET = "victim-code-secret-42"

def handler(event, context):
    with open(os.path.join(os.environ['TMPDIR'], 'note'), 'w') as f:
        f.write(SECRET)
    return {'uid': os.getuid(), 'pid': os.getpid(), 'tmp': os.environ['TMPDIR']}
"""

NEIGHBOUR = """
import os

def handler(event, context):
    def read(path):
        try:
            with open(path, 'rb') as f:
                return f.read().decode('latin-1')
        except OSError as exc:
            return type(exc).__name__
    return {
        'uid': os.getuid(),
        'code': read(event['code']),
        'environ': read('/proc/%d/environ' % event['pid']),
        'tmp': read(os.path.join(event['tmp'], 'note')),
        'own': 'def handler' in read('main.py'),
    }
"""


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs /usr/bin/python3.11")
def test_one_function_cannot_read_another_ones_code_tmp_or_environment(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    open_state_dir: Path,
) -> None:
    manifest_dir.add_function("victim", VICTIM)
    manifest_dir.add_function("neighbour", NEIGHBOUR)
    gateway = start_gateway(
        manifest_dir.path,
        state_dir=open_state_dir,
        env={"KUBEFAAS_RUNTIME_COMMAND": _runtime_command()},
    )
    victim = gateway.invoke("victim", {})
    assert victim.status_code == 200, victim.text
    found = victim.json()
    code = open_state_dir / "local" / "code" / "default" / "victim" / "main.py"
    assert "victim-code-secret-42" in code.read_text()  # root (the gateway) still can
    response = gateway.invoke(
        "neighbour", {"code": str(code), "pid": found["pid"], "tmp": found["tmp"]}
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["uid"] not in (0, found["uid"])
    assert seen == {
        "uid": seen["uid"],
        "code": "PermissionError",
        "environ": "PermissionError",
        "tmp": "PermissionError",
        "own": True,
    }
