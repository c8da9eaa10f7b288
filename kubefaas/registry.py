"""A small OCI distribution client for the build Job (docs/packaging.md, "On a cluster").

What `kubefaas.oci.push` does for a workstation, plus what a builder in a pod needs:
credentials from a docker `config.json` (Basic, or the Bearer token flow of Docker Hub,
GitLab, Harbor...), reading manifests and configs by tag or digest, and copying blobs
from one repository to another on the same registry without moving them through the pod
(a cross-repository mount, with a download and upload as the fallback). Only the
standard library is used: it runs in the runtime image.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubefaas import oci

MANIFEST_TYPES = ", ".join(
    (
        oci.MEDIA_MANIFEST,
        oci.DOCKER_MANIFEST,
        oci.MEDIA_INDEX,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
TIMEOUT_SECONDS = 120
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(RuntimeError):
    """The registry refused a request; the message has the method, URL, status and answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reference:
    """`host[:port]/name` with a tag or a digest."""

    host: str
    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        host, name, tag = oci.split_reference(rest)
        explicit_tag = ":" in rest.partition("/")[2]
        return cls(host, name, tag if explicit_tag or not digest else None, digest or None)

    @property
    def selector(self) -> str:
        """What goes after `/manifests/`: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> str:
        return f"{self.host}/{self.name}@{digest}"


def load_docker_config(path: Path | None) -> dict[str, tuple[str, str]]:
    """Registry host -> (user, password) from a docker `config.json` (`auths`)."""
    if path is None or not path.is_file():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    found: dict[str, tuple[str, str]] = {}
    for host, entry in (document.get("auths") or {}).items():
        if not isinstance(entry, Mapping):
            continue
        user, password = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        if user is not None and password is not None:
            key = re.sub(r"^https?://", "", str(host)).split("/", 1)[0]
            found[key] = (str(user), str(password))
    return found


@dataclass
class Registry:
    """One registry host: HTTP(S) requests with the credentials and tokens it asks for."""

    host: str
    scheme: str = "https"
    credentials: tuple[str, str] | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    def _url(self, path: str) -> str:
        return (
            path
            if path.startswith(("http://", "https://"))
            else f"{self.scheme}://{self.host}{path}"
        )

    def _token(self, challenge: str, scope_hint: str) -> str:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"{self.host}: a Bearer challenge without a realm: {challenge}")
        params.setdefault("scope", scope_hint)
        url = f"{realm}?{urllib.parse.urlencode(params)}"
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = _basic(self.credentials)
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=TIMEOUT_SECONDS
            ) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"token request {url}: {exc.code}", exc.code) from exc
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"token request {url}: no token in the answer")
        return str(token)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        scope: str = "",
        allow: tuple[int, ...] = (),
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body); a status in `allow` is returned, others raise."""
        sent = dict(headers or {})
        for attempt in range(2):
            if scope in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[scope]}"
            elif self.credentials is not None and "basic" in self._tokens:
                sent["Authorization"] = _basic(self.credentials)
            request = urllib.request.Request(
                self._url(path), data=data, method=method, headers=sent
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()
                if exc.code == 401 and attempt == 0:
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    if challenge.lower().startswith("bearer"):
                        self._tokens[scope] = self._token(challenge, scope)
                        continue
                    if self.credentials is not None:
                        self._tokens["basic"] = "yes"
                        continue
                if exc.code in allow:
                    return exc.code, dict(exc.headers), body
                raise RegistryError(
                    f"{method} {self._url(path)}: {exc.code} {body[:500]!r}", exc.code
                ) from exc
            except urllib.error.URLError as exc:
                raise RegistryError(f"{method} {self._url(path)}: {exc.reason}") from exc
        raise RegistryError(f"{method} {self._url(path)}: still unauthorized", 401)

    # --- reading -----------------------------------------------------------------------

    def manifest(self, name: str, selector: str) -> tuple[str, dict[str, Any]] | None:
        """(media type, manifest) of `name:selector`; None if absent. An index is resolved
        to its linux/amd64 image."""
        status, headers, body = self.request(
            "GET",
            f"/v2/{name}/manifests/{selector}",
            headers={"Accept": MANIFEST_TYPES},
            scope=f"repository:{name}:pull",
            allow=(404,),
        )
        if status == 404:
            return None
        document: dict[str, Any] = json.loads(body)
        media = str(document.get("mediaType") or headers.get("Content-Type", oci.MEDIA_MANIFEST))
        if "manifests" in document:
            chosen = oci._pick(document["manifests"], Path(f"{self.host}/{name}"))
            return self.manifest(name, chosen["digest"])
        return media, document

    def blob(self, name: str, digest: str) -> bytes:
        _, _, body = self.request(
            "GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull"
        )
        if oci.sha256(body) != digest:
            raise RegistryError(f"{self.host}/{name}: blob {digest} does not match its digest")
        return body

    def has_blob(self, name: str, digest: str) -> bool:
        status, _, _ = self.request(
            "HEAD",
            f"/v2/{name}/blobs/{digest}",
            scope=f"repository:{name}:pull,push",
            allow=(404,),
        )
        return status != 404

    # --- writing -----------------------------------------------------------------------

    def upload(self, name: str, blob: oci.Blob) -> bool:
        """Upload `blob` unless the repository has it; True if it was sent."""
        if self.has_blob(name, blob.digest):
            return False
        scope = f"repository:{name}:pull,push"
        _, headers, _ = self.request("POST", f"/v2/{name}/blobs/uploads/", data=b"", scope=scope)
        location = urllib.parse.urljoin(self._url("/"), headers["Location"])
        joiner = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{joiner}digest={urllib.parse.quote(blob.digest)}",
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
            scope=scope,
        )
        return True

    def copy_blob(self, descriptor: Mapping[str, Any], *, source: str, target: str) -> str:
        """Make blob `descriptor` present in `target`; how: `present`, `mounted`, `copied`."""
        digest = str(descriptor["digest"])
        if self.has_blob(target, digest):
            return "present"
        scope = f"repository:{target}:pull,push repository:{source}:pull"
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        status, headers, _ = self.request(
            "POST", f"/v2/{target}/blobs/uploads/?{query}", data=b"", scope=scope
        )
        if status == 201:
            return "mounted"
        # 202: the registry opened an upload instead of mounting; send the bytes.
        data = self.blob(source, digest)
        location = urllib.parse.urljoin(self._url("/"), headers["Location"])
        joiner = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{joiner}digest={urllib.parse.quote(digest)}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            scope=scope,
        )
        return "copied"

    def put_manifest(self, name: str, tag: str, manifest: bytes, media_type: str) -> str:
        self.request(
            "PUT",
            f"/v2/{name}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": media_type},
            scope=f"repository:{name}:pull,push",
        )
        return oci.sha256(manifest)


def _basic(credentials: tuple[str, str]) -> str:
    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    return f"Basic {token}"


def connect(host: str, *, plain_http: bool, auths: Mapping[str, tuple[str, str]]) -> Registry:
    """A client for `host`: plain HTTP if asked or on a loopback address, else HTTPS."""
    loopback = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
    return Registry(host, "http" if plain_http or loopback else "https", auths.get(host))
