"""Where the gateway reads Secrets from: the folder's manifests and files in local mode, the
API in a cluster.

Invoke auth reads them (`auth.py`: the keys of a `token` Function, the public key of a
`jwt` one; docs/security.md), and so do queue triggers (`triggers/runner.py`: a broker's
credentials, docs/triggers.md); both go through the one reader on `GatewayState.secrets`.
A reader answers `{key: value bytes}` for one Secret, or None when there is no such Secret;
`CachedSecrets` in front of it keeps each answer for a few seconds, so a rotated key is
picked up quickly while the warm invoke path reads no file and makes no API call.

Local mode reads `kind: Secret` manifests beside the Functions first, then a folder that
holds one folder per namespace, one per Secret in it, one file per key, the layout of a
mounted Secret volume:

    <secrets dir>/<namespace>/<secret name>/<key>

In a cluster the gateway `get`s `/api/v1/namespaces/<ns>/secrets/<name>` (its Role grants
`get` on Secrets, never `list` or `watch`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from kubefaas.kubeapi import ApiError
from kubefaas_gateway.kube_async import Kube

SecretData = dict[str, bytes]
# Names as the API allows them: no "..", no "/", so a name never leaves the folder.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class SecretReader(Protocol):
    def __call__(self, namespace: str, name: str) -> Awaitable[SecretData | None]: ...


class FolderSecrets:
    """Secrets as files under `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def __call__(self, namespace: str, name: str) -> SecretData | None:
        return await asyncio.to_thread(self.read, namespace, name)

    def read(self, namespace: str, name: str) -> SecretData | None:
        if not (_NAME.match(namespace) and _NAME.match(name)) or ".." in name:
            return None
        folder = self._root / namespace / name
        if not folder.is_dir():
            return None
        return {
            entry.name: entry.read_bytes()
            for entry in sorted(folder.iterdir())
            if entry.is_file() and _KEY.match(entry.name) and not entry.name.startswith("..")
        }


class KubeSecrets:
    """Secrets read from the API server through the gateway's one Kube door."""

    def __init__(self, kube: Callable[[], Kube | None]) -> None:
        self._kube = kube

    async def __call__(self, namespace: str, name: str) -> SecretData | None:
        kube = self._kube()
        if kube is None:
            return None
        try:
            secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        data = secret.get("data") or {}
        return {key: base64.b64decode(value) for key, value in data.items()}


class CachedSecrets:
    """`reader` with each answer kept `ttl` seconds (a missing Secret too)."""

    def __init__(
        self, reader: SecretReader, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reader = reader
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, SecretData | None]] = {}

    async def __call__(self, namespace: str, name: str) -> SecretData | None:
        now = self._clock()
        cached = self._cache.get((namespace, name))
        if cached is not None and cached[0] > now:
            return cached[1]
        data = await self._reader(namespace, name)
        self._cache[(namespace, name)] = (now + self._ttl, data)
        return data


async def no_secrets(namespace: str, name: str) -> SecretData | None:
    """The reader of a gateway given no Secrets: every Secret is missing."""
    return None


class ManifestSecrets:
    """Secret manifests loaded from local mode's folder (`kind: Secret`, data/stringData)."""

    def __init__(self, secrets: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        self._secrets = {
            key: {k: v.encode("utf-8") for k, v in data.items()} for key, data in secrets.items()
        }

    def read(self, namespace: str, name: str) -> SecretData | None:
        return self._secrets.get((namespace, name))


class LocalSecrets:
    """Local mode's Secrets, one reader for the gateway (invoke auth, triggers) and for the
    instances it starts (env valueFrom, mounts): the Secret manifests first, then the
    secrets folder."""

    def __init__(
        self, manifests: Mapping[tuple[str, str], Mapping[str, str]], folder: Path | None
    ) -> None:
        self._readers = [ManifestSecrets(manifests).read]
        if folder is not None:
            self._readers.append(FolderSecrets(folder).read)

    async def __call__(self, namespace: str, name: str) -> SecretData | None:
        return await asyncio.to_thread(self.read, namespace, name)

    def read(self, namespace: str, name: str) -> SecretData | None:
        for reader in self._readers:
            data = reader(namespace, name)
            if data is not None:
                return data
        return None


def secrets_for(folder: Path | None) -> SecretReader:
    """`FolderSecrets(folder)`, or `no_secrets` when there is no folder."""
    return FolderSecrets(folder) if folder is not None else no_secrets
