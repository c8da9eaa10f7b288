"""Every Function's NetworkPolicy (docs/architecture.md, "Function network policies"): the
builder selects exactly the pods the Deployment builder makes, and the reconcile creates,
repairs and (when switched off) deletes it like the other children, against the in-memory
API of `tests.fake_kube`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kubefaas import naming, wire
from kubefaas.api import Function, parse_function
from kubefaas_operator import apply, children, drift, network_policy, reconcile, resync
from kubefaas_operator.config import (
    DEFAULT_FUNCTION_EGRESS,
    ConfigError,
    OperatorConfig,
    load_config,
)
from kubefaas_operator.context import OperatorContext
from tests.fake_kube import FakeKube
from tests.unit.test_chart_networkpolicy import container_port, matches

NS = "team-a"
GATEWAY_NS = "kubefaas-system"
GATEWAY_LABELS = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/instance": "kf"}
IMAGES = {"python3.11": "runtime:1"}
CONFIG = OperatorConfig(
    runtime_images=IMAGES,
    gateway_url="http://gw",
    network_policy=True,
    gateway_namespace=GATEWAY_NS,
    gateway_selector="app.kubernetes.io/component=gateway,app.kubernetes.io/instance=kf",
)
UID = "0a1b2c3d-0000-4000-8000-000000000001"


def function(name: str = "hello", namespace: str = NS, uid: str = UID) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
            "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
        }
    )


def policy(fn: Function, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    return network_policy.for_config(config, fn)


def template(fn: Function) -> dict[str, Any]:
    deployment = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)
    result: dict[str, Any] = deployment["spec"]["template"]
    return result


def test_the_policy_selects_exactly_this_functions_pods() -> None:
    fn = function()
    spec = policy(fn)["spec"]
    deployment = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)
    assert spec["podSelector"] == deployment["spec"]["selector"]
    assert matches(spec["podSelector"], template(fn)["metadata"]["labels"])
    other = template(function("other", uid="0a1b2c3d-0000-4000-8000-000000000002"))
    assert not matches(spec["podSelector"], other["metadata"]["labels"])
    assert not matches(spec["podSelector"], GATEWAY_LABELS)
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}


def test_ingress_is_the_gateway_pods_of_the_release_namespace_on_the_runtime_port() -> None:
    fn = function()
    [rule] = policy(fn)["spec"]["ingress"]
    assert rule["ports"] == [{"port": container_port(template(fn), "http"), "protocol": "TCP"}]
    assert rule["ports"][0]["port"] == wire.RUNTIME_PORT
    [peer] = rule["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": GATEWAY_NS}},
        "podSelector": {"matchLabels": GATEWAY_LABELS},
    }
    # Unset, the gateway namespace means any namespace (as for the autoscaler).
    anywhere = dataclasses.replace(CONFIG, gateway_namespace=None)
    [peer] = policy(fn, anywhere)["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"] == {}


def test_egress_is_dns_the_gateway_and_the_configured_rules() -> None:
    dns, to_gateway, *others = policy(function())["spec"]["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert to_gateway["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert to_gateway["to"] == policy(function())["spec"]["ingress"][0]["from"]
    assert others == [dict(rule) for rule in DEFAULT_FUNCTION_EGRESS]
    narrow = dataclasses.replace(CONFIG, function_egress=())
    assert len(policy(function(), narrow)["spec"]["egress"]) == 2


def test_the_policy_is_a_child_controlled_by_its_function() -> None:
    fn = function()
    meta = policy(fn)["metadata"]
    assert (meta["name"], meta["namespace"]) == ("hello", NS)
    assert meta["labels"] == children.function_labels(fn)
    assert meta["ownerReferences"] == [children.owner_reference(fn)]
    assert (
        network_policy.build_network_policy(
            fn, gateway_namespace=GATEWAY_NS, gateway_labels=GATEWAY_LABELS, egress=[]
        )["metadata"]
        == meta
    )


def test_settings_come_from_the_environment_and_bad_ones_are_refused() -> None:
    def load(**environ: str) -> OperatorConfig:
        return load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)

    assert not load().network_policy
    on = load(
        KUBEFAAS_FUNCTION_NETWORK_POLICY="true",
        KUBEFAAS_GATEWAY_SELECTOR="a=b, c==d",
        KUBEFAAS_FUNCTION_EGRESS='[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]',
    )
    assert on.network_policy
    assert on.gateway_labels == {"a": "b", "c": "d"}
    assert on.function_egress == ({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},)
    assert load(KUBEFAAS_FUNCTION_EGRESS="null").function_egress == ()
    with pytest.raises(ConfigError, match="KUBEFAAS_FUNCTION_EGRESS must be a JSON list"):
        load(KUBEFAAS_FUNCTION_EGRESS='{"to": []}')
    with pytest.raises(ConfigError, match="KUBEFAAS_FUNCTION_EGRESS is not JSON"):
        load(KUBEFAAS_FUNCTION_EGRESS="[")
    with pytest.raises(ConfigError, match="KUBEFAAS_GATEWAY_SELECTOR must be key=value"):
        load(KUBEFAAS_FUNCTION_NETWORK_POLICY="on", KUBEFAAS_GATEWAY_SELECTOR="a!=b")
    # Off, a set-based selector is fine: only the autoscaler uses it then.
    assert load(KUBEFAAS_GATEWAY_SELECTOR="a in (b)").gateway_selector == "a in (b)"


# --- the reconcile ------------------------------------------------------------------------


def np_path(name: str = "hello") -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{name}"


def add_function(kube: FakeKube, name: str = "hello") -> dict[str, Any]:
    body = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
    }
    return kube.put_object(apply.function_path(NS, name), body)


def run(kube: FakeKube, config: OperatorConfig = CONFIG, *, new: bool = False) -> list[str]:
    body = kube.get(apply.function_path(NS, "hello"))
    assert body is not None
    outcome = reconcile.reconcile(kube, config, body, now=lambda: "2026-01-02T03:04:05Z", new=new)
    assert outcome.problem is None, outcome.problem
    return outcome.actions


def test_a_reconcile_creates_the_policy_and_a_second_one_writes_nothing() -> None:
    kube = FakeKube()
    fn = reconcile.parse(add_function(kube))
    assert "created NetworkPolicy hello" in run(kube, new=True)
    live = kube.objects[np_path()]
    assert live["spec"] == policy(fn)["spec"]
    assert drift.controller_uid(live) == fn.metadata.uid
    writes = len(kube.writes)
    assert "unchanged NetworkPolicy hello" in run(kube)
    assert len(kube.writes) == writes


def test_a_hand_edited_policy_is_repaired() -> None:
    kube = FakeKube()
    fn = reconcile.parse(add_function(kube))
    run(kube, new=True)
    live = kube.objects[np_path()]
    # Someone lets every pod in: that must not stay.
    live["spec"]["ingress"][0]["from"].append({"podSelector": {}})
    child = kube.put_object(np_path(), live)
    assert reconcile.child_drift("NetworkPolicy", fn, child, CONFIG) == ["spec.ingress"]
    [action] = [a for a in run(kube) if "NetworkPolicy" in a]
    assert action == "repaired NetworkPolicy hello (drifted: spec.ingress)"
    assert kube.objects[np_path()]["spec"] == policy(fn)["spec"]


def test_a_deleted_policy_is_recreated_by_the_child_watch() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube, new=True)
    gone = kube.objects.pop(np_path())
    outcome = reconcile.on_child_event(
        kube, CONFIG, kind="NetworkPolicy", event_type="DELETED", child=gone
    )
    assert "created NetworkPolicy hello" in outcome.actions
    assert np_path() in kube.objects


def test_switched_off_the_operator_deletes_its_policies_and_creates_none() -> None:
    off = dataclasses.replace(CONFIG, network_policy=False)
    kube = FakeKube()
    add_function(kube)
    run(kube, new=True)
    assert "deleted NetworkPolicy hello (network policies off)" in run(kube, off)
    assert np_path() not in kube.objects
    run(kube, off)
    assert np_path() not in kube.objects
    # A policy of that name the Function does not control is someone else's: left alone.
    kube.put_object(np_path(), {"kind": "NetworkPolicy", "metadata": {"name": "hello"}})
    run(kube, off)
    assert np_path() in kube.objects


def test_a_policy_of_that_name_owned_by_someone_else_is_a_name_conflict() -> None:
    kube = FakeKube()
    add_function(kube)
    kube.put_object(np_path(), {"kind": "NetworkPolicy", "metadata": {"name": "hello"}})
    body = kube.get(apply.function_path(NS, "hello"))
    assert body is not None
    outcome = reconcile.reconcile(kube, CONFIG, body, now=lambda: "2026-01-02T03:04:05Z")
    assert outcome.problem is not None
    assert "NetworkPolicy 'hello' already exists" in outcome.problem.message
    assert naming.FUNCTION_LABEL not in (kube.objects[np_path()]["metadata"].get("labels") or {})


def test_the_resync_recreates_a_policy_a_missed_event_left_missing() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube, new=True)
    context = OperatorContext(config=CONFIG, kube=kube)
    assert resync.resync_once(context) == []
    del kube.objects[np_path()]
    assert resync.resync_once(context) == [((NS, "hello"), "NetworkPolicy missing")]
    assert np_path() in kube.objects
    # Off, a missing policy is no reason to reconcile.
    del kube.objects[np_path()]
    off = OperatorContext(config=dataclasses.replace(CONFIG, network_policy=False), kube=kube)
    assert resync.resync_once(off) == []
