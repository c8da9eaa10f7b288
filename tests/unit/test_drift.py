"""Drift: what counts as a hand edit to repair, and what the repair keeps."""

from __future__ import annotations

import copy
from typing import Any

from kubefaas import naming
from kubefaas.api import parse_function
from kubefaas_operator import children, drift

UID = "0b7c6a5e-0000-4000-8000-000000000002"
IMAGES = {"python3.11": "kubefaas-runtime:0.1.0"}


def fn_doc() -> dict[str, Any]:
    return {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
    }


def desired_deployment() -> dict[str, Any]:
    fn = parse_function(fn_doc())
    return children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: defaults added, quantities canonical, replicas moved."""
    live = copy.deepcopy(obj)
    live["metadata"].update({"resourceVersion": "7", "uid": "child-uid", "generation": 1})
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    spec = live["spec"]
    spec["progressDeadlineSeconds"] = 600
    spec["replicas"] = 5  # the autoscaler's
    pod = spec["template"]["spec"]
    pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "x"})
    c = pod["containers"][0]
    c.update({"terminationMessagePath": "/dev/termination-log"})
    c["resources"]["requests"]["memory"] = "268435456"  # same size, other spelling
    c["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    live["status"] = {"replicas": 5}
    return live


def test_a_deployment_as_the_api_server_returns_it_has_no_drift() -> None:
    desired = desired_deployment()
    assert drift.deployment_drift(desired, as_served(desired)) == []


def test_replicas_are_never_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["spec"]["replicas"] = 0
    assert drift.deployment_drift(desired, live) == []


def test_an_image_changed_by_hand_is_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert drift.deployment_drift(desired, live) == ["spec.template.spec.containers[0].image"]


def test_an_env_var_added_or_changed_by_hand_is_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    assert drift.deployment_drift(desired, live) == ["spec.template.spec.containers[0].env"]
    live = as_served(desired)
    live["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "9999"
    assert drift.deployment_drift(desired, live) == [
        "spec.template.spec.containers[0].env[0].value"
    ]


def test_a_sidecar_or_a_loosened_security_context_is_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    assert "spec.template.spec.containers" in drift.deployment_drift(desired, live)
    live = as_served(desired)
    ctx = live["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    ctx["readOnlyRootFilesystem"] = False
    assert drift.deployment_drift(desired, live) == [
        "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem"
    ]


def test_a_removed_label_or_owner_reference_is_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    del live["metadata"]["labels"][naming.FUNCTION_LABEL]
    live["metadata"]["ownerReferences"] = []
    found = drift.deployment_drift(desired, live)
    assert f"metadata.labels.{naming.FUNCTION_LABEL}" in found
    assert "metadata.ownerReferences" in found


def test_extra_labels_and_annotations_of_others_are_not_drift() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["metadata"]["labels"]["team"] = "a"
    live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "t"
    assert drift.deployment_drift(desired, live) == []


def test_repair_restores_the_template_and_keeps_replicas_rollout_restart_and_version() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "t"
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    body = drift.repaired_deployment(desired, live)
    assert body["spec"]["replicas"] == 5
    assert body["spec"]["template"]["spec"] == desired["spec"]["template"]["spec"]
    annotations = body["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == "t"
    assert naming.CODE_CHECKSUM_ANNOTATION in annotations
    assert body["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1"}
    assert "status" not in body
    assert "managedFields" not in body["metadata"]
    assert drift.deployment_drift(desired, as_served(body) | {"spec": body["spec"]}) == []


def test_repair_raises_replicas_to_min_scale_but_never_lowers_them() -> None:
    desired = desired_deployment()
    desired["spec"]["replicas"] = 3  # minScale
    live = as_served(desired)
    live["spec"]["replicas"] = 1
    assert drift.repaired_deployment(desired, live)["spec"]["replicas"] == 3
    live["spec"]["replicas"] = 8
    assert drift.repaired_deployment(desired, live)["spec"]["replicas"] == 8


def test_a_different_selector_needs_a_new_deployment() -> None:
    desired = desired_deployment()
    live = as_served(desired)
    assert not drift.selector_changed(desired, live)
    live["spec"]["selector"]["matchLabels"]["extra"] = "1"
    assert drift.selector_changed(desired, live)


def test_service_keeps_its_cluster_ip_when_repaired() -> None:
    fn = parse_function(fn_doc())
    desired = children.build_service(fn)
    live = copy.deepcopy(desired)
    live["metadata"]["resourceVersion"] = "3"
    live["spec"].update(
        {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "sessionAffinity": "None"}
    )
    assert drift.service_drift(desired, live) == []
    live["spec"]["ports"][0]["targetPort"] = 9999
    live["spec"]["selector"]["app"] = "other"
    found = drift.service_drift(desired, live)
    assert "spec.ports[0].targetPort" in found
    assert "spec.selector" in found
    body = drift.repaired_service(desired, live)
    assert body["spec"]["clusterIP"] == "10.96.0.9"
    assert body["spec"]["ports"] == desired["spec"]["ports"]
    assert body["spec"]["selector"] == desired["spec"]["selector"]


def test_code_configmap_must_hold_exactly_the_inline_files() -> None:
    fn = parse_function(fn_doc())
    desired = children.build_config_map(fn)
    live = copy.deepcopy(desired)
    assert drift.config_map_drift(desired, live) == []
    live["data"]["evil.py"] = "import os"
    assert drift.config_map_drift(desired, live) == ["data"]
    assert drift.repaired_config_map(desired, live)["data"] == {"main.py": "x = 1\n"}


def test_quantities_compare_by_value() -> None:
    assert drift.differences({"memory": "1536Mi"}, {"memory": "1.5Gi"}) == []
    assert drift.differences({"cpu": "500m"}, {"cpu": "0.5"}) == []
    assert drift.differences({"memory": "1Gi"}, {"memory": "1G"}) == ["memory"]


def test_only_the_functions_own_controller_reference_makes_a_child_its_own() -> None:
    fn = parse_function(fn_doc())
    built = desired_deployment()
    assert drift.controlled_by(built, fn)

    def with_owner(**ref: Any) -> dict[str, Any]:
        child = copy.deepcopy(built)
        child["metadata"]["ownerReferences"] = [{**child["metadata"]["ownerReferences"][0], **ref}]
        return child

    # Same name and labels, but owned by an earlier Function of that name, by another
    # kind or API group, only as a non-controller owner, or by nothing at all.
    assert not drift.controlled_by(with_owner(uid="another-uid"), fn)
    assert not drift.controlled_by(with_owner(kind="Deployment"), fn)
    assert not drift.controlled_by(with_owner(apiVersion="example.com/v1"), fn)
    assert not drift.controlled_by(with_owner(controller=False), fn)
    unowned = copy.deepcopy(built)
    del unowned["metadata"]["ownerReferences"]
    assert not drift.controlled_by(unowned, fn)
    assert unowned["metadata"]["labels"] == built["metadata"]["labels"]
