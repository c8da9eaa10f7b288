"""Console login: the admin token or a namespace token, exchanged once for a session cookie
(docs/console.md, "Login and CSRF"; docs/architecture.md, "Namespace tokens").

- `POST /console/login` compares the submitted token with the gateway's admin token and
  with every namespace token (`tenants.py`, `hmac.compare_digest`) and sets
  `kubefaas_console`: `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
  page sends it), `Secure` when served over https, `Path=/console`. Its value is an expiry
  and an HMAC of it keyed by the token that logged in (`<expiry>.<hmac>` for the admin,
  `<expiry>.<hmac>.<Secret key>` for a namespace token, the key naming its namespaces), so
  the gateway keeps no session table and changing or removing the token logs its sessions
  out (a namespace token's within the Secret cache's few seconds).
- Every form that changes something carries a CSRF token, an HMAC of the session value;
  a POST without the right one is refused (403) even if a browser sent the cookie. The
  login form itself checks `Origin` when the browser sends it.

`Session.grant` says which namespaces the pages show and may change (`tenants.Grant`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from kubefaas_gateway.settings import Settings
from kubefaas_gateway.state import GatewayState
from kubefaas_gateway.tenants import (
    ADMIN,
    Grant,
    NamespaceTokens,
    grant_of,
    namespaces_of_key,
    tokens_for,
)

COOKIE = "kubefaas_console"
SESSION_SECONDS = 8 * 3600
LOGIN_PATH = "/console/login"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its cookie value, the CSRF token its forms carry, its rights."""

    value: str
    csrf: str
    grant: Grant = ADMIN

    @property
    def subject(self) -> str:
        return self.grant.describe()


def _key(settings: Settings) -> bytes | None:
    token = settings.admin_token
    if token is None or not token.get_secret_value():
        return None
    return token.get_secret_value().encode()


def _sign(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def tokens_of(state: GatewayState) -> NamespaceTokens:
    return tokens_for(state.settings, state.secrets)


def login_possible(state: GatewayState) -> bool:
    """Whether any token can log in (an admin token set, or namespace tokens configured)."""
    return _key(state.settings) is not None or tokens_of(state).configured


async def authenticate(state: GatewayState, presented: str) -> tuple[Grant, bytes] | None:
    """Who `presented` is (admin, or a tenant) and the token its session is signed with."""
    token = presented.strip().encode()
    if not token:
        return None
    grant = await grant_of(state.settings, tokens_of(state), token)
    return None if grant is None else (grant, token)


def new_session(grant: Grant, token: bytes, *, now: float | None = None) -> Session:
    """A session for `grant`, signed with the `token` that logged in."""
    expires = str(int((now if now is not None else time.time()) + SESSION_SECONDS))
    signed = expires if grant.admin else f"{expires}:{grant.key}"
    value = f"{expires}.{_sign(token, 'session', signed)}"
    if not grant.admin:
        value += f".{grant.key}"
    return Session(value=value, csrf=_sign(token, "csrf", value), grant=grant)


async def session_of(request: Request, state: GatewayState) -> Session | None:
    """The request's valid session, or None."""
    value = request.cookies.get(COOKIE, "")
    expires, _, rest = value.partition(".")
    signature, _, secret_key = rest.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return None
    if not secret_key:
        key = _key(state.settings)
        grant, signed = ADMIN, expires
    else:
        key = await tokens_of(state).token_of(secret_key)
        namespaces = namespaces_of_key(secret_key)
        if namespaces is None:
            return None
        grant, signed = Grant(namespaces=namespaces, key=secret_key), f"{expires}:{secret_key}"
    if key is None or not hmac.compare_digest(signature, _sign(key, "session", signed)):
        return None
    return Session(value=value, csrf=_sign(key, "csrf", value), grant=grant)


async def require_session(request: Request) -> Session:
    """Dependency of every console page: the session, or a redirect to the login form."""
    state: GatewayState = request.app.state.gateway
    session = await session_of(request, state)
    if session is None:
        raise HTTPException(status_code=303, headers={"Location": LOGIN_PATH})
    return session


def require_namespace(session: Session, namespace: str, what: str) -> None:
    """403 with a clear message when the session's token has no rights over `namespace`."""
    if not session.grant.allows(namespace):
        assert session.grant.namespaces is not None
        raise HTTPException(
            status_code=403,
            detail=(
                f"you are logged in with a namespace token for "
                f"{', '.join(sorted(session.grant.namespaces))}: it may not {what} in "
                f"namespace {namespace!r}"
            ),
        )


def check_csrf(session: Session, submitted: str | None) -> None:
    """Refuse a state-changing form without this session's CSRF token."""
    if not submitted or not hmac.compare_digest(submitted, session.csrf):
        raise HTTPException(
            status_code=403, detail="the form's CSRF token is missing or stale: reload the page"
        )


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
