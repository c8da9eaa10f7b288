"""Run the real operator (`kubefaas operator`) as a child process, for tests and benchmarks.

Used by the API-server tier and `bench/operator_scale.py`: both need the operator exactly
as a user runs it (its own process, its own kopf loop, credentials from a kubeconfig), a
way to crash it (SIGKILL) or stop it (SIGTERM), its log for failure messages, and its
peak memory. The child asks the kernel to kill it when the starting process dies, so a
killed test run leaves no operator behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_CHARS = 6000

# What a test wants unless it says otherwise: no fixed ports (several operators may run at
# once), and no autoscaler (it would own the replicas tests set by hand).
TEST_ENVIRONMENT = {
    "KUBEFAAS_OPERATOR_HEALTH_PORT": "0",
    "KUBEFAAS_OPERATOR_METRICS_PORT": "0",
    "KUBEFAAS_OPERATOR_AUTOSCALER": "false",
    "PYTHONUNBUFFERED": "1",
}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def kubefaas_command() -> list[str]:
    """The `kubefaas` entry point installed next to this Python, else `python -m`."""
    script = Path(sys.executable).with_name("kubefaas")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "kubefaas.cli"]


@dataclass
class OperatorProcess:
    """One `kubefaas operator` child process."""

    kubeconfig: Path
    log_path: Path
    namespaces: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> OperatorProcess:
        environ = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        environ.update(TEST_ENVIRONMENT)
        environ.update(self.env)
        environ["KUBECONFIG"] = str(self.kubeconfig)
        argv = [*kubefaas_command(), "operator", *self.extra_args]
        for namespace in self.namespaces:
            argv += ["--namespace", namespace]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"=== start: {' '.join(argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            argv,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the operator was not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Crash it (SIGKILL): no cleanup, as when a node dies."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()
        self._close_log()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Stop it gracefully (SIGTERM), SIGKILL after `timeout`; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self, tail: int = LOG_TAIL_CHARS) -> str:
        """The end of its log, for a failure message."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no operator log)"
        return text[-tail:]

    def peak_rss_bytes(self) -> int:
        """Peak resident memory so far (``VmHWM`` of /proc/<pid>/status); 0 when gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError, RuntimeError):
            return 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.contextmanager
def running_operator(
    kubeconfig: Path,
    log_path: Path,
    *,
    namespaces: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[OperatorProcess]:
    """Start the operator; always stop it on exit."""
    operator = OperatorProcess(
        kubeconfig=kubeconfig, log_path=log_path, namespaces=namespaces, env=dict(env or {})
    ).start()
    try:
        yield operator
    finally:
        operator.stop()
