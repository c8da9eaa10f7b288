"""The chart's NetworkPolicies select the pods that really exist (docs/architecture.md,
"Network policies"): function pods as the operator's children builder labels them, the
gateway and operator pods as their Deployments label them. Function pods get their policy
from the operator (one a Function, in any namespace), configured by the environment the
chart gives it: these tests build it from that environment. A policy whose selector
matches no pod protects nothing and fails no install, so these tests match the selectors
against the labels the code puts on pods rather than against copied strings.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from kubefaas.api import Function, parse_function
from kubefaas_operator import children, network_policy
from kubefaas_operator.config import DEFAULT_FUNCTION_EGRESS, OperatorConfig, load_config
from tests.unit.test_chart import CHART, NAMESPACE, find, render

IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}


def function(namespace: str) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {
                "name": "hello",
                "namespace": namespace,
                "uid": "0a1b2c3d-0000-4000-8000-000000000001",
                "generation": 1,
            },
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
            },
        }
    )


def function_pod(namespace: str) -> dict[str, Any]:
    """Pod metadata and spec of a Function's instances, as the operator builds them."""
    fn = function(namespace)
    deployment = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector against a label map ({} selects everything)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values")
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str) -> dict[str, str]:
    """The label the API server puts on every namespace."""
    return {"kubernetes.io/metadata.name": name}


def peer_admits(policy: dict[str, Any], peer: dict[str, Any], namespace: str, labels: Any) -> bool:
    """Whether a peer of `policy` admits a pod with these labels in `namespace`: without a
    namespaceSelector a peer means the policy's own namespace; ipBlocks are not pods."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = matches(peer["namespaceSelector"], namespace_labels(namespace))
    else:
        namespace_ok = namespace == policy["metadata"]["namespace"]
    return namespace_ok and matches(peer.get("podSelector", {}), labels)


def pod_labels(objects: tuple[dict[str, Any], ...], deployment: str) -> dict[str, str]:
    labels: dict[str, str] = find(objects, "Deployment", deployment)["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels


def container_port(template: dict[str, Any], name: str) -> int:
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
    raise AssertionError(f"no container port named {name}")


def operator_config(objects: tuple[dict[str, Any], ...]) -> OperatorConfig:
    """The operator's settings from the environment the chart gives its container."""
    [container] = find(objects, "Deployment", "kubefaas-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)


def function_policy(objects: tuple[dict[str, Any], ...], namespace: str) -> dict[str, Any]:
    """The NetworkPolicy the chart's operator gives a Function in `namespace`."""
    config = operator_config(objects)
    assert config.network_policy
    found = network_policy.for_config(config, function(namespace))
    # Namespaced like its Function, wherever that lives.
    assert found["metadata"]["namespace"] == namespace
    return found


def test_function_pods_of_any_namespace_admit_only_the_gateway() -> None:
    objects = render()
    assert not any(
        o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] != NAMESPACE for o in objects
    )
    gateway = pod_labels(objects, "kubefaas-gateway")
    operator = pod_labels(objects, "kubefaas-operator")
    for namespace in ("default", "team-a", "nobody-listed-this"):
        policy = function_policy(objects, namespace)
        pod = function_pod(namespace)
        spec = policy["spec"]
        assert matches(spec["podSelector"], pod["metadata"]["labels"]), namespace
        # The platform's own pods are not function pods.
        assert not matches(spec["podSelector"], gateway)
        assert not matches(spec["podSelector"], operator)
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        [rule] = spec["ingress"]
        # The port the runtime listens on, as the children builder declares it.
        assert [p["port"] for p in rule["ports"]] == [container_port(pod, "http")]
        assert any(peer_admits(policy, p, NAMESPACE, gateway) for p in rule["from"])
        assert not any(peer_admits(policy, p, NAMESPACE, operator) for p in rule["from"])
        # Nobody else: neither another function nor a pod of another namespace.
        assert not any(
            peer_admits(policy, p, namespace, pod["metadata"]["labels"]) for p in rule["from"]
        )
        assert not any(peer_admits(policy, p, "elsewhere", gateway) for p in rule["from"])


def test_function_egress_is_dns_the_gateway_and_everything_but_link_local() -> None:
    objects = render()
    policy = function_policy(objects, "team-a")
    egress = policy["spec"]["egress"]
    dns, to_gateway, *others = egress
    assert "to" not in dns  # wherever DNS is served
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    gateway_template = find(objects, "Deployment", "kubefaas-gateway")["spec"]["template"]
    [port] = to_gateway["ports"]
    assert container_port(gateway_template, port["port"]) == 8080  # the gateway's http port
    gateway = gateway_template["metadata"]["labels"]
    assert any(peer_admits(policy, p, NAMESPACE, gateway) for p in to_gateway["to"])
    blocks = [p["ipBlock"] for rule in others for p in rule["to"]]
    metadata = [ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")]
    internet = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:4700::1")]

    def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(
            address.version == ipaddress.ip_network(b["cidr"]).version
            and address in ipaddress.ip_network(b["cidr"])
            and not any(
                address.version == ipaddress.ip_network(x).version
                and address in ipaddress.ip_network(x)
                for x in b.get("except", [])
            )
            for b in blocks
        )

    assert all(allowed(a) for a in internet)
    assert not any(allowed(a) for a in metadata)


def test_the_egress_default_is_one_value_the_chart_and_the_operator_share() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["functionEgress"] == list(DEFAULT_FUNCTION_EGRESS)
    assert operator_config(render()).function_egress == DEFAULT_FUNCTION_EGRESS


def test_function_egress_can_be_narrowed_to_dns_and_the_gateway() -> None:
    objects = render("networkPolicy.functionEgress=null")
    egress = function_policy(objects, "team-a")["spec"]["egress"]
    assert len(egress) == 2
    assert all("ipBlock" not in p for rule in egress for p in rule.get("to", []))


def test_switched_off_the_operator_makes_no_function_policies() -> None:
    objects = render("networkPolicy.enabled=false")
    assert "NetworkPolicy" not in {o["kind"] for o in objects}
    assert not operator_config(objects).network_policy


def test_the_gateway_admits_function_pods_and_the_operator_whatever_else_it_refuses() -> None:
    objects = render(
        "watchNamespaces={team-a}",
        "networkPolicy.gatewayIngressFrom[0].namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=ingress",
    )
    policy = find(objects, "NetworkPolicy", "kubefaas-gateway")
    assert matches(policy["spec"]["podSelector"], pod_labels(objects, "kubefaas-gateway"))
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    function = function_pod("team-a")["metadata"]["labels"]
    assert any(peer_admits(policy, p, "team-a", function) for p in peers)
    assert not any(peer_admits(policy, p, "team-b", function) for p in peers)
    assert any(
        peer_admits(policy, p, NAMESPACE, pod_labels(objects, "kubefaas-operator")) for p in peers
    )
    assert any(peer_admits(policy, p, "ingress", {"app": "nginx"}) for p in peers)
    assert not any(peer_admits(policy, p, "elsewhere", {"app": "curl"}) for p in peers)
    operator = find(objects, "NetworkPolicy", "kubefaas-operator")
    assert matches(operator["spec"]["podSelector"], pod_labels(objects, "kubefaas-operator"))


def test_with_every_namespace_watched_the_gateway_admits_function_pods_of_any() -> None:
    objects = render()
    policy = find(objects, "NetworkPolicy", "kubefaas-gateway")
    public, internal = policy["spec"]["ingress"]
    assert "from" not in public  # gatewayIngressFrom empty: anyone may invoke
    function = function_pod("anywhere")["metadata"]["labels"]
    assert any(peer_admits(policy, p, "anywhere", function) for p in internal["from"])
    assert not any(peer_admits(policy, p, "anywhere", {"app": "curl"}) for p in internal["from"])
