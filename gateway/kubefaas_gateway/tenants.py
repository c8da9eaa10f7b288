"""Namespace tokens: a tenant's bearer token with the rights over its own namespaces
(docs/architecture.md, "Namespace tokens"; docs/security.md).

Beside the admin token (every namespace), the gateway accepts the tokens of one Secret,
`KUBEFAAS_NAMESPACE_TOKENS_SECRET` (`NAMESPACE/NAME`, or `NAME` in the default namespace;
the chart's `auth.namespaceTokens.secretName`, in the release's namespace). Each key of the
Secret names what its value grants:

    team-a            -> a token for namespace team-a
    team-a.2026-12    -> another one for team-a (rotation: add the new, drop the old)
    team-a_team-b.ci  -> one token for team-a and team-b

that is `<namespace>[_<namespace>...][.<label>]`: namespace names cannot hold `_` or `.`, so
a key reads one way only. Local mode reads the Secret like every other (a `kind: Secret`
manifest in the served folder, or `<secrets dir>/<ns>/<name>/<key>` files); in a cluster
it is one `get` on the API server, kept `secret_cache_seconds`.

A presented token is compared with every value, all of them every time
(`hmac.compare_digest`), so the time taken says nothing about which one was close. Tokens
are never logged; only the Secret's key names (which say which token matched) are.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kubefaas_gateway.auth import MAX_CREDENTIAL_BYTES, InvokeUnauthorized, credential
from kubefaas_gateway.errors import InvocationError
from kubefaas_gateway.secrets import SecretReader
from kubefaas_gateway.settings import Settings

log = logging.getLogger("kubefaas.gateway.tenants")

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

Headers = Iterable[tuple[bytes, bytes]]


class Forbidden(InvocationError):
    """A valid credential asked about a namespace it has no rights over."""

    status = 403


class TokenRefused(InvokeUnauthorized):
    """No credential, or one that is neither the admin token nor a namespace token (the
    same 401 and `WWW-Authenticate` as a refused invoke credential)."""


@dataclass(frozen=True)
class Grant:
    """Who a credential is: the admin (`namespaces` None: all) or a tenant whose token is
    the Secret key `key` (its namespaces)."""

    namespaces: frozenset[str] | None
    key: str = ""

    @property
    def admin(self) -> bool:
        return self.namespaces is None

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def require(self, namespace: str, what: str) -> None:
        """Raise `Forbidden` naming `namespace` unless this grant covers it."""
        if not self.allows(namespace):
            assert self.namespaces is not None
            raise Forbidden(
                f"this namespace token may not {what} in namespace {namespace!r}: it grants "
                f"{', '.join(sorted(self.namespaces))}"
            )

    def describe(self) -> str:
        if self.namespaces is None:
            return "admin"
        return "namespace " + ", ".join(sorted(self.namespaces))


ADMIN = Grant(namespaces=None)


def namespaces_of_key(key: str) -> frozenset[str] | None:
    """The namespaces a Secret key grants (see the module docstring), None if malformed."""
    names = key.partition(".")[0].split("_")
    if not names or not all(_NAMESPACE.match(name) for name in names):
        return None
    return frozenset(names)


def secret_ref(settings: Settings) -> tuple[str, str] | None:
    """(namespace, name) of the namespace tokens' Secret, None when none is configured."""
    value = (settings.namespace_tokens_secret or "").strip()
    if not value:
        return None
    namespace, sep, name = value.rpartition("/")
    return (namespace if sep else settings.default_namespace), name


class NamespaceTokens:
    """Matches a presented token against the namespace tokens' Secret."""

    def __init__(self, secrets: SecretReader, ref: tuple[str, str] | None) -> None:
        self._secrets = secrets
        self._ref = ref

    @property
    def configured(self) -> bool:
        return self._ref is not None

    async def values(self) -> dict[str, bytes]:
        """The Secret's well-formed keys and their (stripped) tokens."""
        if self._ref is None:
            return {}
        data = await self._secrets(*self._ref)
        if data is None:
            log.warning(
                "namespace tokens: Secret %s/%s is missing; only the admin token is accepted",
                *self._ref,
            )
            return {}
        found = {}
        for key, value in data.items():
            if namespaces_of_key(key) is None:
                log.warning(
                    "namespace tokens: Secret %s/%s key %r is not <namespace>[_<namespace>]"
                    "[.<label>]; ignored",
                    *self._ref,
                    key,
                )
                continue
            token = value.strip()
            if token:
                found[key] = token
        return found

    async def grant(self, presented: bytes) -> Grant | None:
        """The grant of `presented`, None when it is none of the tokens."""
        matched: str | None = None
        for key, token in (await self.values()).items():
            # Every value is compared, a match or not: the time taken says nothing.
            if hmac.compare_digest(presented, token) and matched is None:
                matched = key
        if matched is None:
            return None
        namespaces = namespaces_of_key(matched)
        assert namespaces is not None
        return Grant(namespaces=namespaces, key=matched)

    async def token_of(self, key: str) -> bytes | None:
        """The current token of Secret key `key` (a console session is signed with it)."""
        return (await self.values()).get(key)


def _admin_token(settings: Settings) -> bytes:
    token = settings.admin_token
    return token.get_secret_value().encode() if token is not None else b""


async def grant_of(settings: Settings, tokens: NamespaceTokens, presented: bytes) -> Grant | None:
    """ADMIN for the admin token, a tenant's grant for a namespace token, else None."""
    admin = _admin_token(settings)
    # Both are always checked, so which one matched does not show in the time taken.
    is_admin = bool(admin) and hmac.compare_digest(presented, admin)
    tenant = await tokens.grant(presented)
    if is_admin:
        return ADMIN
    return tenant


async def require_grant(settings: Settings, tokens: NamespaceTokens, headers: Headers) -> Grant:
    """The caller's grant from `Authorization: Bearer` (or `X-Api-Key`); 401 otherwise."""
    presented = credential(headers)
    accepted = "the admin token" + (" or a namespace token" if tokens.configured else "")
    if not presented:
        raise TokenRefused(f"this route needs `Authorization: Bearer <{accepted}>`", invalid=False)
    if len(presented) > MAX_CREDENTIAL_BYTES:
        raise TokenRefused(
            f"the credential is longer than {MAX_CREDENTIAL_BYTES} bytes", invalid=True
        )
    found = await grant_of(settings, tokens, presented)
    if found is None:
        raise TokenRefused(f"the token is not {accepted}", invalid=True)
    return found


def tokens_for(settings: Settings, secrets: SecretReader) -> NamespaceTokens:
    """The namespace tokens of a gateway (`GatewayState.settings`, `.secrets`, which caches)."""
    return NamespaceTokens(secrets, secret_ref(settings))
