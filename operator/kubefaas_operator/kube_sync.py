"""The operator's one door to the Kubernetes API: a small REST client over plain dicts.

Why not the generated typed clients: the operator compares and sends whole objects as the
builders produce them (camelCase dicts), so deserialising into model classes and back
would only cost time (it dominates a bulk reconcile) and risk dropping unknown fields.
The `kubernetes` package still does what it is good at: loading the kubeconfig or the
in-cluster service account (with token refresh), TLS, and connection pooling.

Everything else in the operator (reconcile, resync, the autoscaler) talks to the API
through the `Kube` protocol, so that logic is unit-tested against an in-memory fake; an
import-linter contract keeps `kubernetes` out of every other module. The error type, content
types and request timeout are the ones the gateway's door uses too (`kubefaas.kubeapi`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from kubefaas.kubeapi import JSON, MERGE_PATCH, REQUEST_TIMEOUT_SECONDS, ApiError

FIELD_MANAGER = "kubefaas-operator"
SCALE_API_VERSION = "autoscaling/v1"


class Kube(Protocol):
    """What the operator needs from the API: objects by path, as dicts."""

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None if it does not exist."""

    def list_all(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The items of a collection (all pages)."""

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to a collection."""

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT an object (with metadata.resourceVersion for optimistic concurrency)."""

    def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch."""

    def delete(self, path: str) -> None:
        """DELETE (background propagation); a missing object is not an error."""

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the `status` subresource of the object at `path`."""

    def replace_scale(
        self, path: str, *, replicas: int, resource_version: str | None
    ) -> dict[str, Any]:
        """PUT the `/scale` subresource of the workload at `path`; with `resource_version`
        the write is refused (`ApiError`, 409) if the object changed since it was read."""


def namespaced(group_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    """``/apis/apps/v1/namespaces/ns/deployments[/name]`` (``/api/v1/...`` for core)."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{root}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name is not None else path


def cluster(group_version: str, plural: str) -> str:
    """``/apis/apps/v1/deployments``: a collection across all namespaces."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{root}/{plural}"


def scale_body(path: str, *, replicas: int, resource_version: str | None) -> dict[str, Any]:
    """The `autoscaling/v1` Scale object that sets the replicas of the workload at `path`."""
    parts = path.rstrip("/").split("/")
    metadata: dict[str, Any] = {"name": parts[-1], "namespace": parts[-3]}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": SCALE_API_VERSION,
        "kind": "Scale",
        "metadata": metadata,
        "spec": {"replicas": replicas},
    }


class RestKube:
    """`Kube` over the `kubernetes` package's configured HTTP client (thread-safe)."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    @classmethod
    def from_environment(cls, *, pool_size: int) -> RestKube:
        """In a pod: the service account. Elsewhere: ``$KUBECONFIG`` or ``~/.kube/config``."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._api.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or `ApiError` for a non-2xx status."""
        headers = {"Accept": accept, "Content-Type": content_type}
        method, url, headers, payload, post = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method,
            url,
            header_params=headers,
            body=payload,
            post_params=post,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        response.read()
        data = response.data or b"{}"
        try:
            answer: dict[str, Any] = json.loads(data)
        except ValueError:
            answer = {"message": data.decode(errors="replace")}
        if not 200 <= response.status < 300:
            raise ApiError(
                response.status, str(answer.get("reason", "")), str(answer.get("message", ""))
            )
        return answer

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list_all(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("limit", "500")]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self.request("GET", path, query=query)
            items.extend(page.get("items") or [])
            token = page.get("metadata", {}).get("continue") or ""
            if not token:
                return items

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, query=[("fieldManager", FIELD_MANAGER)], body=body)

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PUT", path, query=[("fieldManager", FIELD_MANAGER)], body=body)

    def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER)],
            body=body,
            content_type=MERGE_PATCH,
        )

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self.patch(path + "/status", {"status": dict(status)})

    def replace_scale(
        self, path: str, *, replicas: int, resource_version: str | None
    ) -> dict[str, Any]:
        body = scale_body(path, replicas=replicas, resource_version=resource_version)
        return self.replace(path + "/scale", body)

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if not exc.not_found:
                raise
