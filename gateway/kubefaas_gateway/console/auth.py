"""Console login: the admin token, exchanged once for a session cookie (docs/console.md,
"Login and CSRF").

- `POST /console/login` compares the submitted token with the gateway's admin token
  (`hmac.compare_digest`) and sets `kubefaas_console`: `HttpOnly` (no script reads it),
  `SameSite=Strict` (no other site's page sends it), `Secure` when served over https,
  `Path=/console`. Its value is an expiry and an HMAC of it keyed by the admin token, so
  the gateway keeps no session table and changing the token logs everyone out.
- Every form that changes something carries a CSRF token, an HMAC of the session value;
  a POST without the right one is refused (403) even if a browser sent the cookie. The
  login form itself checks `Origin` when the browser sends it.

Namespace tokens (the auth work) plug in at `authenticate`: it returns who logged in.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from kubefaas_gateway.settings import Settings

COOKIE = "kubefaas_console"
SESSION_SECONDS = 8 * 3600
LOGIN_PATH = "/console/login"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its cookie value and the CSRF token its forms carry."""

    value: str
    csrf: str
    subject: str = "admin"


def _key(settings: Settings) -> bytes | None:
    token = settings.admin_token
    if token is None or not token.get_secret_value():
        return None
    return token.get_secret_value().encode()


def _sign(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def authenticate(settings: Settings, presented: str) -> bool:
    """Whether `presented` is the admin token (the one credential the console knows now)."""
    key = _key(settings)
    return key is not None and hmac.compare_digest(presented.strip().encode(), key)


def new_session(settings: Settings, *, now: float | None = None) -> Session:
    key = _key(settings)
    assert key is not None  # only after authenticate()
    expires = str(int((now if now is not None else time.time()) + SESSION_SECONDS))
    value = f"{expires}.{_sign(key, 'session', expires)}"
    return Session(value=value, csrf=_sign(key, "csrf", value))


def session_of(request: Request, settings: Settings) -> Session | None:
    """The request's valid session, or None."""
    key = _key(settings)
    value = request.cookies.get(COOKIE, "")
    expires, _, signature = value.partition(".")
    if key is None or not expires.isdigit():
        return None
    if not hmac.compare_digest(signature, _sign(key, "session", expires)):
        return None
    if int(expires) < time.time():
        return None
    return Session(value=value, csrf=_sign(key, "csrf", value))


def require_session(request: Request) -> Session:
    """Dependency of every console page: the session, or a redirect to the login form."""
    settings: Settings = request.app.state.gateway.settings
    session = session_of(request, settings)
    if session is None:
        raise HTTPException(status_code=303, headers={"Location": LOGIN_PATH})
    return session


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
