"""Which user local instances run as (docs/security.md, "Local mode isolation").

A process of the same user can read the gateway's `/proc/<pid>/environ` (its admin token,
its metrics token, every secret of its environment). So when the gateway runs as root,
instances run as an unprivileged user, `KUBEFAAS_LOCAL_RUN_AS` (default `auto`: `nobody`):
they can no longer read the gateway's environment or memory, nor the queue file (0600).

`auto` first checks, once, that this user can run the runtime's interpreter and read the
code and dependency folders (a probe process as that user); when it cannot (an
interpreter under root's 0700 home, a state folder inside a private one) the gateway logs
a warning saying why and instances run as root as before. An explicit user name must work:
its failure stops the gateway. `none` (or a gateway that is not root) keeps the gateway's
user.

Each function then gets a user of its own (`FunctionUsers`): uid = gid =
`FUNCTION_UID_BASE` + n, allocated in the order functions first start, with no passwd
entry and no supplementary groups. Its scratch folders are its own (0700) and its inline or
ConfigMap code folder is root's with its group (0750), so one function cannot read another's
code, `/tmp` or `/proc/<pid>/environ`. These ids have exactly the rights of the probed
user on everything else (neither is in any group), so the probe above holds for them.
A `code.path` folder is the user's own and is left as it is.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kubefaas.gateway.local")

AUTO_USER = "nobody"
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str


def _probe(user: pwd.struct_passwd, python: str, folders: list[Path]) -> str | None:
    """Why `user` cannot run `python` over `folders`, or None when it can."""
    check = "import os, sys\nfor d in sys.argv[1:]:\n    os.listdir(d)\n"
    try:
        done = subprocess.run(
            [python, "-c", check, *map(str, folders)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            cwd="/",
            env={"PATH": os.defpath},
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python}: {exc}"
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {done.returncode}"
    return None


def resolve_run_as(
    setting: str, *, python: str, folders: list[Path], readable: list[Path]
) -> RunAs | None:
    """The user instances run as, or None for the gateway's own (see the module docstring).
    `folders` (the gateway's own, existing) are made readable by others first; `readable`
    (the user's code folders) are only checked."""
    if setting == "none" or os.geteuid() != 0:
        return None
    name = AUTO_USER if setting == "auto" else setting
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        if setting == "auto":
            log.warning("no user %r: local instances run as root", name)
            return None
        raise ValueError(f"KUBEFAAS_LOCAL_RUN_AS={setting!r}: no such user") from None
    for folder in folders:
        folder.chmod(0o755)
    reason = _probe(user, python, [*folders, *readable])
    if reason is not None:
        if setting == "auto":
            log.warning(
                "local instances run as root, not %s, who cannot use %s or the state "
                "folders: %s; they can read the gateway's environment",
                name,
                python,
                reason,
            )
            return None
        raise ValueError(f"KUBEFAAS_LOCAL_RUN_AS={setting!r} cannot run {python}: {reason}")
    return RunAs(uid=user.pw_uid, gid=user.pw_gid, name=name)


# Above the usual ranges of login users (1000-60000) and of /etc/subuid (100000-165535).
FUNCTION_UID_BASE = 200_000
FUNCTION_UIDS_MAX = 65_536


class FunctionUsers:
    """One unprivileged uid/gid per function key (see the module docstring)."""

    def __init__(self, base: RunAs | None) -> None:
        self._base = base
        self._ids: dict[str, RunAs] = {}

    def for_function(self, key: str) -> RunAs | None:
        """The user `key`'s instances run as; None: the gateway's own (not root)."""
        if self._base is None:
            return None
        found = self._ids.get(key)
        if found is None:
            if len(self._ids) >= FUNCTION_UIDS_MAX:
                return self._base  # more functions than ids: they share the probed user
            n = FUNCTION_UID_BASE + len(self._ids)
            found = self._ids[key] = RunAs(uid=n, gid=n, name=f"{self._base.name}+{key}")
        return found

    def own_code(self, user: RunAs | None, folder: Path) -> None:
        """Make the code `folder` readable by `user` only (root's, with its group)."""
        if user is None or user == self._base:
            return
        os.chown(folder, 0, user.gid)
        folder.chmod(0o750)
