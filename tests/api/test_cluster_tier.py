"""The API-server tier itself works: version, namespaces, RBAC and the controllers.

These guard the fixture every other API test relies on; each asserts something a user of
the tier would notice if it broke.
"""

from __future__ import annotations

import json
import time

import pytest

from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_cluster.versions import KUBERNETES_VERSION

pytestmark = pytest.mark.api

SERVICE_ACCOUNT_WAIT_SECONDS = 30.0


def test_server_reports_the_pinned_version(kube_api: KubeApi) -> None:
    answer = json.loads(kube_api.kubectl("version", "-o", "json").stdout)
    assert answer["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert answer["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_api_server_is_ready(kube_api: KubeApi) -> None:
    assert kube_api.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_namespace_can_be_created_and_listed(kube_api: KubeApi, namespace: str) -> None:
    found = kube_api.kubectl_json("get", "namespace", namespace)
    assert found["metadata"]["name"] == namespace
    assert found["status"]["phase"] == "Active"


def _can_i(kube_api: KubeApi, *args: str) -> bool:
    # `auth can-i` exits 1 for "no", so the exit code is the answer, not an error.
    result = kube_api.kubectl("auth", "can-i", *args, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_rbac_limits_an_impersonated_user(kube_api: KubeApi, namespace: str) -> None:
    kube_api.kubectl(
        "create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace
    )
    kube_api.kubectl(
        "create", "rolebinding", "jane-reads-pods", "--role=pod-reader", "--user=jane",
        "-n", namespace,
    )  # fmt: skip
    assert _can_i(kube_api, "list", "pods", "-n", namespace, "--as=jane")
    assert not _can_i(kube_api, "delete", "pods", "-n", namespace, "--as=jane")
    assert not _can_i(kube_api, "get", "secrets", "-n", namespace, "--as=jane")
    assert not _can_i(kube_api, "list", "pods", "-n", "default", "--as=jane")
    # The admin (system:masters) still can; the denial above is RBAC, not a broken server.
    assert _can_i(kube_api, "delete", "pods", "-n", namespace)


def test_controller_manager_creates_the_default_service_account(
    kube_api: KubeApi, namespace: str
) -> None:
    deadline = time.monotonic() + SERVICE_ACCOUNT_WAIT_SECONDS
    while True:
        result = kube_api.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False)
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, f"no default ServiceAccount: {result.stderr}"
        time.sleep(0.5)
    # The root CA the controller-manager publishes lets pods verify the API server.
    ca = kube_api.kubectl_json("get", "configmap", "kube-root-ca.crt", "-n", namespace)
    assert "BEGIN CERTIFICATE" in ca["data"]["ca.crt"]
