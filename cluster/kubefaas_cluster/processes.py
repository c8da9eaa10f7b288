"""Start, find, check and stop the cluster's component processes.

Each component runs in its own session (process group), logs stdout and stderr to
``<cluster dir>/logs/<name>.log`` (appended, one header line per start) and is recorded in
``<cluster dir>/run/<name>.pid`` as JSON::

    {"pid": 1234, "start_ticks": 567890, "argv": ["/path/etcd", "--name", ...],
     "config_digest": "<sha256 of the config files the component reads, or empty>"}

``start_ticks`` is field 22 of ``/proc/<pid>/stat``; comparing it guards against a PID that
was reused by an unrelated process after a crash, so ``down`` never signals a stranger.
Stopping sends SIGTERM to the whole group, waits, then SIGKILL, so helpers a component
spawned go too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one component."""

    name: str
    argv: Sequence[str]
    # Added to (and overriding) the starting process's environment.
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # Changes when a config file the component reads changes, so `up` restarts it.
    config_digest: str = ""


@dataclass(frozen=True)
class Running:
    """A recorded component process that is alive right now."""

    name: str
    pid: int
    argv: tuple[str, ...]
    config_digest: str = ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses; split after its last ")".
    _, _, rest = raw.rpartition(")")
    return rest.split()


def start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, *, ticks: int | None = None) -> bool:
    """True if `pid` exists, is not a zombie and (if given) started at `ticks`."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def _die_with_parent() -> None:
    """Runs in the child: ask the kernel to SIGTERM it when the starting process dies.

    Used by the test fixture so that a killed pytest cannot leave a cluster behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ProcessTable:
    """The processes of one cluster directory; safe to rebuild from disk at any time."""

    run_dir: Path
    log_dir: Path
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running(self, name: str) -> Running | None:
        """The live process recorded for `name`, or None.

        A record whose process died stays on disk, so `dead` components can be reported;
        `stop` or the next `start` replaces it.
        """
        path = self.pid_file(name)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, ticks, argv = int(record["pid"]), int(record["start_ticks"]), record["argv"]
            digest = str(record.get("config_digest", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._reap(name)
        if not is_alive(pid, ticks=ticks):
            return None
        return Running(name=name, pid=pid, argv=tuple(argv), config_digest=digest)

    def recorded_names(self) -> list[str]:
        """Names with a pid file, whether alive or not."""
        if not self.run_dir.is_dir():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))

    def start(self, spec: ProcessSpec, *, die_with_parent: bool = False) -> Running:
        """Start `spec` detached in its own session, logging to its log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file(spec.name)
        with log.open("ab") as handle:
            header = f"=== {datetime.now(UTC).isoformat()} start: {' '.join(spec.argv)}\n"
            handle.write(header.encode())
            handle.flush()
            child = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **spec.env} if spec.env is not None else None,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        ticks = start_ticks(child.pid)
        record = {
            "pid": child.pid,
            "start_ticks": ticks,
            "argv": list(spec.argv),
            "config_digest": spec.config_digest,
        }
        tmp = self.pid_file(spec.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        tmp.replace(self.pid_file(spec.name))
        self._children[spec.name] = child
        return Running(
            name=spec.name, pid=child.pid, argv=tuple(spec.argv), config_digest=spec.config_digest
        )

    def _reap(self, name: str) -> None:
        child = self._children.get(name)
        if child is not None and child.poll() is not None:
            del self._children[name]

    def stop(self, name: str, *, grace: float = STOP_GRACE_SECONDS) -> bool:
        """SIGTERM the component's process group, SIGKILL it after `grace`; True if it ran."""
        proc = self.running(name)
        if proc is None:
            self.pid_file(name).unlink(missing_ok=True)
            return False
        _signal_group(proc.pid, signal.SIGTERM)
        if not self._wait_gone(name, proc.pid, timeout=grace):
            _signal_group(proc.pid, signal.SIGKILL)
            self._wait_gone(name, proc.pid, timeout=grace)
        # Anything left in the group (helpers that ignored SIGTERM) goes as well.
        _signal_group(proc.pid, signal.SIGKILL)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def _wait_gone(self, name: str, pid: int, *, timeout: float) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == pid:
            # Our own child: wait() reaps it, so no zombie or ResourceWarning is left.
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            del self._children[name]
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def dead_component(self, names: Sequence[str]) -> str | None:
        """A reason string if any of `names` has died, for aborting a readiness wait early."""
        for name in names:
            if self.running(name) is None:
                return f"{name} exited; see {self.log_file(name)}"
        return None

    def tail(self, name: str, *, lines: int = 60) -> str:
        """The last `lines` lines of a component's log, for error messages."""
        try:
            text = self.log_file(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_members(pgid: int) -> list[int]:
    """Live PIDs whose process group is `pgid` (used to prove nothing was left behind)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
