"""The autoscaler's feed: what every gateway pod reports on `GET /internal/stats`.

Gateway pods are found through the operator's API door (`kube_sync.Kube`) by the label
selector and namespace of `OperatorConfig`; each Ready pod's stats are read over HTTP,
concurrently, and the figures are combined per function.

How figures from several gateways combine: in-flight, pending and both window averages are
per-gateway shares of one function's load, so they add up (the averages are over the same
windows); the async queue is shared by every gateway, so each reports the same depth and
the largest is taken; the function's idle time is the smallest any gateway reports. Times
cross process boundaries as durations ("idle for 12 s"), never as timestamps, so clock
skew between pods cannot make a function look idle.

A gateway that does not answer within `STATS_TIMEOUT_SECONDS` makes the figures
incomplete (`read_all` says so), and the loop then never scales down on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubefaas import limits
from kubefaas_operator import trigger_status
from kubefaas_operator.kube_sync import Kube, cluster, namespaced
from kubefaas_operator.trigger_status import TriggerReport

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

STATS_PATH = "/internal/stats"
# A gateway that takes longer than this to answer counts as not answering this tick.
STATS_TIMEOUT_SECONDS = 1.0

ListGateways = Callable[[], Awaitable[Sequence[str]]]
ReadStats = Callable[[str], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionStats:
    """One function's figures as one gateway (or the sum of all) reports them."""

    in_flight: int = 0
    pending: int = 0
    stable_concurrency: float = 0.0
    panic_concurrency: float = 0.0
    queued: int = 0
    idle_seconds: float | None = None  # None: no request seen
    triggers: tuple[TriggerReport, ...] = ()  # for status.triggers (trigger_status)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FunctionStats:
        """Parse one entry of `/internal/stats`'s `functions` (camelCase, see routers/stats)."""
        idle = doc.get("idleSeconds")
        return cls(
            in_flight=max(0, int(doc.get("inFlight", 0))),
            pending=max(0, int(doc.get("pending", 0))),
            stable_concurrency=max(0.0, float(doc.get("stableConcurrency", 0.0))),
            panic_concurrency=max(0.0, float(doc.get("panicConcurrency", 0.0))),
            queued=max(0, int(doc.get("queued", 0))),
            idle_seconds=None if idle is None else max(0.0, float(idle)),
            triggers=trigger_status.parse(doc.get("triggers")),
        )


def parse_stats(doc: Mapping[str, Any]) -> dict[str, FunctionStats]:
    """`/internal/stats` body -> figures per function key; bad entries are skipped."""
    functions = doc.get("functions")
    result: dict[str, FunctionStats] = {}
    if not isinstance(functions, Mapping):
        return result
    for key, entry in functions.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            result[str(key)] = FunctionStats.from_json(entry)
        except (TypeError, ValueError):
            log.warning("ignoring malformed stats for %s: %r", key, entry)
    return result


def combine(reports: Sequence[Mapping[str, FunctionStats]]) -> dict[str, FunctionStats]:
    """Sum several gateways' figures per function (see the module docstring for why)."""
    combined: dict[str, FunctionStats] = {}
    for report in reports:
        for key, stats in report.items():
            seen = combined.get(key)
            if seen is None:
                combined[key] = stats
                continue
            idles = [i for i in (seen.idle_seconds, stats.idle_seconds) if i is not None]
            combined[key] = FunctionStats(
                in_flight=seen.in_flight + stats.in_flight,
                pending=seen.pending + stats.pending,
                stable_concurrency=seen.stable_concurrency + stats.stable_concurrency,
                panic_concurrency=seen.panic_concurrency + stats.panic_concurrency,
                queued=max(seen.queued, stats.queued),
                idle_seconds=min(idles) if idles else None,
                triggers=trigger_status.merge(seen.triggers, stats.triggers),
            )
    return combined


async def read_all(
    endpoints: Sequence[str], read_stats: ReadStats
) -> tuple[list[dict[str, FunctionStats]], bool]:
    """Every gateway's figures, read concurrently; `complete` is False if any failed."""

    async def one(endpoint: str) -> dict[str, FunctionStats] | None:
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                return parse_stats(await read_stats(endpoint))
        except Exception as exc:  # a gateway restarting must not stop autoscaling
            log.warning("gateway %s did not report stats: %s", endpoint, exc)
            return None

    results = await asyncio.gather(*(one(e) for e in endpoints))
    reports = [r for r in results if r is not None]
    return reports, len(reports) == len(results)


def gateway_url(pod: Mapping[str, Any]) -> str | None:
    """`http://<pod IP>:<port>` of a Ready gateway pod (as the API returns it), else None.

    The port is the container port named ``http`` (or the first unnamed one), else the
    gateway's default port.
    """
    status = pod.get("status") or {}
    pod_ip = status.get("podIP")
    if not pod_ip or (pod.get("metadata") or {}).get("deletionTimestamp") is not None:
        return None
    conditions = status.get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return None
    port = limits.GATEWAY_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        named = [p for p in container.get("ports") or [] if p.get("name") in (None, "http")]
        if named:
            port = int(named[0]["containerPort"])
            break
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayFeed:
    """The gateways' stats as the autoscaler reads them: pods through `kube`, stats over
    `session` (an `aiohttp.ClientSession`)."""

    kube: Kube
    session: aiohttp.ClientSession | None
    selector: str
    namespace: str | None = None  # None: look in every namespace
    token: str | None = field(default=None, repr=False)  # the gateways' metrics token

    async def list_gateway_endpoints(self) -> list[str]:
        """Base URLs of the ready gateway pods."""
        path = (
            cluster("v1", "pods")
            if self.namespace is None
            else namespaced("v1", "pods", self.namespace)
        )
        pods = await asyncio.to_thread(self.kube.list_all, path, label_selector=self.selector)
        return [url for pod in pods if (url := gateway_url(pod)) is not None]

    async def read_stats(self, endpoint: str) -> Mapping[str, Any]:
        if self.session is None:
            raise RuntimeError("GatewayFeed has no HTTP session to read stats with")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with self.session.get(endpoint + STATS_PATH, headers=headers) as response:
            response.raise_for_status()
            body: Mapping[str, Any] = await response.json()
            return body
