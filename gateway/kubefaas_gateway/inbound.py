"""What every invoke route does with an incoming request before the function sees it.

Both invoke routes (sync, raw ASGI; async, FastAPI) read the body with `read_body`, build
the headers passed on with `forward_headers`, and stop quietly on `ClientDisconnected`.

- The body is read up to a limit and no further: a `Content-Length` over it is refused
  before reading, a streamed body as soon as it crosses it (`PayloadTooLarge`, 413).
- Headers passed on drop the hop-by-hop ones (and those the `Connection` header names),
  the length (re-computed) and the ones the gateway sets itself, so a caller cannot forge
  its own deadline or invocation id; `X-Forwarded-For`/`-Proto` are added.
"""

from __future__ import annotations

from starlette.types import Receive, Scope

from kubefaas import wire
from kubefaas_gateway.errors import PayloadTooLarge
from kubefaas_gateway.invoker import InvocationType
from kubefaas_gateway.proxy import HOP_BY_HOP

# Request headers not forwarded (see the module docstring).
_DROP = frozenset(
    {
        *(name.encode() for name in (*HOP_BY_HOP, "content-length", "x-forwarded-for")),
        wire.INVOCATION_ID,
        wire.DEADLINE_MS,
        wire.INVOCATION_TYPE,
        wire.ATTEMPT,
    }
)
_STANDARD_CONNECTION_TOKENS = frozenset({"keep-alive", "close"})


class ClientDisconnected(Exception):
    """The caller went away while sending its body: there is nobody to answer."""


def forward_headers(scope: Scope) -> tuple[list[tuple[str, str]], int]:
    """Headers to pass to the instance, and the request's Content-Length (-1 if none)."""
    headers: list[tuple[str, str]] = []
    length = -1
    connection: bytes | None = None
    forwarded_for: str | None = None
    for name, value in scope["headers"]:
        if name in _DROP:
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                connection = value
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if connection is not None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        named = {t.strip().lower() for t in connection.decode("latin-1").split(",")}
        named -= _STANDARD_CONNECTION_TOKENS
        if named:
            headers = [(k, v) for k, v in headers if k not in named]
    client = scope.get("client")
    if client:
        address = client[0]
        headers.append(
            ("X-Forwarded-For", f"{forwarded_for}, {address}" if forwarded_for else address)
        )
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    return headers, length


async def read_body(
    receive: Receive, *, length: int, limit: int, kind: InvocationType = "sync"
) -> bytes:
    """The whole request body, refused (PayloadTooLarge) when its `length` (Content-Length,
    -1 if none) is over `limit`, or as soon as the streamed body passes it; `kind` names
    the limit in the message. Raises `ClientDisconnected` if the caller goes away."""
    if length > limit:
        raise PayloadTooLarge(_too_large(limit, kind))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large(limit, kind))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _too_large(limit: int, kind: InvocationType) -> str:
    which = "synchronous" if kind == "sync" else "asynchronous"
    return f"request body is larger than the {which} limit of {limit} bytes"
