"""What the pure status computation says about a Function, given its Deployment as read."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kubefaas.api import Function, parse_function
from kubefaas_operator import children, status
from kubefaas_operator.status import NotReady

UID = "0b7c6a5e-0000-4000-8000-000000000001"
IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}
NOW = "2026-01-02T03:04:05Z"
GATEWAY = "http://gw.example"

BuildStatus = Callable[..., dict[str, Any]]


def function() -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "hello", "namespace": "team-a", "uid": UID, "generation": 4},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
            },
        }
    )


def live_deployment(replicas: int, ready: int = 0, **fields: Any) -> dict[str, Any]:
    """The Function's Deployment as the API returns it, with `replicas` and `ready` pods."""
    obj = children.build_deployment(function(), image_for_runtime=IMAGES, replicas_hint=replicas)
    obj["status"] = {"replicas": replicas, "readyReplicas": ready, **fields}
    return obj


@pytest.fixture
def build() -> BuildStatus:
    """`status.build_status` for the test Function: a Deployment at 0 replicas, no problem,
    no previous status, at `NOW`, unless the test says otherwise."""

    def build_status(**overrides: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "fn": function(),
            "deployment": live_deployment(0),
            "problem": None,
            "gateway_url": GATEWAY,
            "previous": None,
            "now": NOW,
        }
        arguments.update(overrides)
        return status.build_status(**arguments)

    return build_status


def ready_of(found_status: dict[str, Any]) -> dict[str, Any]:
    found = status.ready_condition_of(found_status)
    assert found is not None
    return dict(found)


def test_status_of_a_function_scaled_to_zero_is_ready(build: BuildStatus) -> None:
    written = build()
    ready = ready_of(written)
    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero")
    assert ready["lastTransitionTime"] == NOW
    assert ready["observedGeneration"] == 4
    assert written["replicas"] == 0
    assert written["readyReplicas"] == 0
    assert written["url"] == "http://gw.example/function/team-a/hello"
    assert written["observedGeneration"] == 4


def test_status_running_and_deployed_follow_ready_replicas(build: BuildStatus) -> None:
    running = build(deployment=live_deployment(3, ready=2))
    assert ready_of(running)["reason"] == "Running"
    assert "2 of 3" in ready_of(running)["message"]
    assert (running["replicas"], running["readyReplicas"]) == (3, 2)
    starting = build(deployment=live_deployment(1, ready=0))
    assert (ready_of(starting)["status"], ready_of(starting)["reason"]) == ("True", "Deployed")


def test_a_problem_makes_the_function_not_ready_with_its_reason_and_message(
    build: BuildStatus,
) -> None:
    written = build(deployment=None, problem=NotReady("CodeNotFound", "ConfigMap 'src' not found"))
    ready = ready_of(written)
    assert (ready["status"], ready["reason"]) == ("False", "CodeNotFound")
    assert "'src' not found" in ready["message"]


def test_a_stuck_rollout_or_refused_pods_are_not_ready() -> None:
    stuck = live_deployment(
        1,
        conditions=[
            {"type": "Progressing", "status": "False", "message": "ProgressDeadlineExceeded"}
        ],
    )
    ready, reason, _ = status.deployment_readiness(stuck)
    assert (ready, reason) == (False, "RolloutStuck")
    refused = live_deployment(
        1,
        conditions=[{"type": "ReplicaFailure", "status": "True", "message": "forbidden: psa"}],
    )
    ready, reason, message = status.deployment_readiness(refused)
    assert (ready, reason, message) == (False, "ReplicaFailure", "forbidden: psa")


def test_transition_time_moves_only_when_readiness_flips(build: BuildStatus) -> None:
    earlier = build(now="2020-01-01T00:00:00Z")
    same = build(deployment=live_deployment(2, ready=2), previous=earlier)
    assert ready_of(same)["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = build(deployment=None, problem=NotReady("ApplyFailed", "403"), previous=same)
    assert ready_of(flipped)["lastTransitionTime"] == NOW


def test_conditions_of_others_are_kept(build: BuildStatus) -> None:
    written = build(previous={"conditions": [{"type": "Throttled", "status": "False"}]})
    assert [c["type"] for c in written["conditions"]] == ["Throttled", "Ready"]


def test_refresh_follows_the_deployment_but_keeps_a_problem_found_by_reconcile(
    build: BuildStatus,
) -> None:
    ok = build()
    refreshed = status.refresh_status(previous=ok, deployment=live_deployment(2, 2), now=NOW)
    assert (refreshed["replicas"], refreshed["readyReplicas"]) == (2, 2)
    assert ready_of(refreshed)["reason"] == "Running"
    assert ready_of(refreshed)["observedGeneration"] == 4
    broken = build(deployment=None, problem=NotReady("CodeNotFound", "missing"))
    refreshed = status.refresh_status(previous=broken, deployment=live_deployment(1, 1), now=NOW)
    assert "conditions" not in refreshed
    assert refreshed["readyReplicas"] == 1


def test_status_differs_ignores_only_transition_times(build: BuildStatus) -> None:
    one = build(now="2020-01-01T00:00:00Z")
    two = copy.deepcopy(one)
    two["conditions"][0]["lastTransitionTime"] = NOW
    assert not status.status_differs(one, two)
    two["replicas"] = 1
    assert status.status_differs(one, two)
    assert status.status_differs(None, one)


def test_invalid_spec_status_names_the_problem() -> None:
    written = status.build_problem_status(
        previous=None, problem=NotReady("InvalidSpec", "spec.memory: bad"), generation=2, now=NOW
    )
    assert ready_of(written)["reason"] == "InvalidSpec"
    assert written["observedGeneration"] == 2
