"""The operator tells, on the Function, that a URL destination will be refused
(docs/architecture.md, "Refused destinations"): `DestinationsAllowed=False`, reason
`DestinationRefused`, naming the field, the URL and why; cleared when fixed; absent when
there is no URL destination. Against a real API server; nothing is ever sent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubefaas_cluster.pytest_plugin import KubeApi
from tests.api.test_operator import CRD, Cluster, cluster, function

__all__ = ["cluster"]


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    """The CRD, served. (`kubectl wait` right after a first apply can fail while the
    object has no status yet, so this polls the Established condition instead.)"""
    kube_api.kubectl("apply", "-f", str(CRD))
    deadline = time.monotonic() + 60
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    while True:
        found = kube_api.kubectl(
            "get", "crd", "functions.kubefaas.io", "-o", f"jsonpath={jsonpath}", check=False
        )
        if found.stdout.strip() == "True":
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the Function CRD is not Established: {found.stderr}", pytrace=False)
        time.sleep(0.25)


def destinations(c: Cluster, name: str) -> dict[str, Any] | None:
    """The DestinationsAllowed condition once the status reflects the spec."""
    fn = c.get("fn", name)
    if fn is None:
        return None
    status = fn.get("status") or {}
    if status.get("observedGeneration") != fn["metadata"]["generation"]:
        return None
    for condition in status.get("conditions") or []:
        if condition["type"] == "DestinationsAllowed":
            found: dict[str, Any] = condition
            return found
    return {}


def wait_condition(c: Cluster, name: str, status: str | None) -> dict[str, Any]:
    """Wait for DestinationsAllowed=`status` (None: no such condition)."""

    def check() -> dict[str, Any] | None:
        condition = destinations(c, name)
        if condition is None:
            return None
        if status is None:
            return {"absent": True} if condition == {} else None
        return condition if condition.get("status") == status else None

    return c.wait(f"DestinationsAllowed={status} on {name}", check)


def test_a_refused_destination_url_is_a_condition_until_fixed(cluster: Cluster) -> None:
    refused = "http://169.254.169.254/latest/meta-data/"
    cluster.apply(
        function(
            "dest",
            **{"async": {"onSuccess": {"url": refused}, "onFailure": {"url": "http://[::1]:9/x"}}},
        )
    )
    condition = wait_condition(cluster, "dest", "False")
    assert condition["reason"] == "DestinationRefused"
    message = condition["message"]
    assert f"onSuccess URL '{refused}' is refused" in message, message
    assert "169.254.169.254, a link-local address" in message, message
    assert "onFailure URL 'http://[::1]:9/x' is refused" in message, message
    assert "::1, a loopback address" in message, message
    assert "KUBEFAAS_CALLBACK_ALLOWED_CIDRS" in message, message
    # The function itself is deployed: only its results' destinations are refused.
    assert cluster.wait_ready("dest")["status"] == "True"

    cluster.apply(function("dest", **{"async": {"onSuccess": {"url": "https://8.8.8.8/hook"}}}))
    fixed = wait_condition(cluster, "dest", "True")
    assert fixed["reason"] == "NoneRefused"

    cluster.apply(function("dest", **{"async": {"onFailure": {"function": "other"}}}))
    wait_condition(cluster, "dest", None)


def test_localhost_is_refused_without_resolving_it(cluster: Cluster) -> None:
    cluster.apply(
        function("local", **{"async": {"onFailure": {"url": "http://localhost:8080/dlq"}}})
    )
    condition = wait_condition(cluster, "local", "False")
    assert "localhost (127.0.0.1), a loopback address" in condition["message"]
