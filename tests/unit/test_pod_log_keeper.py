"""The cluster gateway's log keeper (docs/logs.md, "On a cluster: the logs of pods that
ended"): an ending pod's log is streamed into the log store once; running pods are left
to `kubefaas logs --cluster`. The stream itself needs a kubelet: e2e/test_logs.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from kubefaas_gateway.backends.pod_logs import PodLogKeeper
from kubefaas_gateway.discovery import pod_view


def _pod(name: str, *, terminating: bool) -> dict[str, object]:
    metadata: dict[str, object] = {
        "name": name,
        "namespace": "fns",
        "uid": f"uid-{name}",
        "labels": {"kubefaas.io/function": "hello"},
    }
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": metadata, "status": {"phase": "Running"}}


class Source:
    def __init__(self, logs: dict[str, list[str]]) -> None:
        self.logs = logs
        self.opened: list[tuple[str, str, bool]] = []

    async def pod_log_lines(
        self, namespace: str, pod: str, *, follow: bool, timeout_seconds: float
    ) -> AsyncIterator[str]:
        self.opened.append((namespace, pod, follow))
        if pod not in self.logs:
            raise RuntimeError("404 pods not found")
        for line in self.logs[pod]:
            yield line


async def test_an_ending_pods_log_is_kept_once_and_running_pods_are_not_read() -> None:
    source = Source({"hello-a": ['{"msg": "one"}', '{"msg": "two"}']})
    kept: list[tuple[str, str, list[str]]] = []
    keeper = PodLogKeeper(source, lambda key, pod, lines: kept.append((key, pod, lines)))

    for obj in (_pod("hello-a", terminating=False), _pod("hello-b", terminating=False)):
        view = pod_view(obj)
        assert view is not None
        keeper.pod_changed(view)
    await asyncio.sleep(0)
    assert source.opened == []

    ending = pod_view(_pod("hello-a", terminating=True))
    assert ending is not None
    keeper.pod_changed(ending)
    keeper.pod_changed(ending)  # a later MODIFIED event of the same pod
    gone = pod_view(_pod("hello-gone", terminating=True))
    assert gone is not None
    keeper.pod_changed(gone)  # already deleted: nothing to keep, nothing raised
    for _ in range(5):
        await asyncio.sleep(0)
    await keeper.stop()

    assert source.opened == [("fns", "hello-a", True), ("fns", "hello-gone", True)]
    assert kept == [
        ("fns/hello", "hello-a", ['{"msg": "one"}']),
        ("fns/hello", "hello-a", ['{"msg": "two"}']),
    ]
