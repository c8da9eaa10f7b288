"""The log keeper of a cluster gateway: what an ending function pod printed, kept.

See docs/logs.md ("On a cluster") and docs/architecture.md, "Logs of ended pods".
The API server serves a pod's log only while the pod object exists; once a scale-down
deletes it, the kubelet removes the container and its log files, and no API can read them
again. So when the gateway's pod watch first sees a function pod with a
`deletionTimestamp` (it is about to stop: scale-down, rollout, eviction), the keeper opens
that pod's log with `follow=true`: the stream carries the whole log from the container's
start and ends when the container exits, drain lines included. Every line goes to the
gateway's function log store (`output_sink`, the same store as local mode), which
`GET /system/logs` serves and `kubefaas logs --cluster --gateway URL` merges with the live
pods' logs.

What it cannot keep: a pod deleted with no grace period (`--force --grace-period=0`), or
one whose node is gone, may vanish before the stream opens; lines of a pod that ended while
no gateway was running; a container's log the kubelet already rotated away. Each gateway
replica keeps its own copy (every replica watches every function pod).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from kubefaas_gateway.discovery import PodView

log = logging.getLogger("kubefaas.gateway.pod_logs")

# A pod gets terminationGracePeriodSeconds (the function's drain) to stop; past this the
# stream is abandoned whatever it still carries.
STREAM_TIMEOUT_SECONDS = 600.0
# Pods whose stream was opened, remembered so a MODIFIED event does not open it again.
REMEMBERED_PODS = 4096

OutputSink = Callable[[str, str, list[str]], None]


class PodLogSource(Protocol):
    def pod_log_lines(
        self, namespace: str, pod: str, *, follow: bool, timeout_seconds: float
    ) -> AsyncIterator[str]: ...


class PodLogKeeper:
    """Streams each ending function pod's log into `sink` (function key, pod, lines)."""

    def __init__(self, source: PodLogSource, sink: OutputSink) -> None:
        self._source = source
        self._sink = sink
        self._seen: dict[str, None] = {}  # insertion-ordered, bounded
        self._tasks: set[asyncio.Task[None]] = set()

    def pod_changed(self, view: PodView) -> None:
        """Called for every pod event; starts the capture once, when the pod ends."""
        if not view.terminating or view.uid in self._seen:
            return
        self._seen[view.uid] = None
        while len(self._seen) > REMEMBERED_PODS:
            del self._seen[next(iter(self._seen))]
        task = asyncio.get_running_loop().create_task(self._keep(view))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self, view: PodView) -> None:
        key = f"{view.namespace}/{view.function}"
        kept = 0
        try:
            async for line in self._source.pod_log_lines(
                view.namespace, view.name, follow=True, timeout_seconds=STREAM_TIMEOUT_SECONDS
            ):
                self._sink(key, view.name, [line])
                kept += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # gone already, never started, API unreachable
            log.info("kept %d log line(s) of ending pod %s: %s", kept, view.name, exc)
            return
        log.debug("kept %d log line(s) of ending pod %s/%s", kept, view.namespace, view.name)

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
