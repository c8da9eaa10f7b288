"""The one rule of where callbacks and URL destinations may go (docs/security.md,
"Callbacks and URL destinations (SSRF)"; docs/architecture.md, "Refused destinations").

A callback is a POST the gateway makes from inside the cluster to a URL a caller or a
Function's author chose; unguarded, it reaches what they cannot (the API server, cloud
metadata at 169.254.169.254, Redis, function pods). So an address may not be loopback,
link-local, private (RFC 1918, unique-local, CGNAT), multicast, reserved or unspecified,
nor in `KUBEFAAS_CALLBACK_BLOCKED_CIDRS` (the cluster's service and pod ranges when they
are not private), unless `KUBEFAAS_CALLBACK_ALLOWED_CIDRS` names it.

Pure, no I/O: the gateway applies `AddressRule.refusal` to every address a URL's host
resolves to, at submit and at send (`kubefaas_gateway.ssrf`); the operator, which never
resolves names, applies `AddressRule.url_refusal` to what a URL says by itself (an IP
literal, or `localhost`) and reports it as a condition on the Function.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_CIDRS_ENV = "KUBEFAAS_CALLBACK_ALLOWED_CIDRS"
BLOCKED_CIDRS_ENV = "KUBEFAAS_CALLBACK_BLOCKED_CIDRS"

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT, not `is_private` in every Python
_QUALITIES = ("loopback", "link_local", "private", "multicast", "reserved", "unspecified")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or bare addresses) as networks; raises ValueError naming a bad one."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def split_cidrs(text: str) -> tuple[str, ...]:
    """A comma-separated list, as the two variables hold it."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


class AddressRule:
    """Which addresses callbacks may reach: public ones, `allowed` ones, never `blocked`."""

    def __init__(self, *, allowed: Iterable[Network] = (), blocked: Iterable[Network] = ()) -> None:
        self._allowed = tuple(allowed)
        self._blocked = tuple(blocked)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AddressRule:
        """From `KUBEFAAS_CALLBACK_ALLOWED_CIDRS` / `_BLOCKED_CIDRS` (comma-separated);
        raises ValueError naming the variable and the bad value."""
        networks: dict[str, tuple[Network, ...]] = {}
        for name in (ALLOWED_CIDRS_ENV, BLOCKED_CIDRS_ENV):
            try:
                networks[name] = parse_networks(split_cidrs(environ.get(name, "")))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return cls(allowed=networks[ALLOWED_CIDRS_ENV], blocked=networks[BLOCKED_CIDRS_ENV])

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be called back (e.g. "private"), or None if it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self._allowed):
            return None
        if any(address in net for net in self._blocked):
            return f"in {BLOCKED_CIDRS_ENV}"
        for quality in _QUALITIES:
            if getattr(address, f"is_{quality}"):
                return quality.replace("_", "-")
        if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
            return "private"
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why `url` is refused by what it says alone, without resolving a name, or None.

        An IP-literal host is judged by `refusal`; `localhost` and `*.localhost` are
        loopback by definition (RFC 6761). Any other name is decided when it is resolved.
        """
        try:
            host = urlsplit(url).hostname
        except ValueError as exc:
            return f"it is not a valid URL ({exc})"
        if not host:
            return "it has no host"
        if host == "localhost" or host.endswith(".localhost"):
            address: Address = ipaddress.ip_address("127.0.0.1")
            shown = f"{host} (127.0.0.1)"
        else:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return None
            shown = str(address)
        why = self.refusal(address)
        if why is None:
            return None
        if why.startswith("in "):
            return f"it goes to {shown}, which is {why}"
        return f"it goes to {shown}, a {why} address"
