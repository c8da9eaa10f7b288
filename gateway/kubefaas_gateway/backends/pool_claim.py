"""Warm pool, the gateway's side: claim a pool pod, specialise it, route to it, retire it
(docs/warm-pool.md, "Specialisation by the gateway" and "Hand-over").

`backends.pool_pods.PoolPods` is what the pool-pod watch (label `kubefaas.pool.POOL_LABEL`)
says: the Ready pool pods per namespace and runtime. `PoolClaimer.maybe_claim(fn)` is
called by the cluster backend for a call to an eligible function with no ready instance,
beside the normal 0 -> 1 activation; every call waiting for that function shares the one
claim:

1. read what the document needs, beside the claim patch: the code (inline, or the user's
   ConfigMap) and the function's version from its Deployment (what its own pods get as
   ``KUBEFAAS_FUNCTION_VERSION``);
2. claim a Ready pool pod of the function's runtime, namespace and size with one JSON patch
   whose first operation `test`s the pool label: it removes the pool label and adds
   ``kubefaas.io/function=<name>``, ``kubefaas.io/specialised=pending`` and
   ``kubefaas.io/claimed-at`` (`backends.pool_sweep` deletes a claim left pending). Of two gateways
   patching one pod the second's `test` fails (422) and it tries another pod. The pod keeps
   ``app.kubernetes.io/component=pool`` for now, so no gateway routes to it and no Service
   selects it before it is a function; its pool ReplicaSet lets it go and makes another;
3. ``POST /_kubefaas/specialize`` with `kubefaas.pool.specialization_document`; on 200
   ``ok`` the pod becomes an instance of the function in `Discovery` at once (the waiting
   calls wake), then a second patch labels it a function pod (``component=function``,
   ``specialised=true``) for the other gateways' watches. Any other answer, or no answer:
   the pod is deleted (it may hold half a function) and the calls wait for the cold start.

Hand-over (`hand_over`): once one of the function's own pods is routed to, its specialised
pods leave routing and are deleted when their in-flight calls are done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from kubefaas import naming
from kubefaas.api import Function
from kubefaas.pool import (
    CLAIMED_AT_LABEL,
    POOL_LABEL,
    SPECIALISED_LABEL,
    ineligible_reason,
    specialization_document,
)
from kubefaas.quantity import mebibytes
from kubefaas_gateway.backends.pool_pods import PoolPod, PoolPods
from kubefaas_gateway.discovery import Discovery
from kubefaas_gateway.kube_async import ApiError, Kube, collection_path

log = logging.getLogger("kubefaas.gateway.pool")

SPECIALIZE_PATH = "/_kubefaas/specialize"
# The handler's import on a pool pod; past this the cold start is likely sooner.
SPECIALIZE_TIMEOUT_SECONDS = 10.0
# A function whose claim found no pod or failed is not tried again for this long.
CLAIM_RETRY_SECONDS = 5.0
RETIRE_POLL_SECONDS = 0.05
PENDING = "pending"
# What a failed claim patch answers: the `test` failed (another gateway was first), the pod
# changed or is gone.
CLAIM_LOST_STATUSES = frozenset({404, 409, 422})


def label_path(key: str) -> str:
    """A JSON pointer to a label (RFC 6901: '/' is written '~1')."""
    return "/metadata/labels/" + key.replace("~", "~0").replace("/", "~1")


@dataclass
class _Claim:
    task: asyncio.Task[None] | None = None
    last: float = -CLAIM_RETRY_SECONDS


class PoolClaimer:
    """Claims, specialises and retires pool pods (see the module docstring).

    `kube` returns the backend's API client; `claimed(pod_object)` puts the specialised pod
    into routing (it is called on the event loop right after the 200)."""

    def __init__(
        self,
        *,
        pods: PoolPods,
        kube: Callable[[], Kube | None],
        claimed: Callable[[dict[str, Any]], None],
    ) -> None:
        self.pods = pods
        self._kube = kube
        self._claimed = claimed
        self._claims: dict[str, _Claim] = {}
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # What happened, for logs, stats and tests.
        self.claims = 0
        self.conflicts = 0
        self.failures = 0
        # Per successful claim: ms to claim, to finish reading the document, to specialise,
        # and from the start until the pod was routed to (bench/pool_claim.py prints them).
        self.timings: list[dict[str, float]] = []

    def why_not(self, fn: Function) -> str | None:
        """Why `fn` cannot use a pool pod now, or None if it can."""
        if fn.spec.runtime is None:
            return "the function brings its own image"
        largest = self.pods.largest(fn.namespace, fn.spec.runtime)
        if largest is None:
            return f"no Ready pool pod of {fn.spec.runtime} in namespace {fn.namespace}"
        return ineligible_reason(fn, pool_memory_mib=largest)

    def maybe_claim(self, fn: Function) -> None:
        """Start the claim for `fn` unless one runs, one was tried lately, or it cannot."""
        claim = self._claims.setdefault(fn.key, _Claim())
        if claim.task is not None and not claim.task.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - claim.last < CLAIM_RETRY_SECONDS:
            return
        claim.last = loop.time()
        reason = self.why_not(fn)
        if reason is not None:
            log.debug("function %s does not use the warm pool: %s", fn.key, reason)
            return
        claim.task = loop.create_task(self._claim(fn), name=f"pool-claim {fn.key}")

    async def stop(self) -> None:
        tasks = [c.task for c in self._claims.values() if c.task is not None]
        tasks += list(self._retiring.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._claims.clear()
        self._retiring.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the claim -----------------------------------------------------------------------

    async def _claim(self, fn: Function) -> None:
        kube = self._kube()
        assert kube is not None
        assert fn.spec.runtime is not None
        started = time.monotonic()
        # The document's reads and the claim patch are independent: one round trip, not two.
        reading = asyncio.ensure_future(self._document(kube, fn))
        try:
            memory = mebibytes(fn.spec.memory)
            for pod in self.pods.candidates(fn.namespace, fn.spec.runtime, memory_mib=memory):
                claimed = await self._take(kube, fn, pod)
                if claimed is None:
                    continue
                took = time.monotonic()
                try:
                    document = await reading
                except (ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    log.warning("warm pool: cannot build the document of %s: %s", fn.key, exc)
                    await self._delete(kube, pod.path, fn)
                    return
                read = time.monotonic()
                if not await self._specialise(fn, pod, document):
                    self.failures += 1
                    await self._delete(kube, pod.path, fn)
                    return  # the calls wait for the cold start
                self.claims += 1
                specialised = time.monotonic()
                self.timings.append(
                    {
                        "claim_ms": (took - started) * 1000,
                        "document_wait_ms": (read - took) * 1000,
                        "specialise_ms": (specialised - read) * 1000,
                        "routed_ms": (specialised - started) * 1000,
                    }
                )
                await self._become_function(kube, fn, pod, claimed)
                log.info(
                    "warm pool: pod %s/%s serves %s after %.0f ms (claim and specialise)",
                    pod.namespace,
                    pod.name,
                    fn.key,
                    (specialised - started) * 1000,
                )
                return
            log.info("warm pool: no pool pod could be claimed for %s", fn.key)
        finally:
            if not reading.done():
                reading.cancel()
            elif not reading.cancelled():
                reading.exception()  # read (and logged above if it mattered)

    async def _document(self, kube: Kube, fn: Function) -> dict[str, Any]:
        code = fn.spec.code
        files: dict[str, str] | None = None
        if code is not None and code.config_map is not None:
            config_map = await kube.get(
                collection_path("v1", "configmaps", fn.namespace, code.config_map.name)
            )
            files = dict(config_map.get("data") or {})
        version = fn.metadata.generation or 1
        try:
            deployment = await kube.get(
                collection_path("apps/v1", "deployments", fn.namespace, fn.name)
            )
            version = _deployment_version(deployment) or version
        except ApiError as exc:
            if not exc.not_found:
                raise
        return specialization_document(fn, version=version, files=files)

    async def _take(self, kube: Kube, fn: Function, pod: PoolPod) -> dict[str, Any] | None:
        """The claim patch; the pod as patched, or None if someone else was first."""
        self.pods.discard(pod.uid)
        operations = [
            {"op": "test", "path": label_path(POOL_LABEL), "value": pod.runtime},
            {"op": "remove", "path": label_path(POOL_LABEL)},
            {"op": "add", "path": label_path(naming.FUNCTION_LABEL), "value": fn.name},
            {"op": "add", "path": label_path(SPECIALISED_LABEL), "value": PENDING},
            {"op": "add", "path": label_path(CLAIMED_AT_LABEL), "value": str(int(time.time()))},
        ]
        try:
            return await kube.json_patch(pod.path, operations)
        except ApiError as exc:
            if exc.status not in CLAIM_LOST_STATUSES:
                log.warning("warm pool: claiming pod %s for %s: %s", pod.name, fn.key, exc)
            self.conflicts += 1
            return None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("warm pool: claiming pod %s for %s: %s", pod.name, fn.key, exc)
            return None

    async def _specialise(self, fn: Function, pod: PoolPod, document: dict[str, Any]) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=SPECIALIZE_TIMEOUT_SECONDS),
            )
        url = URL.build(scheme="http", host=pod.ip, port=pod.port, path=SPECIALIZE_PATH)
        try:
            async with self._session.post(url, json=document) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("warm pool: specialising pod %s for %s: %s", pod.name, fn.key, exc)
            return False
        status = answer.get("status") if isinstance(answer, dict) else None
        if response.status == 200 and status == "ok":
            return True
        log.warning(
            "warm pool: pod %s refused to become %s: %s %s",
            pod.name,
            fn.key,
            response.status,
            answer,
        )
        return False

    async def _become_function(
        self, kube: Kube, fn: Function, pod: PoolPod, claimed: dict[str, Any]
    ) -> dict[str, Any]:
        """Route to the pod now (our waiting calls), then label it for everyone's watch."""
        labels = {
            **(claimed.get("metadata", {}).get("labels") or {}),
            naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT,
            SPECIALISED_LABEL: "true",
        }
        claimed = {**claimed, "metadata": {**claimed["metadata"], "labels": labels}}
        self._claimed(claimed)
        try:
            return await kube.patch(pod.path, {"metadata": {"labels": labels}})
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Only this gateway routes to it; it is retired like any specialised pod.
            log.warning("warm pool: labelling pod %s for %s: %s", pod.name, fn.key, exc)
            return claimed

    async def _delete(self, kube: Kube, path: str, fn: Function) -> None:
        try:
            await kube.delete(path)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("warm pool: deleting pod %s of %s: %s", path, fn.key, exc)

    # -- the hand-over -------------------------------------------------------------------

    def hand_over(
        self, fn: Function, discovery: Discovery, inflight: Callable[[str], int]
    ) -> set[str]:
        """Once one of `fn`'s own pods is routed to, take its specialised pods out of
        routing and delete each when its in-flight calls (`inflight(instance id)`) are done.
        Returns the function keys whose ready set changed."""
        ready = discovery.ready(fn.key)
        if not any(i.specialised for i in ready) or all(i.specialised for i in ready):
            return set()
        changed: set[str] = set()
        for instance in [i for i in ready if i.specialised]:
            changed |= discovery.retire(instance.uid)
            if instance.uid in self._retiring:
                continue
            namespace, name = instance.id.split("/", 1)
            path = collection_path("v1", "pods", namespace, name)
            count = functools.partial(inflight, instance.id)
            task = asyncio.get_running_loop().create_task(
                self._retire(fn, instance.uid, path, count)
            )
            self._retiring[instance.uid] = task
        return changed

    async def _retire(self, fn: Function, uid: str, path: str, inflight: Callable[[], int]) -> None:
        try:
            deadline = time.monotonic() + fn.spec.timeout_seconds + 1
            # The tracker counts calls per instance but signals none: poll it (rare, short).
            while inflight() > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(RETIRE_POLL_SECONDS)
            kube = self._kube()
            if kube is not None:
                await self._delete(kube, path, fn)
                log.info("warm pool: retired the specialised pod %s of %s", path, fn.key)
        finally:
            self._retiring.pop(uid, None)


def _deployment_version(deployment: Mapping[str, Any]) -> int | None:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        for env in container.get("env") or []:
            if env.get("name") == "KUBEFAAS_FUNCTION_VERSION":
                text = str(env.get("value", ""))
                return int(text) if text.isdigit() else None
    return None


__all__ = ["PoolClaimer", "PoolPods"]
