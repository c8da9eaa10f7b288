"""Fixtures for the local tier: the real gateway process over a folder of manifests.

Start a gateway exactly as a user does (`python -m kubefaas_gateway.local_mode DIR`, the code
behind `kubefaas local DIR`) on a free port, with real runtime processes behind it:

    def test_something(manifest_dir, start_gateway):
        manifest_dir.add_example("counter", spec={"scaling": {"scaleToZeroAfterSeconds": 10}})
        manifest_dir.add_function("boom", "def handler(event, context):\\n    raise ValueError")
        gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_LOG_LEVEL": "debug"})
        response = gateway.invoke("counter", {"x": 1})
        assert gateway.sample("kubefaas_invocations_total", function="counter", code="200") == 1

- `manifest_dir` (`ManifestDir`): a temp folder; `add_example(example, *, name=None,
  **merge)` copies `examples/<example>.yaml`, renamed if `name`, deep-merging `merge` (e.g.
  `spec={"timeoutSeconds": 1}`); `add_examples()` copies them all; `add_function(name,
  source, *, namespace="default", **spec)` writes an inline-code Function whose `main.py` is
  `source`; `add_raw(filename, text)` writes any text (bad manifests, ConfigMaps).
- `start_gateway(directory, *, env=None, extra_args=(), state_dir=None)` -> `RunningGateway`
  once `/readyz` answers (`state_dir` shared by two gateways is a restart);
  `examples_gateway` serves a copy of every example.
- `RunningGateway`: `url`, `client` (httpx, base_url set), `invoke(name, payload=None, *,
  namespace=None, path="", method="POST", **httpx_kwargs)`, `metrics()`, `sample(name,
  **labels)`, `stdout()`/`stderr()` (everything the process printed so far),
  `instance_pids()` (runtime processes it started), `terminate()`, `kill()`.

Teardown stops every gateway (SIGTERM, then SIGKILL), then fails the test if any runtime
process it started is still alive: no test may leave an orphan behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.manifests import deep_merge

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
ORPHAN_GRACE_SECONDS = 5.0
# What the gateway prints once it listens (local.serve_local).
SERVING_LINE = re.compile(r"serving on (http://\S+)")


@dataclass
class ManifestDir:
    """A folder of manifests to serve; each helper returns the file it wrote."""

    path: Path

    def add_example(self, example: str, *, name: str | None = None, **merge: Any) -> Path:
        """Copy `examples/<example>.yaml`, renamed to `name` and deep-merged with `merge`."""
        document = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
        document = deep_merge(document, merge)
        if name is not None:
            document["metadata"]["name"] = name
        target = self.path / f"{document['metadata']['name']}.yaml"
        target.write_text(yaml.safe_dump(document, sort_keys=False))
        return target

    def add_examples(self) -> None:
        for example in sorted(EXAMPLES.glob("*.yaml")):
            self.add_example(example.stem)

    def add_function(
        self, name: str, source: str, *, namespace: str = "default", **spec: Any
    ) -> Path:
        """An inline-code Function whose `main.py` is `source` (handler `main.handler`)."""
        document = {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": source}}, **spec},
        }
        target = self.path / f"{namespace}-{name}.yaml"
        target.write_text(yaml.safe_dump(document, sort_keys=False))
        return target

    def add_raw(self, filename: str, text: str) -> Path:
        target = self.path / filename
        target.write_text(text)
        return target


@dataclass
class RunningGateway:
    """One gateway process; see the module docstring."""

    url: str
    process: subprocess.Popen[bytes]
    state_dir: Path
    stdout_path: Path
    stderr_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        namespace: str | None = None,
        path: str = "",
        method: str = "POST",
        **kwargs: Any,
    ) -> httpx.Response:
        """Call `/function/[namespace/]name[path]`, with `payload` as the JSON body."""
        target = f"/function/{namespace}/{name}" if namespace else f"/function/{name}"
        if payload is not None:
            kwargs["json"] = payload
        return self.client.request(method, target + path, **kwargs)

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics whose labels include `labels`; None if absent."""
        for family in text_string_to_metric_families(self.metrics()):
            for found in family.samples:
                if found.name == name and labels.items() <= found.labels.items():
                    return float(found.value)
        return None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def instance_pids(self) -> list[int]:
        """Runtime processes started by this gateway that are still alive."""
        return _instance_pids(self.state_dir)

    def terminate(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM (what Ctrl-C or Kubernetes sends); SIGKILL if it hangs; exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the gateway alone: a crash, with no chance to clean up."""
        self.process.kill()
        self.process.wait()


def _instance_pids(state_dir: Path) -> list[int]:
    """PIDs whose environment points into `state_dir`'s instance folders (Linux /proc)."""
    marker = f"TMPDIR={state_dir.resolve() / 'local' / 'instances'}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker in environ:
            pids.append(int(entry.name))
    return pids


def _no_instances(gateway: RunningGateway) -> bool:
    return not gateway.instance_pids()


def _wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if check():
            return True
        time.sleep(interval)
    return check()


@pytest.fixture
def manifest_dir(tmp_path: Path) -> ManifestDir:
    folder = tmp_path / "manifests"
    folder.mkdir()
    return ManifestDir(folder)


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def start(
        directory: Path,
        *,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> RunningGateway:
        n = len(started)
        state_dir = state_dir or tmp_path / f"state-{n}"
        stdout_path, stderr_path = tmp_path / f"gateway-{n}.out", tmp_path / f"gateway-{n}.err"
        # Hermetic: none of the caller's own KUBEFAAS_* settings leak in.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBEFAAS_")}
        environment.update(env or {})
        command = [
            sys.executable,
            "-m",
            "kubefaas_gateway.local_mode",
            str(directory),
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
            *extra_args,
        ]
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                command, stdout=out, stderr=err, env=environment, start_new_session=True
            )
        url: list[str] = []

        def listening() -> bool:
            found = SERVING_LINE.search(stdout_path.read_text(errors="replace"))
            if found:
                url.append(found.group(1))
            return bool(found) or process.poll() is not None

        _wait_for(listening, START_TIMEOUT_SECONDS)
        if not url:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"gateway did not start (exit {process.returncode}):\n"
                f"{stdout_path.read_text()}\n{stderr_path.read_text()}"
            )
        gateway = RunningGateway(url[0], process, state_dir, stdout_path, stderr_path)
        started.append(gateway)

        def ready() -> bool:
            try:
                return gateway.client.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        if not _wait_for(ready, START_TIMEOUT_SECONDS):
            raise RuntimeError(f"gateway never became ready:\n{gateway.stderr()}")
        return gateway

    yield start

    orphans: dict[int, list[int]] = {}
    # All stopped first: gateways that share a state dir see each other's instances.
    for gateway in started:
        gateway.terminate()
    for gateway in started:
        if not _wait_for(partial(_no_instances, gateway), ORPHAN_GRACE_SECONDS):
            pids = gateway.instance_pids()
            orphans[gateway.process.pid] = pids
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
    assert not orphans, f"runtime processes outlived their gateway: {orphans}"


@pytest.fixture
def examples_gateway(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> RunningGateway:
    """A gateway serving a copy of every manifest in examples/."""
    manifest_dir.add_examples()
    return start_gateway(manifest_dir.path)
