"""Deletes claimed pool pods a gateway left half way (docs/warm-pool.md, "Specialisation
by the gateway").

A claim labels the pod ``kubefaas.io/specialised=pending`` and ``kubefaas.io/claimed-at=<epoch
seconds>`` and, once the pod answered its specialisation, ``specialised=true``. A gateway
that dies in between leaves a pod outside its pool (the ReplicaSet has let it go) that no
gateway routes to. Every gateway with the warm pool on lists such pods now and then and
deletes those claimed longer ago than a claim can take; several gateways doing it at once
only delete the same pod twice, which is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from kubefaas.pool import CLAIMED_AT_LABEL, SPECIALISED_LABEL
from kubefaas_gateway.kube_async import ApiError, Kube, collection_path

log = logging.getLogger("kubefaas.gateway.pool")

SWEEP_INTERVAL_SECONDS = 30.0
# Longer than any claim: the patch, the document's reads and the specialise timeout (10 s).
STALE_AFTER_SECONDS = 60.0
PENDING_SELECTOR = f"{SPECIALISED_LABEL}=pending"


async def sweep_once(
    kube: Kube, namespaces: Sequence[str], *, now: float, stale_after: float = STALE_AFTER_SECONDS
) -> list[str]:
    """Delete pending claimed pods older than `stale_after`; their ``namespace/name``s."""
    deleted: list[str] = []
    scopes: list[str | None] = [*namespaces] or [None]
    for namespace in scopes:
        items, _ = await kube.list(
            collection_path("v1", "pods", namespace), label_selector=PENDING_SELECTOR
        )
        for pod in items:
            metadata = pod.get("metadata") or {}
            claimed = str((metadata.get("labels") or {}).get(CLAIMED_AT_LABEL) or "")
            if not claimed.isdigit() or now - int(claimed) < stale_after:
                continue
            where, name = str(metadata.get("namespace")), str(metadata.get("name"))
            await kube.delete(collection_path("v1", "pods", where, name))
            log.warning("warm pool: deleted pod %s/%s, claimed but never specialised", where, name)
            deleted.append(f"{where}/{name}")
    return deleted


async def run_sweeper(
    kube: Callable[[], Kube | None],
    namespaces: Sequence[str],
    *,
    interval: float = SWEEP_INTERVAL_SECONDS,
) -> None:
    """`sweep_once` at start and every `interval` seconds, until cancelled."""
    while True:
        client = kube()
        if client is not None:
            try:
                await sweep_once(client, namespaces, now=time.time())
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("warm pool: sweeping claimed pods failed: %s", exc)
        await asyncio.sleep(interval)
