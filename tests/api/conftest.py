"""API-server tier: every test here runs against a real kube-apiserver + etcd.

The ``kube_api`` fixture comes from ``kubefaas_cluster.pytest_plugin``; it starts a private
cluster once per session (or uses ``$KUBEFAAS_TEST_KUBECONFIG``) and fails loudly, with the
component logs, when the cluster cannot start.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubefaas_cluster.pytest_plugin import KubeApi, kube_api

__all__ = ["kube_api", "namespace"]

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``api`` so ``-m "not api"`` leaves the tier out."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.api)


@pytest.fixture
def namespace(kube_api: KubeApi) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards without waiting for finalizers."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_api.kubectl("create", "namespace", name)
    yield name
    kube_api.kubectl("delete", "namespace", name, "--wait=false", check=False)
