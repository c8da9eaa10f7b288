"""The HTTP hop from the gateway to a function instance.

One `aiohttp.ClientSession` per gateway, created in the app's lifespan, pools connections
to every instance: a session per request would pay a TCP handshake and client setup each
time. aiohttp's client is 2x httpx at one connection and 5-8x at 64 (docs/architecture.md,
"Measured facts"). The
session adds no headers of its own, keeps no cookies (one function's `Set-Cookie` must not
reach another), never follows redirects and never decompresses: the caller gets exactly
what the function answered.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import NamedTuple

import aiohttp
from aiohttp import hdrs
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict
from yarl import URL

from kubefaas import limits, wire
from kubefaas_gateway.errors import ResponseTooLarge
from kubefaas_gateway.settings import Settings

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Response headers the gateway sets again itself (length, date, its own invocation
# headers) or does not reveal (server).
_RESPONSE_SKIP = frozenset(
    {
        *(name.encode() for name in (*HOP_BY_HOP, "content-length", "date", "server")),
        wire.INVOCATION_ID,
        wire.COLD_START,
        wire.DURATION_MS,
    }
)


class InstanceUnreachable(Exception):
    """The connection to the instance could not be opened: the request was never sent,
    so it is safe to try another instance."""


class InstanceLost(Exception):
    """The instance closed or reset the connection before answering (it crashed or exited)."""


class UpstreamResponse(NamedTuple):
    status: int
    # Raw header pairs as received, minus hop-by-hop and the ones the gateway sets again.
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # Every header pair as received (the runtime's X-Duration-Ms is billed from it).
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()


class ForwardedRequest(aiohttp.ClientRequest):
    """A client request that carries exactly the caller's headers, cheaply.

    aiohttp adds Accept, Accept-Encoding and User-Agent unless told to skip them, and
    honouring a session's skip list rebuilds two header dicts per request; this gateway
    never wants them, so it skips them all with one shared, never-mutated dict. That
    includes the Content-Type aiohttp would invent for a body sent without one.
    """

    def update_headers(self, headers: LooseHeaders | None) -> None:
        # One copy in C instead of aiohttp's loop adding header by header in Python (the
        # session has already merged them into a CIMultiDict); Host as aiohttp would set it
        # unless the caller's is forwarded.
        self.headers = CIMultiDict(headers or ())
        if hdrs.HOST not in self.headers:
            host = self.url.host_port_subcomponent
            assert host is not None  # instance URLs are absolute
            self.headers[hdrs.HOST] = host

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _SKIP_ALL_AUTO_HEADERS


_SKIP_ALL_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
)


def create_session(settings: Settings) -> aiohttp.ClientSession:
    """The gateway's one pooled client session to instances (call inside a running loop)."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_pool_size,
        keepalive_timeout=settings.upstream_keepalive_seconds,
        use_dns_cache=False,  # instances are addressed by IP
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        request_class=ForwardedRequest,
        timeout=aiohttp.ClientTimeout(total=None),
        raise_for_status=False,
    )
    # Once-only (docs/security.md): aiohttp would resend a GET/PUT/DELETE whose pooled
    # connection dropped after sending, although the instance may have run it; the
    # invoker retries only a refused connection, which provably never reached one.
    session._retry_connection = False
    return session


@functools.lru_cache(maxsize=4096)
def instance_url(host: str, port: int, path: str, query: str) -> URL:
    """The instance URL for an already percent-encoded `path` and `query` (no re-quoting).

    Cached: aiohttp reads several derived properties of the URL per request, and a URL
    object computes each once, so reusing it for the common paths saves that work.
    """
    return URL.build(
        scheme="http", host=host, port=port, path=path, query_string=query, encoded=True
    )


@functools.lru_cache(maxsize=1024)
def _timeout(centiseconds: int) -> aiohttp.ClientTimeout:
    """Timeouts rounded up to 10 ms and shared: one object per distinct value, not per
    request (a warm call to a function always asks for about the same)."""
    return aiohttp.ClientTimeout(total=centiseconds / 100)


async def forward(
    session: aiohttp.ClientSession,
    *,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    body: bytes,
    within: float,
    limit: int = limits.RESPONSE_LIMIT_BYTES,
) -> UpstreamResponse:
    """Send one request to an instance and read its whole answer.

    Raises `InstanceUnreachable` (not sent), `InstanceLost` (sent, no answer),
    `TimeoutError` (no answer within `within` seconds) or `ResponseTooLarge` (an answer
    over `limit` bytes, refused by its Content-Length or as soon as the stream crosses it).
    """
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            timeout=_timeout(math.ceil(within * 100)),
        ) as response:
            length = response.content_length
            if length is not None and length <= limit:
                payload = await response.read()
            else:
                payload = await _read_bounded(response, limit)
            kept = [pair for pair in response.raw_headers if pair[0].lower() not in _RESPONSE_SKIP]
            return UpstreamResponse(response.status, kept, payload, response.raw_headers)
    except TimeoutError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise InstanceUnreachable(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise InstanceLost(str(exc) or type(exc).__name__) from exc


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `response`, refused once it passes `limit` (the connection is then
    dropped, not drained: the rest is never read)."""
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(
            f"the function's answer is {response.content_length} bytes, more than the "
            f"limit of {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(
                f"the function's answer is larger than the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)
