"""One list+watch of the cluster backend, kept running (docs/architecture.md, "Gateway").

`run_watch` lists first, then watches from the list's resourceVersion with bookmarks; when
the API server answers 410 Gone (the version is too old) it lists again and reconciles, and
on any other failure it reconnects with capped exponential backoff. The first list
resolves `first_list`, so the backend's `start` returns once it knows what exists; a
refusal that retrying cannot fix (no permission, no such resource) fails it instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubefaas.objects import object_key
from kubefaas_gateway.backends.activation import FORBIDDEN_STATUSES
from kubefaas_gateway.kube_async import ApiError, Backoff, Kube, status_error

log = logging.getLogger("kubefaas.gateway.kubernetes")

# Server-side watch timeouts are spread over [min, 2 x min) like client-go's reflector, so
# many gateways do not all reconnect at the same moment.
WATCH_TIMEOUT_MIN_SECONDS = 300


@dataclass(frozen=True)
class Source:
    """One list+watch: what it reads and where its results go."""

    what: str
    path: str
    namespace: str | None
    label_selector: str | None
    resync: Callable[[list[dict[str, Any]]], None]
    event: Callable[[str, dict[str, Any]], None]


async def run_watch(kube: Kube, source: Source, first_list: asyncio.Future[None]) -> None:
    """List, then watch from the list's version, forever (see the module docstring)."""
    backoff = Backoff()
    version: str | None = None
    where = source.namespace or "all namespaces"
    while True:
        try:
            if version is None:
                items, version = await kube.list(source.path, label_selector=source.label_selector)
                source.resync(items)
                if not first_list.done():
                    first_list.set_result(None)
            timeout = random.randint(WATCH_TIMEOUT_MIN_SECONDS, 2 * WATCH_TIMEOUT_MIN_SECONDS)
            async for event in kube.watch(
                source.path,
                resource_version=version,
                timeout_seconds=timeout,
                label_selector=source.label_selector,
            ):
                kind = str(event.get("type"))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise status_error(obj)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind != "BOOKMARK":
                    _handle(source, kind, obj)
                backoff.reset()
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            if exc.status == 410:
                log.info("watch of %s in %s expired; listing again", source.what, where)
                version = None
                continue
            if not first_list.done() and exc.status in (*FORBIDDEN_STATUSES, 404):
                first_list.set_exception(exc)
                return
            delay = backoff.next()
            log.warning(
                "watch of %s in %s failed: %s; retrying in %.1fs",
                source.what,
                where,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            delay = backoff.next()
            log.warning(
                "watch of %s in %s lost: %s; reconnecting in %.1fs",
                source.what,
                where,
                exc or type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)


def _handle(source: Source, kind: str, obj: dict[str, Any]) -> None:
    try:
        source.event(kind, obj)
    except Exception:  # one odd object must not stop the watch
        log.exception("could not handle %s event for %s", kind, object_key(obj))
