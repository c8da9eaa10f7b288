"""A function's pip requirements, installed once per distinct (runtime, requirements) pair.

See docs/architecture.md, "Packaging" and docs/packaging.md. A `requirements.txt` at the
top of a function's code lists pip requirements. They are installed with pip into a target
folder named by a hash of the runtime, the interpreter's ABI tag and the requirement lines
(comments and blank lines do not count), never at a cold start: every instance and every
restart of `kubefaas local` reuses the folder, and `kubefaas build` makes the image's
dependencies layer from it. pip runs with the user's own configuration (pip.conf,
`PIP_INDEX_URL`, `PIP_FIND_LINKS`, ...), since it is a plain `python -m pip install`.

An install is written to a temporary sibling and renamed into place when it succeeded, so
a folder that exists is complete; a lock file serialises two processes installing the same
set. A failed install raises `InstallFailed` naming the requirement and pip's message, and
is remembered for the life of the `DependencyCache` so that calls do not rerun pip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REQUIREMENTS_FILE = "requirements.txt"
# The lines of pip's output kept in an error message.
PIP_TAIL_LINES = 12
PIP_TIMEOUT_SECONDS = 600.0
_REQUIREMENT_IN_ERROR = re.compile(r"(?:the requirement|No matching distribution found for) (\S+)")


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file: comments and blank lines dropped."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def requirements_key(runtime: str, requirements: str, *, abi: str) -> str:
    """The content address of an installed set: same runtime, ABI and lines -> same key."""
    payload = {"runtime": runtime, "abi": abi, "requirements": requirement_lines(requirements)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class InstallFailed(Exception):
    """pip could not install a function's requirements; the message says which and why."""

    def __init__(self, function: str, requirement: str | None, pip_output: str) -> None:
        self.function = function
        self.requirement = requirement
        self.pip_output = pip_output
        which = f"requirement {requirement!r}" if requirement else "its requirements"
        super().__init__(
            f"function {function}: pip could not install {which} of {REQUIREMENTS_FILE}: "
            f"{pip_output}"
        )


def _failed_requirement(output: str, lines: Sequence[str]) -> str | None:
    found = _REQUIREMENT_IN_ERROR.search(output)
    if found:
        return found[1]
    return lines[0] if len(lines) == 1 else None


# pip ignores a plain-HTTP index that is not on loopback, says so once as a warning, then
# fails with "from versions: none": that warning is the cause, so it leads the message.
_IGNORED_INDEX = "is not a trusted or secure host"


def _pip_message(output: str) -> str:
    lines = output.splitlines()
    errors = [line.strip() for line in lines if line.startswith("ERROR:")]
    tail = errors or [line.strip() for line in lines if line.strip()]
    causes = [line.strip() for line in lines if _IGNORED_INDEX in line][:1]
    return " | ".join(causes + tail[-PIP_TAIL_LINES:]) or "pip failed without output"


@dataclass(frozen=True)
class Installed:
    """An installed set: the folder to put on `sys.path` and whether this call made it."""

    path: Path
    key: str
    fresh: bool


class DependencyCache:
    """Installed requirement sets under `root`, one folder a key (see the module docstring)."""

    def __init__(self, root: Path, *, python: str, abi: str, pip_args: Sequence[str] = ()) -> None:
        self.root = root
        self.python = python
        self.abi = abi
        # Extra pip options, e.g. the target platform of an image (`kubefaas.build`).
        self.pip_args = tuple(pip_args)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failed: dict[str, InstallFailed] = {}

    def path_for(self, runtime: str, requirements: str) -> Path:
        return self.root / requirements_key(runtime, requirements, abi=self.abi)

    def ensure(self, function: str, runtime: str, requirements: str) -> Installed:
        """The folder holding `requirements` installed; pip runs only if it is missing."""
        key = requirements_key(runtime, requirements, abi=self.abi)
        target = self.root / key
        if target.is_dir():
            return Installed(target, key, fresh=False)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock, self._file_lock(key):
            if target.is_dir():
                return Installed(target, key, fresh=False)
            if key in self._failed:
                failed = self._failed[key]
                raise InstallFailed(function, failed.requirement, failed.pip_output)
            try:
                self._install(function, requirements, target)
            except InstallFailed as exc:
                self._failed[key] = exc
                raise
        return Installed(target, key, fresh=True)

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{key}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _install(self, function: str, requirements: str, target: Path) -> None:
        lines = requirement_lines(requirements)
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        listing = staging.with_name(staging.name + ".txt")
        listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = [
            self.python,
            "-m",
            "pip",
            "install",
            "--target",
            str(staging),
            "--disable-pip-version-check",
            "--no-input",
            "--no-warn-script-location",
            *self.pip_args,
            "--requirement",
            str(listing),
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_SECONDS,
                check=False,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise InstallFailed(function, None, f"cannot run pip: {exc}") from exc
        finally:
            listing.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = done.stdout + done.stderr
            raise InstallFailed(
                function, _failed_requirement(output, lines), _pip_message(done.stderr or output)
            )
        staging.rename(target)
