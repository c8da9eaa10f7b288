"""Invoke auth: who may call a Function (docs/security.md; docs/architecture.md, "Auth and
limits").

Checked at the gateway's doors (the sync route, the async submit, `GET /invocations/{id}`)
before any body is read and before any instance is touched. A Function's `spec.auth.mode`:

- `none`: anyone who reaches the gateway;
- `token`: `Authorization: Bearer <key>` or `X-Api-Key: <key>`, where `<key>` is any value
  of the Secret `spec.auth.token.secretName` (default `kubefaas-invoke-tokens`) of the
  Function's namespace; several values let a key be rotated without downtime. Every value
  is compared with `hmac.compare_digest`, all of them every time;
- `jwt`: `Authorization: Bearer <JWT>` signed RS256 or ES256 by a key from `jwksUrl` or
  the PEM public key in `publicKey` (a Secret key), with the configured `iss` and `aud`, and
  `exp` (required) and `nbf` checked with `leewaySeconds` of leeway.

A Function without `spec.auth` gets the gateway's `auth_default` (`KUBEFAAS_AUTH_DEFAULT`:
`none` in local mode, `token` in the chart unless `auth.default` says otherwise).

Refusals are 401 `Unauthorized` with `WWW-Authenticate: Bearer realm="kubefaas"`; the
message says what is expected, never which key was close. Secrets are read through
`secrets.CachedSecrets`; a JWT that verified is remembered until its `exp` (at most
`VERIFIED_TTL_SECONDS`), so the warm path of a repeated token is one dict lookup.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import SecretStr

from kubefaas import limits
from kubefaas.api import Function, JwtAuth
from kubefaas_gateway.errors import Unauthorized
from kubefaas_gateway.secrets import SecretReader

log = logging.getLogger("kubefaas.gateway.auth")

Headers = Iterable[tuple[bytes, bytes]]

# A verified JWT is trusted again without verifying for at most this long (and never past
# its exp): a revoked signing key stops working within a minute.
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_CACHE_MAX = 10_000
JWKS_TTL_SECONDS = 300.0
# An unknown `kid` refetches the JWKS, at most this often (a key rotation is seen at once;
# a flood of made-up kids costs one fetch per interval).
JWKS_REFETCH_SECONDS = 30.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
# A bearer value longer than this is refused unread (a JWT is well under it).
MAX_CREDENTIAL_BYTES = 8192


class InvokeUnauthorized(Unauthorized):
    """A call to a `token` or `jwt` Function without a credential it accepts."""

    def __init__(self, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self._invalid = invalid

    @property
    def type(self) -> str:
        return "Unauthorized"

    def headers(self) -> list[tuple[bytes, bytes]]:
        value = b'Bearer realm="kubefaas"'
        if self._invalid:
            value += b', error="invalid_token"'
        return [(b"www-authenticate", value)]


def credential(headers: Headers) -> bytes | None:
    """The bearer value of `Authorization`, else `X-Api-Key`, else None."""
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return rest.strip()
        elif name == b"x-api-key":
            api_key = value.strip()
    return api_key


def bearer_matches(headers: Headers, token: str) -> bool:
    """Whether `headers` carry `Authorization: Bearer <token>` (constant-time compare)."""
    presented = credential(headers)
    return presented is not None and hmac.compare_digest(presented, token.encode())


class Authenticator:
    """Decides whether a request may invoke a Function; one per gateway."""

    def __init__(
        self,
        *,
        default_mode: str,
        secrets: SecretReader,
        session: Callable[[], aiohttp.ClientSession | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._default = default_mode
        self._secrets = secrets
        self._session = session
        self._clock = clock
        self._verified: dict[tuple[str, bytes], float] = {}
        self._jwks: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._pem: dict[bytes, Any] = {}

    def mode(self, fn: Function) -> str:
        auth = fn.spec.auth
        return auth.mode if auth is not None else self._default

    def open(self, fn: Function) -> bool:
        """True when `fn` needs no credential (the warm path then skips `check`)."""
        return self.mode(fn) == "none"

    async def check(self, fn: Function, headers: Headers) -> None:
        """Return if the request may invoke `fn`; raise `InvokeUnauthorized` otherwise."""
        mode = self.mode(fn)
        if mode == "none":
            return
        presented = credential(headers)
        if presented is None or not presented:
            raise InvokeUnauthorized(
                f"function {fn.key} needs a credential: `Authorization: Bearer <"
                f"{'key' if mode == 'token' else 'JWT'}>`"
                + (" or `X-Api-Key: <key>`" if mode == "token" else ""),
                invalid=False,
            )
        if len(presented) > MAX_CREDENTIAL_BYTES:
            raise InvokeUnauthorized(
                f"function {fn.key}: the credential is longer than {MAX_CREDENTIAL_BYTES} bytes",
                invalid=True,
            )
        if mode == "token":
            await self._check_token(fn, presented)
        else:
            await self._check_jwt(fn, presented)

    async def check_record(
        self, fn: Function | None, key: str, headers: Headers, *, admin_token: SecretStr | None
    ) -> None:
        """May the caller read an async invocation of function `key` (`fn`, None once it
        is deleted)? With the function's own credential, or the admin token."""
        admin = admin_token.get_secret_value() if admin_token is not None else ""
        if admin and bearer_matches(headers, admin):
            return
        if fn is None:
            raise InvokeUnauthorized(
                f"function {key} is gone: its invocations are readable with the admin token",
                invalid=False,
            )
        await self.check(fn, headers)

    # -- token ---------------------------------------------------------------------------

    async def _check_token(self, fn: Function, presented: bytes) -> None:
        auth = fn.spec.auth
        secret_name = (
            auth.token.secret_name
            if auth is not None and auth.token is not None
            else limits.INVOKE_TOKEN_SECRET_DEFAULT
        )
        data = await self._secrets(fn.namespace, secret_name)
        if not data:
            log.warning(
                "function %s uses token auth but Secret %s/%s is missing or empty: "
                "every call is refused",
                fn.key,
                fn.namespace,
                secret_name,
            )
        matched = False
        for value in (data or {}).values():
            key = value.strip()
            # Every key is compared, a match or not: the time taken says nothing.
            matched |= bool(key) and hmac.compare_digest(presented, key)
        if not matched:
            raise InvokeUnauthorized(
                f"function {fn.key} refused the key: it is not one of the keys in Secret "
                f"{fn.namespace}/{secret_name}",
                invalid=True,
            )

    # -- jwt -----------------------------------------------------------------------------

    async def _check_jwt(self, fn: Function, presented: bytes) -> None:
        now = self._clock()
        cache_key = (fn.key, presented)
        until = self._verified.get(cache_key)
        if until is not None:
            if until > now:
                return
            del self._verified[cache_key]
        auth = fn.spec.auth
        # mode jwt comes with spec.auth.jwt (the model's rule)
        assert auth is not None
        assert auth.jwt is not None
        config = auth.jwt
        try:
            key = await self._signing_key(fn, config, presented)
            claims = jwt.decode(
                presented,
                key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise InvokeUnauthorized(
                f"function {fn.key} refused the JWT: {exc}", invalid=True
            ) from None
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            self._verified.clear()
        self._verified[cache_key] = min(float(claims["exp"]), now + VERIFIED_TTL_SECONDS)

    async def _signing_key(self, fn: Function, config: JwtAuth, token: bytes) -> Any:
        if config.public_key is not None:
            ref = config.public_key
            data = await self._secrets(fn.namespace, ref.name)
            pem = (data or {}).get(ref.key)
            if pem is None:
                raise jwt.InvalidKeyError(
                    f"no public key: Secret {fn.namespace}/{ref.name} has no key {ref.key!r}"
                )
            loaded = self._pem.get(pem)
            if loaded is None:
                try:
                    loaded = load_pem_public_key(pem)
                except ValueError as exc:
                    raise jwt.InvalidKeyError(
                        f"Secret {fn.namespace}/{ref.name} key {ref.key!r} is not a PEM "
                        f"public key ({exc})"
                    ) from None
                self._pem = {pem: loaded}  # one entry per key in use is plenty
            return loaded
        assert config.jwks_url is not None  # the model sets exactly one of the two
        kid = jwt.get_unverified_header(token).get("kid")
        keys = await self._jwks_keys(config.jwks_url, kid)
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        found = keys.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise jwt.InvalidKeyError(f"no key with kid {kid!r} at {config.jwks_url}")
        return found

    async def _jwks_keys(self, url: str, kid: object) -> dict[str, Any]:
        now = self._clock()
        cached = self._jwks.get(url)
        if cached is not None:
            fetched, expires, keys = cached
            fresh = expires > now
            if fresh and (kid in keys or fetched + JWKS_REFETCH_SECONDS > now):
                return keys
        session = self._session()
        if session is None:
            raise jwt.InvalidKeyError("the gateway is not started")
        try:
            async with session.get(
                url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT_SECONDS),
            ) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
            found = jwt.PyJWKSet.from_dict(document).keys
            keys = {k.key_id or f"#{i}": k.key for i, k in enumerate(found)}
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            if cached is not None:
                log.warning("JWKS %s could not be refreshed (%s); keeping the old keys", url, exc)
                return cached[2]
            raise jwt.InvalidKeyError(f"could not read the JWKS at {url}: {exc}") from None
        self._jwks[url] = (now, now + JWKS_TTL_SECONDS, keys)
        return keys
