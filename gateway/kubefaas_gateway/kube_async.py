"""The gateway's one door to the Kubernetes API server.

`Kube` is what the cluster backend needs (get, list, watch, merge-patch, objects as plain
dicts); `KubeClient` implements it over kubernetes_asyncio's `ApiClient`, which does what
it is good at: configuration from the pod's service account (with token refresh) or from
`$KUBECONFIG`, TLS and connection pooling. Objects stay dicts because the gateway reads a
handful of fields from each; turning every watched pod into generated model classes would
only cost CPU. Tests of the backend pass a fake `Kube`. The error type, content types and
request timeout are the core's (`kubefaas.kubeapi`), shared with the operator's door.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from kubefaas.kubeapi import JSON, MERGE_PATCH, REQUEST_TIMEOUT_SECONDS, ApiError

__all__ = ["ApiError", "Backoff", "Kube", "KubeClient", "collection_path", "status_error"]

# Server-side apply takes YAML, of which JSON is a subset.
APPLY_PATCH = "application/apply-patch+yaml"
# RFC 6902: a list of operations, with `test` (the warm pool's claim, docs/warm-pool.md).
JSON_PATCH = "application/json-patch+json"
JsonPatch = list[dict[str, Any]]
LIST_PAGE_SIZE = 500
# Bookmarks arrive about once a minute; a watch read silent this much longer than its
# server-side timeout is a dead connection.
WATCH_READ_MARGIN_SECONDS = 30.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


class Kube(Protocol):
    """What the backend needs from the API server, objects as plain dicts."""

    async def get(self, path: str) -> dict[str, Any]:
        """The object at `path`; raises `ApiError` (404 when missing)."""
        ...

    async def list(
        self, path: str, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every item of a collection (all pages) and the list's resourceVersion."""
        ...

    def watch(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}`) after `resource_version`, until the server
        ends the watch after `timeout_seconds`."""
        ...

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch (the gateway's one write: activation from zero, with a
        resourceVersion precondition in `body`)."""
        ...

    async def json_patch(self, path: str, operations: JsonPatch) -> dict[str, Any]:
        """JSON patch (RFC 6902); a failed `test` operation raises `ApiError` (422)."""
        ...

    async def delete(self, path: str, *, missing_ok: bool = True) -> None:
        """DELETE the object at `path`; a missing object is an error only without
        `missing_ok` (`ApiError`, 404)."""
        ...

    async def close(self) -> None: ...


def collection_path(
    group_version: str, plural: str, namespace: str | None, name: str | None = None
) -> str:
    """`/apis/<gv>[/namespaces/<ns>]/<plural>[/<name>]` (`/api/v1/...` for the core group)."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    if namespace is not None:
        root = f"{root}/namespaces/{quote(namespace, safe='')}"
    path = f"{root}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name is not None else path


class KubeClient:
    """`Kube` over kubernetes_asyncio's `ApiClient` (auth, TLS, token refresh, pooling)."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls) -> KubeClient:
        """Configure from the pod's service account, or from `$KUBECONFIG` outside a pod."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        return cls(client.ApiClient(configuration=configuration))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Mapping[str, Any] | JsonPatch | None = None,
        content_type: str = JSON,
        request_timeout: float | aiohttp.ClientTimeout = REQUEST_TIMEOUT_SECONDS,
        accept: str = JSON,
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self._client.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=request_timeout,
        )
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        async with response:
            data = await response.read()
            if response.status >= 300:
                raise _api_error(response.status, data)
            answer: dict[str, Any] = json.loads(data)
            return answer

    async def get(self, path: str) -> dict[str, Any]:
        return await self._json("GET", path)

    async def list(
        self, path: str, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query = [("limit", str(LIST_PAGE_SIZE))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self._json("GET", path, query=query)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        timeout = aiohttp.ClientTimeout(
            sock_connect=REQUEST_TIMEOUT_SECONDS,
            sock_read=timeout_seconds + WATCH_READ_MARGIN_SECONDS,
        )
        response = await self._request("GET", path, query=query, request_timeout=timeout)
        async with response:
            if response.status >= 300:
                raise _api_error(response.status, await response.read())
            # One JSON event per line; the client's read buffer (2 MiB) fits any object.
            async for line in response.content:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._json("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, operations: JsonPatch) -> dict[str, Any]:
        return await self._json("PATCH", path, body=operations, content_type=JSON_PATCH)

    async def delete(self, path: str, *, missing_ok: bool = True) -> None:
        try:
            await self._json("DELETE", path)
        except ApiError as exc:
            if not (exc.not_found and missing_ok):
                raise

    async def pod_log_lines(
        self, namespace: str, pod: str, *, follow: bool, timeout_seconds: float
    ) -> AsyncIterator[str]:
        """The lines of a pod's container log, from its start; with `follow`, until the
        container ends (the log keeper of ending pods, docs/logs.md)."""
        path = f"{collection_path('v1', 'pods', namespace=namespace, name=pod)}/log"
        query = [("follow", "true")] if follow else []
        timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=REQUEST_TIMEOUT_SECONDS)
        response = await self._request(
            "GET", path, query=query, request_timeout=timeout, accept="text/plain, */*"
        )
        async with response:
            if response.status >= 300:
                raise _api_error(response.status, await response.read())
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    yield line

    async def apply(
        self, path: str, body: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """Server-side apply (create or update) of the object at `path` (the console's
        Deploy, docs/console.md); conflicts with other managers are forced."""
        query = [("fieldManager", field_manager), ("force", "true")]
        return await self._json("PATCH", path, body=body, query=query, content_type=APPLY_PATCH)

    async def close(self) -> None:
        await self._client.close()


def _api_error(status: int, data: bytes) -> ApiError:
    """An `ApiError` from a `Status` body (or whatever the server sent instead)."""
    with contextlib.suppress(ValueError):
        body = json.loads(data)
        if isinstance(body, dict):
            return status_error(body, status)
    return ApiError(status, "", data[:500].decode("utf-8", "replace"))


def status_error(status: Mapping[str, Any], default_code: int = 500) -> ApiError:
    """An `ApiError` from a `Status` object (an error body, or a watch's ERROR event)."""
    code = int(status.get("code") or default_code)
    return ApiError(code, str(status.get("reason") or ""), str(status.get("message") or ""))


class Backoff:
    """Capped exponential delays with jitter, for reconnecting watches."""

    def __init__(
        self, *, initial: float = BACKOFF_INITIAL_SECONDS, maximum: float = BACKOFF_MAX_SECONDS
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt (a random share of up to 50 % shaved off)."""
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay * (1 - random.random() / 2)

    def reset(self) -> None:
        self._next = self._initial
