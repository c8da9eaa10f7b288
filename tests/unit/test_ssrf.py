"""The SSRF guard's address rules (docs/security.md); no traffic, IP literals only."""

from __future__ import annotations

import ipaddress

import pytest

from kubefaas_gateway.ssrf import CallbackGuard, CallbackRefused, parse_networks


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("10.96.0.1", "private"),  # a typical service CIDR
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "private"),  # CGNAT
        ("0.0.0.0", "private"),  # also unspecified; private is checked first
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("224.0.0.1", "multicast"),
    ],
)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    assert CallbackGuard().refusal(ipaddress.ip_address(address)) == why


def test_public_addresses_pass_and_lists_override() -> None:
    guard = CallbackGuard(
        allowed=parse_networks(["127.0.0.1/32"]), blocked=parse_networks(["203.0.113.0/24"])
    )
    assert guard.refusal(ipaddress.ip_address("8.8.8.8")) is None
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert (
        guard.refusal(ipaddress.ip_address("203.0.113.9")) == "in KUBEFAAS_CALLBACK_BLOCKED_CIDRS"
    )


async def test_check_url_names_the_address_and_the_way_out() -> None:
    with pytest.raises(CallbackRefused) as refused:
        await CallbackGuard().check_url("http://169.254.169.254/latest/meta-data/")
    assert refused.value.status == 400
    assert "169.254.169.254, a link-local address" in refused.value.message
    assert "KUBEFAAS_CALLBACK_ALLOWED_CIDRS" in refused.value.message
    await CallbackGuard().check_url("https://8.8.8.8/hook")  # checked, never called
