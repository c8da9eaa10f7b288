"""Function instances as local runtime processes: `kubefaas local`, no cluster.

Each instance is `python -m kubefaas_runtime` (the same runtime the pods run) listening on
a free loopback port, with the function's code written under
`<state_dir>/local/code/<namespace>/<name>/` and a private scratch folder
`<state_dir>/local/instances/<namespace>.<name>.<id>/` as its TMPDIR, removed with it.

No instance may outlive the gateway. Each one runs in its own session (process group), so
stopping it reaches anything its handler spawned, and asks the kernel to SIGKILL it when
the gateway dies (`prctl(PR_SET_PDEATHSIG)`), which covers a gateway that is itself
SIGKILLed and never runs its shutdown. Scratch folders left by such a crash are removed at
the next start.

A starting instance is probed on `/healthz` directly (the runtime answers 200 only after
the handler's import finished), so a cold start costs process start + init + one probe
interval. An instance that exits on its own is noticed at once (its output is piped and
its exit awaited), dropped from routing, and its last lines of output are logged.

This module keeps the pools (routing, activation, `scale`); one instance's process
(launch environment, health wait, output relay, signals) is `local_process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kubefaas.api import Function
from kubefaas.deps import DependencyCache
from kubefaas_gateway.backends.base import Acquired, Instance, least_inflight
from kubefaas_gateway.backends.local_code import (
    ensure_dependencies,
    local_dependency_cache,
    write_code,
)
from kubefaas_gateway.backends.local_process import (
    LOOPBACK,
    PROBE_TIMEOUT_SECONDS,
    LocalInstance,
    OutputSink,
    child_setup,
    free_port,
    instance_environment,
    pump_output,
    signal_group,
    wait_healthy,
)
from kubefaas_gateway.backends.local_tmp import TmpSizeCounter, tmp_size_bytes, watch_tmp
from kubefaas_gateway.backends.local_user import FunctionUsers, RunAs, resolve_run_as
from kubefaas_gateway.errors import InvocationTimeout, NoCapacity
from kubefaas_gateway.secrets import LocalSecrets
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway.local")

ConfigMaps = Mapping[tuple[str, str], Mapping[str, str]]


@dataclass(eq=False)
class _Pool:
    """The instances of one function."""

    fn: Function
    members: list[LocalInstance] = field(default_factory=list)  # starting and ready
    ready: list[LocalInstance] = field(default_factory=list)
    starting: set[asyncio.Task[LocalInstance]] = field(default_factory=set)
    code_dir: Path | None = None
    deps_dir: Path | None = None  # Path() once known to have no requirements


class LocalBackend:
    """Runs instances as child processes of the gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        config_maps: ConfigMaps | None = None,
        code_folders: Mapping[str, Path] | None = None,
        deps: DependencyCache | None = None,
        secrets: LocalSecrets | None = None,
    ) -> None:
        self._settings = settings
        # The same reader as GatewayState.secrets in local mode.
        self._read_secret = (secrets or LocalSecrets({}, settings.secrets_dir)).read
        self._config_maps: ConfigMaps = config_maps or {}
        self._code_folders: Mapping[str, Path] = code_folders or {}
        self._deps = deps or local_dependency_cache(settings.state_dir, settings.runtime_command[0])
        root = settings.state_dir.resolve() / "local"
        self._code_root = root / "code"
        self._instances_root = root / "instances"
        self._run_as: RunAs | None = None  # docs/security.md, "Local mode isolation"
        self._users = FunctionUsers(None)
        self._pools: dict[str, _Pool] = {}
        self._tracker = Tracker()
        self._probe_session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._turns = itertools.count()
        self.tmp_size_exceeded = TmpSizeCounter()  # registered by local_mode on /metrics
        self.output_sink: OutputSink | None = None
        """Where instance output goes besides the gateway log (set by `observe.attach`)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, tracker: Tracker) -> None:
        self._tracker = tracker
        self._stopping = False
        # Scratch folders of instances killed with a previous gateway.
        shutil.rmtree(self._instances_root, ignore_errors=True)
        self._instances_root.mkdir(parents=True, exist_ok=True)
        self._code_root.mkdir(parents=True, exist_ok=True)
        self._deps.root.mkdir(parents=True, exist_ok=True)
        state = self._settings.state_dir.resolve()
        self._run_as = await asyncio.to_thread(
            resolve_run_as,
            self._settings.local_run_as,
            python=self._settings.runtime_command[0],
            folders=[
                state,
                state / "local",
                self._code_root,
                self._instances_root,
                self._deps.root,
            ],
            readable=list(self._code_folders.values()),
        )
        self._users = FunctionUsers(self._run_as)
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS),
        )

    async def stop(self) -> None:
        self._stopping = True
        for pool in self._pools.values():
            for start in pool.starting:
                start.cancel()
        members = [(pool, m) for pool in self._pools.values() for m in pool.members]
        await asyncio.gather(
            *(self._stop_instance(pool, m) for pool, m in members), return_exceptions=True
        )
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._probe_session is not None:
            await self._probe_session.close()
            self._probe_session = None

    # -- the invoke path -------------------------------------------------------------------

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        pool = self._pools.get(fn.key)
        if pool is not None and pool.ready and pool.fn is fn:
            return Acquired(self._least_loaded(pool.ready), False)
        return await self._activate(self._pool(fn), deadline)

    def _least_loaded(self, ready: list[LocalInstance]) -> LocalInstance:
        return least_inflight(ready, self._tracker.instance_inflight, next(self._turns))

    async def _activate(self, pool: _Pool, deadline: float) -> Acquired:
        """Start an instance (unless one is starting) and wait for the first ready one."""
        key = pool.fn.key
        while True:
            if pool.ready:
                return Acquired(self._least_loaded(pool.ready), True)
            if self._stopping:
                raise NoCapacity("the gateway is shutting down")
            if not pool.starting:
                self._launch(pool)
            remaining = deadline - time.time()
            if remaining <= 0:
                raise InvocationTimeout(f"no instance of function {key} became ready in time")
            done, _ = await asyncio.wait(
                set(pool.starting), timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise InvocationTimeout(
                    f"no instance of function {key} became ready within its timeout "
                    f"({pool.fn.spec.timeout_seconds}s)"
                )
            if pool.ready or pool.starting:
                continue  # ready now, or another start (the autoscaler's) may still succeed
            for task in done:
                if task.cancelled():
                    raise NoCapacity("the gateway is shutting down")
                error = task.exception()
                if error is not None:
                    raise error if isinstance(error, NoCapacity) else NoCapacity(str(error))

    def evict(self, instance: Instance) -> None:
        pool = self._pools.get(instance.function_key)
        if pool is None or not isinstance(instance, LocalInstance):
            return
        if instance in pool.members and not instance.stopping:
            self._retire(pool, instance)
            self._in_background(self._stop_instance(pool, instance))

    # -- what the idle loop and the autoscaler use -----------------------------------------

    def instances(self, fn: Function) -> list[Instance]:
        pool = self._pools.get(fn.key)
        if pool is None:
            return []
        return [member for member in pool.members if not member.stopping]

    def ready_count(self, fn: Function) -> int:
        pool = self._pools.get(fn.key)
        return len(pool.ready) if pool is not None else 0

    async def scale(self, fn: Function, replicas: int) -> None:
        """Launch or stop instances to reach `replicas`; stopping waits for the exits.

        Surplus instances leave routing at once (no await in between), least busy first;
        each finishes its in-flight work on SIGTERM before it exits.
        """
        pool = self._pool(fn)
        current = len(pool.ready) + len(pool.starting)
        if replicas > current:
            for _ in range(replicas - current):
                self._launch(pool)
            return
        surplus = current - replicas
        if surplus <= 0:
            return
        for task in list(pool.starting)[:surplus]:
            task.cancel()
            surplus -= 1
        inflight = self._tracker.instance_inflight
        victims = sorted(pool.ready, key=lambda instance: inflight(instance.id))[:surplus]
        for victim in victims:
            self._retire(pool, victim)
        await asyncio.gather(*(self._stop_instance(pool, v) for v in victims))

    # -- pools and code ----------------------------------------------------------------------

    def _pool(self, fn: Function) -> _Pool:
        pool = self._pools.get(fn.key)
        if pool is None:
            pool = self._pools[fn.key] = _Pool(fn=fn)
        elif pool.fn is not fn:
            if pool.fn.spec != fn.spec:
                # Redefined: new instances run the new code; old ones drain and go.
                for instance in list(pool.ready):
                    self._retire(pool, instance)
                    self._in_background(self._stop_instance(pool, instance))
                pool.code_dir = None
                pool.deps_dir = None
            pool.fn = fn
        return pool

    def _write_code(self, pool: _Pool) -> Path:
        if pool.code_dir is None:
            pool.code_dir = write_code(
                pool.fn,
                code_root=self._code_root,
                config_maps=self._config_maps,
                code_folders=self._code_folders,
            )
        return pool.code_dir

    async def _dependencies(self, pool: _Pool, code_dir: Path) -> Path | None:
        """Installed requirements (docs/architecture.md, "Packaging"); pip runs only once
        per distinct set, normally before serving (`serve_local`), never per instance."""
        if pool.deps_dir is None:
            pool.deps_dir = (
                await asyncio.to_thread(ensure_dependencies, pool.fn, code_dir, self._deps)
                or Path()
            )
        return pool.deps_dir if pool.deps_dir != Path() else None

    # -- one instance's life -----------------------------------------------------------------

    def _launch(self, pool: _Pool) -> None:
        task = asyncio.get_running_loop().create_task(self._start_instance(pool))
        pool.starting.add(task)

        def started(done: asyncio.Task[LocalInstance]) -> None:
            pool.starting.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("could not start an instance of %s: %s", pool.fn.key, done.exception())

        task.add_done_callback(started)

    async def _start_instance(self, pool: _Pool) -> LocalInstance:
        fn = pool.fn
        began = time.monotonic()
        code_dir = self._write_code(pool)
        deps_dir = await self._dependencies(pool, code_dir)
        port = free_port()
        instance = LocalInstance(
            id=secrets.token_hex(4), function_key=fn.key, host=LOOPBACK, port=port
        )
        instance.tmp_dir = self._instances_root / f"{fn.namespace}.{fn.name}.{instance.id}"
        instance.tmp_dir.mkdir(parents=True, mode=0o700)
        run_as = self._users.for_function(fn.key)
        if run_as is not None:
            os.chown(instance.tmp_dir, run_as.uid, run_as.gid)
            if fn.spec.code is not None and fn.spec.code.path is None:
                self._users.own_code(run_as, code_dir)
        command = self._settings.runtime_command
        try:
            env = instance_environment(
                fn,
                port=port,
                code_dir=code_dir,
                tmp=instance.tmp_dir,
                instance_id=instance.id,
                deps_dir=deps_dir,
                secrets_dir=self._settings.secrets_dir,
                read_secret=self._read_secret,
            )
            if run_as is not None:  # the mounted Secrets' copies are the instance's to read
                for path in instance.tmp_dir.rglob("*"):
                    os.chown(path, run_as.uid, run_as.gid)
            instance.process = await asyncio.create_subprocess_exec(
                *command,
                cwd=code_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=child_setup(
                    os.getpid(),
                    None if run_as is None else (run_as.uid, run_as.gid),
                    file_size_limit=tmp_size_bytes(fn),
                ),
            )
        except NoCapacity:  # a secret it needs is missing
            shutil.rmtree(instance.tmp_dir, ignore_errors=True)
            raise
        except OSError as exc:
            shutil.rmtree(instance.tmp_dir, ignore_errors=True)
            raise NoCapacity(f"cannot run the runtime {command[0]!r}: {exc}") from exc
        pool.members.append(instance)
        pump = asyncio.get_running_loop().create_task(pump_output(instance, self.output_sink))
        instance.tasks = [pump]
        instance.tasks.append(
            asyncio.get_running_loop().create_task(self._watch(pool, instance, pump))
        )
        try:
            assert self._probe_session is not None
            await wait_healthy(instance, pump, session=self._probe_session, settings=self._settings)
        except BaseException:
            instance.stopping = True
            signal_group(instance.process.pid, signal.SIGKILL)
            raise
        instance.ready = True
        instance.ready_at = time.monotonic()
        pool.ready.append(instance)
        instance.tasks.append(  # spec.tmpSize (docs/security.md, "Local mode isolation")
            asyncio.get_running_loop().create_task(
                watch_tmp(
                    instance,
                    fn,
                    interval=self._settings.local_tmp_check_interval_seconds,
                    recycle=lambda: self._kill(pool, instance),
                    counter=self.tmp_size_exceeded,
                )
            )
        )
        log.info(
            "instance %s of %s ready on port %d after %.0f ms",
            instance.id,
            fn.key,
            port,
            (instance.ready_at - began) * 1000,
        )
        return instance

    async def _watch(self, pool: _Pool, instance: LocalInstance, pump: asyncio.Task[None]) -> None:
        """Wait for the process to exit, however that happens, and clean up after it."""
        assert instance.process is not None
        try:
            code = await instance.process.wait()
            # Whatever the handler left running in the instance's process group goes too.
            signal_group(instance.process.pid, signal.SIGKILL)
            unexpected = not instance.stopping
            self._retire(pool, instance)
            with contextlib.suppress(ValueError):
                pool.members.remove(instance)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), PROBE_TIMEOUT_SECONDS)
            if unexpected:
                log.warning(
                    "instance %s of %s exited with code %s; its last output:\n%s",
                    instance.id,
                    instance.function_key,
                    code,
                    "\n".join(instance.output_tail) or "(none)",
                )
            await asyncio.to_thread(shutil.rmtree, instance.tmp_dir, True)
        finally:
            instance.exited.set()

    def _retire(self, pool: _Pool, instance: LocalInstance) -> None:
        """Stop routing to `instance` now (synchronously: no request can pick it after)."""
        instance.stopping = True
        instance.ready = False
        with contextlib.suppress(ValueError):
            pool.ready.remove(instance)

    def _kill(self, pool: _Pool, instance: LocalInstance) -> None:
        """End `instance` now, as an eviction; `_watch` cleans up after it."""
        self._retire(pool, instance)
        if instance.process is not None:
            signal_group(instance.process.pid, signal.SIGKILL)

    async def _stop_instance(self, pool: _Pool, instance: LocalInstance) -> None:
        """SIGTERM the instance's group, SIGKILL it after the grace, wait for cleanup."""
        self._retire(pool, instance)
        process = instance.process
        if process is None:
            return
        if process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(
                    asyncio.shield(instance.exited.wait()),
                    self._settings.instance_stop_grace_seconds,
                )
            except TimeoutError:
                log.warning(
                    "instance %s of %s ignored SIGTERM for %gs; killing it",
                    instance.id,
                    instance.function_key,
                    self._settings.instance_stop_grace_seconds,
                )
                signal_group(process.pid, signal.SIGKILL)
        await instance.exited.wait()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
