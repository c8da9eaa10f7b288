"""The one SSRF rule of the core (`kubefaas.destinations`) and the operator's condition
built from it (docs/architecture.md, "Refused destinations"). IP literals only, no DNS."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kubefaas.api import parse_function
from kubefaas.destinations import AddressRule, parse_networks
from kubefaas_gateway.ssrf import CallbackGuard
from kubefaas_operator import destination_status
from kubefaas_operator.config import ConfigError, load_config
from tests.unit.test_chart import container, env_of, find, render, render_error

NOW = "2026-01-02T03:04:05Z"
LATER = "2026-01-02T04:00:00Z"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1, a loopback address"),
        ("http://localhost:8080/x", "localhost (127.0.0.1), a loopback address"),
        ("http://api.localhost/x", "api.localhost (127.0.0.1), a loopback address"),
        ("http://[::1]/x", "::1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
        ("https://10.96.0.1/", "10.96.0.1, a private address"),
        ("http://192.168.1.10:9000/", "192.168.1.10, a private address"),
        ("http://100.64.0.1/", "100.64.0.1, a private address"),
        ("http://[fd00::5]/", "fd00::5, a private address"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1, a private address"),
        ("http://0.0.0.0/", "0.0.0.0, a private address"),
    ],
)
def test_urls_naming_internal_addresses_are_refused_without_dns(url: str, why: str) -> None:
    assert AddressRule().url_refusal(url) == f"it goes to {why}"


@pytest.mark.parametrize(
    "url",
    ["https://8.8.8.8/hook", "http://[2606:4700::1]/x", "https://hooks.internal.test/x"],
)
def test_public_literals_and_names_are_left_to_the_send_time_check(url: str) -> None:
    # A name is judged by the gateway on what it resolves to when a result is sent.
    assert AddressRule().url_refusal(url) is None


def test_the_allow_and_block_lists_apply_to_urls() -> None:
    rule = AddressRule(
        allowed=parse_networks(["10.20.0.0/16"]), blocked=parse_networks(["8.8.8.0/24"])
    )
    assert rule.url_refusal("http://10.20.1.2/hook") is None
    assert rule.url_refusal("http://10.21.1.2/hook") == "it goes to 10.21.1.2, a private address"
    assert rule.url_refusal("https://8.8.8.8/") == (
        "it goes to 8.8.8.8, which is in KUBEFAAS_CALLBACK_BLOCKED_CIDRS"
    )


def test_the_rule_comes_from_the_same_variables_as_the_gateways() -> None:
    rule = AddressRule.from_environ({"KUBEFAAS_CALLBACK_ALLOWED_CIDRS": " 127.0.0.1/32, ::1 "})
    assert rule.url_refusal("http://127.0.0.1:9/") is None
    assert rule.url_refusal("http://[::1]:9/") is None
    with pytest.raises(ValueError, match="KUBEFAAS_CALLBACK_BLOCKED_CIDRS"):
        AddressRule.from_environ({"KUBEFAAS_CALLBACK_BLOCKED_CIDRS": "10.0.0.0/33"})
    config = load_config(
        namespaces=None,
        gateway_url=None,
        verbose=False,
        environ={"KUBEFAAS_CALLBACK_ALLOWED_CIDRS": "10.0.0.0/8"},
    )
    assert config.destination_rule.url_refusal("http://10.1.2.3/") is None
    with pytest.raises(ConfigError, match=r"KUBEFAAS_CALLBACK_ALLOWED_CIDRS: .*not-a-cidr"):
        load_config(
            namespaces=None,
            gateway_url=None,
            verbose=False,
            environ={"KUBEFAAS_CALLBACK_ALLOWED_CIDRS": "not-a-cidr"},
        )


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "fd00::1", "8.8.8.8", "100.64.1.1"]
)
def test_the_gateway_guard_is_the_same_rule(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert isinstance(CallbackGuard(), AddressRule)
    assert CallbackGuard().refusal(ip) == AddressRule().refusal(ip)


def function(async_: dict[str, Any] | None = None, generation: int = 3) -> Any:
    spec: dict[str, Any] = {
        "runtime": "python3.11",
        "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
    }
    if async_ is not None:
        spec["async"] = async_
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "team-a", "generation": generation},
            "spec": spec,
        }
    )


def test_a_refused_destination_makes_the_condition_false_naming_field_url_and_why() -> None:
    fn = function(
        {"onSuccess": {"url": "https://8.8.8.8/ok"}, "onFailure": {"url": "http://10.0.0.9/dlq"}}
    )
    ready = {"type": "Ready", "status": "True"}
    [kept, condition] = destination_status.with_destinations([ready], fn, AddressRule(), now=NOW)
    assert kept == ready
    assert condition == {
        "type": "DestinationsAllowed",
        "status": "False",
        "reason": "DestinationRefused",
        "message": (
            "onFailure URL 'http://10.0.0.9/dlq' is refused: it goes to 10.0.0.9, a private "
            "address. Results are not sent there; destinations may only go to public "
            "addresses unless KUBEFAAS_CALLBACK_ALLOWED_CIDRS names them"
        ),
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }


def test_the_condition_is_true_when_nothing_is_refused_and_absent_without_urls() -> None:
    allowed = function({"onSuccess": {"url": "https://8.8.8.8/ok"}})
    [condition] = destination_status.with_destinations([], allowed, AddressRule(), now=NOW)
    assert (condition["status"], condition["reason"]) == ("True", "NoneRefused")
    # Unchanged status keeps its transition time; a flip moves it.
    [again] = destination_status.with_destinations([condition], allowed, AddressRule(), now=LATER)
    assert again["lastTransitionTime"] == NOW
    refused = function({"onSuccess": {"url": "http://127.0.0.1/ok"}})
    [flipped] = destination_status.with_destinations([condition], refused, AddressRule(), now=LATER)
    assert (flipped["status"], flipped["lastTransitionTime"]) == ("False", LATER)
    # No URL destination (a function destination, or none): no condition at all.
    other = function({"onFailure": {"function": "collector"}})
    assert destination_status.with_destinations([flipped], other, AddressRule(), now=LATER) == []
    assert destination_status.with_destinations([], function(), AddressRule(), now=NOW) == []


def test_the_chart_gives_the_gateway_and_the_operator_the_same_rule() -> None:
    objects = render("callbackGuard.allowedCidrs={10.20.0.0/16,fd00::/8}")
    envs = [
        env_of(container(find(objects, "Deployment", f"kubefaas-{name}"), name))
        for name in ("gateway", "operator")
    ]
    for env in envs:
        assert env["KUBEFAAS_CALLBACK_ALLOWED_CIDRS"] == "10.20.0.0/16,fd00::/8"
        rule = AddressRule.from_environ(env)
        assert rule.url_refusal("http://10.20.3.4/hook") is None
        assert rule.url_refusal("http://10.21.3.4/hook") is not None
    defaults = render()
    for name in ("gateway", "operator"):
        env = env_of(container(find(defaults, "Deployment", f"kubefaas-{name}"), name))
        assert "KUBEFAAS_CALLBACK_ALLOWED_CIDRS" not in env
    assert "/callbackGuard/allowedCidrs/0" in render_error("callbackGuard.allowedCidrs={ten}")
