"""An API server in a dict, for unit tests of everything behind the operator's `Kube` door.

It keeps the API server's rules the operator depends on: resourceVersion checks (409 on a
stale write, including a `/scale` write), 409 on creating an existing name, 404s, label
selectors on lists, and the status and scale subresources. Every write is recorded, so a
test can assert what was never sent.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from kubefaas.kubeapi import ApiError


class FakeKube:
    """An API server in a dict, keyed by object path."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.reads: list[str] = []
        self._versions = itertools.count(100)
        self.fail_writes: dict[str, ApiError] = {}
        self.before_write: list[Any] = []

    def _version(self) -> str:
        return str(next(self._versions))

    def put_object(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = self._version()
        self.objects[path] = obj
        return copy.deepcopy(obj)

    def _write(self, verb: str, path: str, body: Mapping[str, Any]) -> None:
        for hook in self.before_write:
            hook(verb, path)
        self.writes.append((verb, path, copy.deepcopy(dict(body))))
        for prefix, error in self.fail_writes.items():
            if path.startswith(prefix):
                raise error

    def get(self, path: str) -> dict[str, Any] | None:
        self.reads.append(path)
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    def list_all(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        wanted: dict[str, str | None] = {}
        for term in (label_selector or "").split(","):
            if term:
                key, _, value = term.partition("=")
                wanted[key] = value or None
        kind = path.rsplit("/", 1)[-1]
        found = []
        for key, obj in self.objects.items():
            parts = key.split("/")
            if parts[-2] != kind or ("/namespaces/" in path and not key.startswith(path)):
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(k in labels and (v is None or labels[k] == v) for k, v in wanted.items()):
                found.append(copy.deepcopy(obj))
        return found

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._write("create", path, body)
        target = f"{path}/{body['metadata']['name']}"
        if target in self.objects:
            raise ApiError(409, "AlreadyExists", f"{target} exists")
        return self.put_object(target, dict(body))

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._write("replace", path, body)
        current = self.objects.get(path)
        if current is None:
            raise ApiError(404, "NotFound", path)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        new = copy.deepcopy(dict(body))
        new["metadata"]["uid"] = current["metadata"]["uid"]
        if "status" in current:
            new["status"] = current["status"]
        return self.put_object(path, new)

    def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._write("patch", path, body)
        target = path.removesuffix("/status")
        current = self.objects.get(target)
        if current is None:
            raise ApiError(404, "NotFound", target)
        want = body.get("metadata", {}).get("resourceVersion")
        if want is not None and want != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        merged = copy.deepcopy(current)
        for key, value in body.items():
            if key == "metadata":
                continue
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(copy.deepcopy(value))
            else:
                merged[key] = copy.deepcopy(value)
        return self.put_object(target, merged)

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self.patch(path + "/status", {"status": dict(status)})

    def replace_scale(
        self, path: str, *, replicas: int, resource_version: str | None
    ) -> dict[str, Any]:
        self._write("scale", path, {"spec": {"replicas": replicas}})
        current = self.objects.get(path)
        if current is None:
            raise ApiError(404, "NotFound", path)
        if (
            resource_version is not None
            and resource_version != current["metadata"]["resourceVersion"]
        ):
            raise ApiError(409, "Conflict", "the object has been modified")
        scaled = copy.deepcopy(current)
        scaled.setdefault("spec", {})["replicas"] = replicas
        return self.put_object(path, scaled)

    def delete(self, path: str) -> None:
        self._write("delete", path, {})
        self.objects.pop(path, None)

    # helpers for tests

    def writes_to(self, kind_path: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [w for w in self.writes if kind_path in w[1]]
