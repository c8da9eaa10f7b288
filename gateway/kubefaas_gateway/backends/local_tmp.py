"""`spec.tmpSize` in local mode (docs/security.md, "Local mode isolation").

In a cluster `/tmp` is an emptyDir with `sizeLimit` = `tmpSize`, and the kubelet evicts a
pod past it. A local instance's `/tmp` is its scratch folder (`TMPDIR`), and two limits
stand in for the kubelet's, both for any user the gateway runs as and without mount
privileges:

- `RLIMIT_FSIZE` = tmpSize, set between fork and exec (`local_process.child_setup`): no
  single file the instance writes grows past tmpSize; the write fails at once with
  `EFBIG` ("File too large"), which the handler sees as an `OSError` (Python ignores
  `SIGXFSZ`).
- A watchdog measures the folder's disk use (allocated blocks, every
  `KUBEFAAS_LOCAL_TMP_CHECK_INTERVAL_SECONDS`); past tmpSize it logs an error naming the
  function, the use and the limit, counts it in
  `kubefaas_local_tmp_size_exceeded_total{namespace, function}`, and recycles the
  instance (SIGKILL, as an eviction):
  calls in flight on it answer `502 TmpSizeExceeded` with that message, the next call
  starts a fresh instance.

Not enforced: what is written between two checks can overshoot (by at most tmpSize per
file), files deleted while still open are not counted, and `RLIMIT_FSIZE` also bounds
files the instance writes outside its folder (a pod has no other writable path).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter

from kubefaas.api import Function
from kubefaas.quantity import parse_quantity
from kubefaas_gateway.backends.local_process import LocalInstance

log = logging.getLogger("kubefaas.gateway.local")

TMP_SIZE_EXCEEDED: Final = "TmpSizeExceeded"
MIB: Final = 1024 * 1024


class TmpSizeCounter:
    """`kubefaas_local_tmp_size_exceeded_total`, once registered on the app's metrics."""

    def __init__(self) -> None:
        self._counter: Counter | None = None

    def register(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "kubefaas_local_tmp_size_exceeded",
            "Local instances recycled because their /tmp grew past spec.tmpSize.",
            ["namespace", "function"],
            registry=registry,
        )

    def inc(self, fn: Function) -> None:
        if self._counter is not None:
            self._counter.labels(fn.namespace, fn.name).inc()


def tmp_size_bytes(fn: Function) -> int:
    return parse_quantity(fn.spec.tmp_size)


def disk_usage(folder: Path) -> int:
    """Bytes allocated to the files and folders under `folder` (like `du`); entries that
    vanish while it walks are skipped."""
    total = 0
    pending = [str(folder)]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
        except OSError:
            continue
    return total


async def watch_tmp(
    instance: LocalInstance,
    fn: Function,
    *,
    interval: float,
    recycle: Callable[[], None],
    counter: TmpSizeCounter | None = None,
) -> None:
    """Recycle `instance` once its scratch folder holds more than `fn`'s tmpSize."""
    limit = tmp_size_bytes(fn)
    process = instance.process
    assert process is not None
    while process.returncode is None and not instance.stopping:
        await asyncio.sleep(interval)
        used = await asyncio.to_thread(disk_usage, instance.tmp_dir)
        if used <= limit or instance.stopping:
            continue
        message = (
            f"the instance wrote {used / MIB:.1f} MiB to its /tmp, over spec.tmpSize "
            f"{fn.spec.tmp_size} ({limit / MIB:.0f} MiB); it was recycled"
        )
        log.error("function %s: instance %s: %s", fn.key, instance.id, message)
        instance.lost = (TMP_SIZE_EXCEEDED, message)
        if counter is not None:
            counter.inc(fn)
        recycle()
        return
