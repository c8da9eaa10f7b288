"""Where the console's Deploy writes a Function (docs/console.md, "Deploy").

`FunctionStore` is the small interface the console deploys through; two implementations:

- `FolderStore` (local mode): writes the manifest into the folder `kubefaas local` serves
  and reloads the folder into the registry, so the next invocation runs the new code (the
  local backend retires instances of a redefined function, `backends/local.py`).
- `ClusterStore` (cluster mode): server-side apply of the Function through the gateway's
  door to the API server (`kube_async.KubeClient.apply`), with the gateway's rights; a 403
  becomes `DeployForbidden` saying which permission is missing.

Delete is the other write: local mode removes the Function's document from its manifest
file (the file itself when it held nothing else) and reloads; on a cluster it is a
`DELETE` of the Function through the same door (verb `delete`, granted with the console).

Another way to deploy (a user's own token once namespace tokens exist, a packaging
upload) is one more class with the same two methods.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubefaas.api import Function
from kubefaas.kubeapi import ApiError
from kubefaas.manifests import MANIFEST_SUFFIXES, load_directory
from kubefaas_gateway.registry import FunctionRegistry

FIELD_MANAGER = "kubefaas-console"


class DeployError(Exception):
    """Deploy failed; `message` says why in words a user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeployForbidden(DeployError):
    """The API server refused the write (RBAC)."""


class FunctionStore(Protocol):
    """Create or update Functions, and read back what was deployed."""

    @property
    def where(self) -> str:
        """Where Deploy writes, shown on the edit page."""
        ...

    async def deploy(self, document: dict[str, Any]) -> str:
        """Create or update the Function `document` (valid); a message saying what happened."""
        ...

    async def delete(self, namespace: str, name: str) -> str:
        """Delete the Function namespace/name; a message saying what happened."""
        ...


class FolderStore:
    """Local mode: the served folder is the source of truth (see the module docstring)."""

    def __init__(self, directory: Path, registry: FunctionRegistry) -> None:
        self._directory = directory
        self._registry = registry
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"the manifest folder {self._directory}"

    async def deploy(self, document: dict[str, Any]) -> str:
        async with self._lock:
            path = await asyncio.to_thread(self._write, document)
            self.reload()
        return f"wrote {path.name} and reloaded {self._directory}"

    def _write(self, document: dict[str, Any]) -> Path:
        if self._directory.is_file():
            raise DeployError(f"{self._directory} is a file; deploy needs a served folder")
        meta = document["metadata"]
        name, namespace = meta["name"], meta.get("namespace", "default")
        target = self._file_of(name, namespace)
        if target is None:
            stem = name if namespace == "default" else f"{namespace}.{name}"
            target = self._directory / f"{stem}.yaml"
            target.write_text(_dump([document]), encoding="utf-8")
            return target
        text = target.read_text(encoding="utf-8")
        # Keep the file's leading comment (how to call the example, say).
        header = "".join(
            line + "\n" for line in _leading(text.splitlines(), lambda s: s.startswith("#"))
        )
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        replaced = [document if _is(d, name, namespace) else d for d in documents]
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(header + _dump(replaced), encoding="utf-8")
        tmp.replace(target)
        return target

    async def delete(self, namespace: str, name: str) -> str:
        async with self._lock:
            message = await asyncio.to_thread(self._remove, namespace, name)
            self.reload()
        return message

    def _remove(self, namespace: str, name: str) -> str:
        if self._directory.is_file():
            raise DeployError(f"{self._directory} is a file; delete needs a served folder")
        target = self._file_of(name, namespace)
        if target is None:
            raise DeployError(
                f"no manifest of Function {namespace}/{name} in {self._directory} "
                "(it was removed already)"
            )
        text = target.read_text(encoding="utf-8")
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        kept = [d for d in documents if not _is(d, name, namespace)]
        if not kept:
            target.unlink()
            return f"removed {target.name} and reloaded {self._directory}"
        header = "".join(
            line + "\n" for line in _leading(text.splitlines(), lambda s: s.startswith("#"))
        )
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(header + _dump(kept), encoding="utf-8")
        tmp.replace(target)
        return f"removed {namespace}/{name} from {target.name} and reloaded {self._directory}"

    def _file_of(self, name: str, namespace: str) -> Path | None:
        for path in sorted(self._directory.iterdir()):
            if path.suffix not in MANIFEST_SUFFIXES:
                continue
            try:
                documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            if any(_is(d, name, namespace) for d in documents):
                return path
        return None

    def reload(self) -> None:
        """Put every changed Function of the folder into the registry, drop removed ones."""
        result = load_directory(self._directory)
        seen = set()
        for fn in result.functions:
            seen.add(fn.key)
            current = self._registry.get(fn.key)
            if current is None or current.spec != fn.spec or current.metadata != fn.metadata:
                self._registry.put(fn)
        for fn in list(self._registry):
            if fn.key not in seen:
                self._registry.remove(fn.key)


class KubeApply(Protocol):
    """The writes the console needs from the gateway's door (`kube_async.KubeClient`)."""

    async def apply(
        self, path: str, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]: ...

    async def delete(self, path: str, *, missing_ok: bool = True) -> None: ...

    async def close(self) -> None: ...


class ClusterStore:
    """Cluster mode: server-side apply through the API server (see the module docstring)."""

    def __init__(self, kube: KubeApply) -> None:
        self._kube = kube

    @property
    def where(self) -> str:
        return "the Kubernetes API server (server-side apply, as the gateway)"

    async def deploy(self, document: dict[str, Any]) -> str:
        meta = document["metadata"]
        name, namespace = meta["name"], meta.get("namespace", "default")
        path = f"/apis/kubefaas.io/v1alpha1/namespaces/{namespace}/functions/{name}"
        try:
            await self._kube.apply(path, document, field_manager=FIELD_MANAGER)
        except ApiError as exc:
            if exc.status == 403:
                raise DeployForbidden(
                    f"the API server refused: the gateway's service account may not create "
                    f"or update Functions in namespace {namespace!r} (RBAC: verbs create, "
                    f"patch on functions.kubefaas.io; the chart grants them with "
                    f"console.enabled=true). Server said: {exc.message}"
                ) from None
            raise DeployError(f"the API server answered {exc.status}: {exc.message}") from None
        return f"applied Function {namespace}/{name} to the cluster"

    async def delete(self, namespace: str, name: str) -> str:
        path = f"/apis/kubefaas.io/v1alpha1/namespaces/{namespace}/functions/{name}"
        try:
            await self._kube.delete(path, missing_ok=False)
        except ApiError as exc:
            if exc.status == 403:
                raise DeployForbidden(
                    f"the API server refused: the gateway's service account may not delete "
                    f"Functions in namespace {namespace!r} (RBAC: verb delete on "
                    f"functions.kubefaas.io; the chart grants it with console.enabled=true). "
                    f"Server said: {exc.message}"
                ) from None
            if exc.not_found:
                raise DeployError(f"Function {namespace}/{name} is gone already") from None
            raise DeployError(f"the API server answered {exc.status}: {exc.message}") from None
        return f"deleted Function {namespace}/{name} from the cluster"

    async def close(self) -> None:
        await self._kube.close()


def _is(document: Any, name: str, namespace: str) -> bool:
    if not isinstance(document, dict) or document.get("kind") != "Function":
        return False
    meta = document.get("metadata") or {}
    return bool(meta.get("name") == name and meta.get("namespace", "default") == namespace)


def _leading(lines: list[str], keep: Any) -> list[str]:
    out = []
    for line in lines:
        if not keep(line):
            break
        out.append(line)
    return out


class _Literal(str):
    """A multi-line string written as a YAML block (`|`), as people write code."""


def _represent_literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _represent_literal)


def _blocks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if (
        isinstance(value, str)
        and "\n" in value
        and not any(line != line.rstrip() for line in value.splitlines())
    ):
        return _Literal(value)
    return value


def _dump(documents: list[Any]) -> str:
    return yaml.dump_all(
        [_blocks(d) for d in documents], Dumper=_Dumper, sort_keys=False, allow_unicode=True
    )


def function_document(fn: Function) -> dict[str, Any]:
    """The manifest of a deployed Function (spec and identity; no status)."""
    spec = fn.spec.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    meta: dict[str, Any] = {"name": fn.name}
    if fn.namespace != "default":
        meta["namespace"] = fn.namespace
    if fn.metadata.labels:
        meta["labels"] = dict(fn.metadata.labels)
    return {"apiVersion": fn.api_version, "kind": "Function", "metadata": meta, "spec": spec}
