"""Where callbacks may go: the SSRF guard of `X-Callback-Url` and URL destinations
(docs/security.md; docs/architecture.md, "Auth and limits").

A callback is a POST the gateway makes from inside the cluster, to a URL a caller chose;
unguarded, it reaches what the caller cannot (the API server, cloud metadata at
169.254.169.254, Redis, function pods). So the address a URL names, and every address its
host resolves to, must not be loopback, link-local, private (RFC 1918, unique-local,
CGNAT), multicast, reserved or unspecified, nor in `KUBEFAAS_CALLBACK_BLOCKED_CIDRS` (the
cluster's service and pod ranges when they are not private), unless
`KUBEFAAS_CALLBACK_ALLOWED_CIDRS` names it.

Checked twice: at submit time (`check_url`: a refused `X-Callback-Url` is 400 and nothing is
stored), and at send time on the addresses actually connected to (`GuardedResolver`, used by
the callback session only), so a name that resolved to a public address at submit and to
127.0.0.1 later (DNS rebinding) is still refused. Callbacks never follow redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from kubefaas_gateway.errors import BadRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_SECONDS = 5.0


class CallbackRefused(BadRequest):
    """A callback or destination URL that names (or resolves to) a refused address."""


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


class CallbackGuard:
    def __init__(self, *, allowed: Iterable[Network] = (), blocked: Iterable[Network] = ()) -> None:
        self._allowed = tuple(allowed)
        self._blocked = tuple(blocked)

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be called back, or None if it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self._allowed):
            return None
        if any(address in net for net in self._blocked):
            return "in KUBEFAAS_CALLBACK_BLOCKED_CIDRS"
        for quality in (
            "loopback",
            "link_local",
            "private",
            "multicast",
            "reserved",
            "unspecified",
        ):
            if getattr(address, f"is_{quality}"):
                return quality.replace("_", "-")
        if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
            return "private"
        return None

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


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT, not `is_private` in every Python


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
