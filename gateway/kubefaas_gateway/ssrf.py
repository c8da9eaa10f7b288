"""Where callbacks may go: the SSRF guard of `X-Callback-Url` and URL destinations
(docs/security.md; docs/architecture.md, "Auth and limits").

The rule of which addresses are refused is the core's (`kubefaas.destinations`), shared
with the operator, which reports destinations refused by what their URL says alone. Here
it is applied to what a URL's host resolves to. Checked twice: at submit time
(`check_url`: a refused `X-Callback-Url` is 400 and nothing is stored), and at send time on
the addresses actually connected to (`GuardedResolver`, used by the callback session only),
so a name that resolved to a public address at submit and to 127.0.0.1 later (DNS
rebinding) is still refused. Callbacks never follow redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from kubefaas.destinations import AddressRule, parse_networks
from kubefaas_gateway.errors import BadRequest

RESOLVE_TIMEOUT_SECONDS = 5.0

__all__ = [
    "CallbackGuard",
    "CallbackRefused",
    "GuardedResolver",
    "callback_session",
    "parse_networks",
]


class CallbackRefused(BadRequest):
    """A callback or destination URL that names (or resolves to) a refused address."""


class CallbackGuard(AddressRule):
    """The core's `AddressRule`, applied to URLs and resolved addresses."""

    def check_address(self, address: str, url: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        why = self.refusal(ip)
        if why is not None:
            raise CallbackRefused(
                f"callback URL {url[:200]!r} goes to {ip}, a {why} address; callbacks may "
                "only go to public addresses unless KUBEFAAS_CALLBACK_ALLOWED_CIDRS names it"
            )

    async def check_url(self, url: str) -> None:
        """Raise `CallbackRefused` unless every address of `url`'s host may be called."""
        host = urlsplit(url).hostname
        if not host:
            raise CallbackRefused(f"callback URL {url[:200]!r} has no host")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            pass
        else:
            self.check_address(host, url)
            return
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, None, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            raise CallbackRefused(
                f"callback URL {url[:200]!r}: cannot resolve {host}: {exc}"
            ) from None
        for info in infos:
            self.check_address(str(info[4][0]), url)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing every resolved address the guard refuses."""

    def __init__(self, guard: CallbackGuard) -> None:
        self._guard = guard
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            why = self._guard.refusal(ipaddress.ip_address(result["host"]))
            if why is not None:
                raise OSError(f"{host} resolves to {result['host']}, a {why} address (refused)")
        return results

    async def close(self) -> None:
        await self._inner.close()


def callback_session(guard: CallbackGuard, **kwargs: Any) -> aiohttp.ClientSession:
    """A session for callbacks only: guarded resolution, no redirects, no cookies."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(guard), use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), **kwargs)
