"""One local function instance as a process: how it is started, watched and stopped.

An instance is `python -m kubefaas_runtime` on a free loopback port in its own session
(process group), so stopping it reaches anything its handler spawned, and it asks the
kernel to SIGKILL it when the gateway dies (`prctl(PR_SET_PDEATHSIG)`). Its environment is
the runtime launch contract (`kubefaas.contract`); its output is relayed to the gateway
log with the last lines kept to explain an unexpected exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from kubefaas.api import Function
from kubefaas.contract import runtime_environment, secret_dir_variable
from kubefaas_gateway.backends.base import Instance
from kubefaas_gateway.errors import NoCapacity
from kubefaas_gateway.secrets import FolderSecrets, SecretData
from kubefaas_gateway.settings import Settings

log = logging.getLogger("kubefaas.gateway.local")
function_log = logging.getLogger("kubefaas.function")

LOOPBACK = "127.0.0.1"
SecretLookup = Callable[[str, str], SecretData | None]
"""One Secret's `{key: bytes}` by namespace and name, or None (blocking)."""
# Lines of an instance's output kept to explain why it died.
OUTPUT_TAIL_LINES = 30
PR_SET_PDEATHSIG = 1
PROBE_TIMEOUT_SECONDS = 1.0
# The local backend stops routing to an instance before signalling it, so the runtime
# need not keep accepting connections after SIGTERM (its pod default covers endpoint
# propagation, which has no local equivalent).
LOCAL_DRAIN_GRACE_SECONDS = "0"


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):  # not Linux: stop() still reaps every instance
        return None
    return prctl


_PRCTL = _load_prctl()


def child_setup(
    gateway_pid: int,
    user: tuple[int, int] | None = None,
    file_size_limit: int | None = None,
) -> Callable[[], None]:
    """What the child runs between fork and exec: own process group, the largest file it
    may write (`RLIMIT_FSIZE`, local_tmp.py), the user `(uid, gid)` if given (before the
    death signal: a change of user clears it), die with the gateway.
    Done here because uvloop's subprocess_exec has no `user=`."""

    def setup() -> None:
        os.setsid()
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        # The gateway died between fork and prctl: the signal will never come.
        if os.getppid() != gateway_pid:
            os._exit(1)

    return setup


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass(eq=False)
class LocalInstance(Instance):
    """An instance plus the process that serves it."""

    tmp_dir: Path = Path()
    process: asyncio.subprocess.Process | None = None
    output_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=OUTPUT_TAIL_LINES)
    )
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def instance_environment(
    fn: Function,
    *,
    port: int,
    code_dir: Path,
    tmp: Path,
    instance_id: str = "",
    deps_dir: Path | None = None,
    secrets_dir: Path | None = None,
    read_secret: SecretLookup | None = None,
    mounts_dir: Path | None = None,
) -> dict[str, str]:
    """The runtime launch contract; the gateway's own KUBEFAAS_* settings (the admin
    token among them) are not passed on, and user variables cannot override it.
    `env[].valueFrom.secretKeyRef` and `spec.secrets` are read with `read_secret` (else
    from `secrets_dir`, `<ns>/<name>/<key>`); each mount is written under `mounts_dir`
    (else `tmp`) and its `KUBEFAAS_SECRET_DIR_<NAME>` names that folder. A missing Secret
    or key that is not optional fails the start, as a pod would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEFAAS_")}
    if read_secret is None:
        read_secret = FolderSecrets(secrets_dir).read if secrets_dir is not None else None
    where = f"{secrets_dir or 'the secrets folder (unset)'}/{fn.namespace}"
    for var in fn.spec.env:
        if var.value_from is None:
            env[var.name] = var.value
            continue
        ref = var.value_from.secret_key_ref
        data = read_secret(fn.namespace, ref.name) if read_secret is not None else None
        value = (data or {}).get(ref.key)
        if value is None:
            if ref.optional:
                continue
            raise NoCapacity(
                f"function {fn.key}: env {var.name} needs key {ref.key!r} of Secret "
                f"{ref.name!r}, not found in the Secret manifests nor {where}/{ref.name}/"
            )
        env[var.name] = value.decode("utf-8", "replace")
    mounted = {}
    for mount in fn.spec.secrets:
        data = read_secret(fn.namespace, mount.name) if read_secret is not None else None
        if data is None:
            raise NoCapacity(
                f"function {fn.key}: spec.secrets mounts Secret {mount.name!r}, not found "
                f"in the Secret manifests nor {where}/{mount.name}/"
            )
        mounted[secret_dir_variable(mount.name)] = str(
            write_secret_folder((mounts_dir or tmp) / "secrets" / mount.name, data)
        )
    env.update(
        runtime_environment(
            fn,
            port=port,
            code_dir=str(code_dir),
            tmp_dir=str(tmp),
            version=fn.metadata.generation or 1,
        )
    )
    env.update(mounted)
    env.update(
        {
            "HOST": LOOPBACK,
            "KUBEFAAS_DRAIN_GRACE_SECONDS": LOCAL_DRAIN_GRACE_SECONDS,
            "KUBEFAAS_INSTANCE_ID": instance_id,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if deps_dir is not None:
        env["KUBEFAAS_DEPS_DIR"] = str(deps_dir)
    return env


def write_secret_folder(folder: Path, data: Mapping[str, bytes]) -> Path:
    """One file per key, read-only and the owner's only, as a mounted Secret volume holds
    them (docs/security.md, "Mounted Secrets in local mode"). The folder stays writable
    by its owner so the instance's scratch folder can be removed with it."""
    folder.mkdir(parents=True, mode=0o700)
    for key, value in data.items():
        target = folder / key
        target.write_bytes(value)
        target.chmod(0o400)
    return folder


async def wait_healthy(
    instance: LocalInstance,
    pump: asyncio.Task[None],
    *,
    session: aiohttp.ClientSession,
    settings: Settings,
) -> None:
    """Probe `instance` until it answers 200; raises `NoCapacity` if it exits or does not
    pass within `instance_start_timeout_seconds`."""
    assert instance.process is not None
    url = f"{instance.base_url}/healthz"
    give_up = time.monotonic() + settings.instance_start_timeout_seconds
    interval = settings.instance_probe_interval_seconds
    while True:
        if instance.process.returncode is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), PROBE_TIMEOUT_SECONDS)
            last = instance.output_tail[-1] if instance.output_tail else "no output"
            raise NoCapacity(
                f"the instance of {instance.function_key} exited with code "
                f"{instance.process.returncode} while starting: {last}"
            )
        try:
            async with session.get(url) as response:
                body = await response.read()
                if response.status == 200:
                    if b"init-failed" in body:
                        log.warning(
                            "instance %s of %s: the handler failed to import; "
                            "invocations will answer with its error",
                            instance.id,
                            instance.function_key,
                        )
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > give_up:
            raise NoCapacity(
                f"the instance of {instance.function_key} did not pass its health check "
                f"within {settings.instance_start_timeout_seconds:g}s"
            )
        await asyncio.sleep(interval)


OutputSink = Callable[[str, str, list[str]], None]
"""`(function key, instance id, lines)`: where captured instance output goes besides the
gateway log (the function log store, docs/logs.md)."""


async def pump_output(instance: LocalInstance, sink: OutputSink | None = None) -> None:
    """Relay the instance's output to the gateway log, keeping the last lines."""
    assert instance.process is not None
    assert instance.process.stdout is not None
    stream = instance.process.stdout
    prefix = f"[{instance.function_key} {instance.id}]"
    pending = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        texts = [raw.decode("utf-8", "replace").rstrip("\r") for raw in lines]
        for line in texts:
            instance.output_tail.append(line)
            function_log.info("%s %s", prefix, line)
        if sink is not None and texts:
            sink(instance.function_key, instance.id, texts)
    if pending:
        line = pending.decode("utf-8", "replace")
        instance.output_tail.append(line)
        function_log.info("%s %s", prefix, line)
        if sink is not None:
            sink(instance.function_key, instance.id, [line])
