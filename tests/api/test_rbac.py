"""The operator's RBAC (deploy/operator-rbac.yaml) grants exactly what it needs, and suffices.

`kubectl auth can-i --list` as the operator's ServiceAccount must show exactly the intended
rules (no wildcard, no Secrets); then the real operator, holding only a token of that
ServiceAccount, reconciles a Function cluster-wide, repairs it and posts events.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas_cluster.pytest_plugin import KubeApi
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "function.yaml"
DEPLOY = ROOT / "deploy"
NAMESPACE = "kubefaas-system"
ACCOUNT = "kubefaas-operator"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
WAIT_SECONDS = 60.0

# The intended rules: (resource[.group][/subresource], verb). The manifest, the chart and
# the operator's needs must all agree with this table.
CRUD = ("get", "list", "watch", "create", "update", "patch", "delete")
INTENDED = {
    *(("customresourcedefinitions.apiextensions.k8s.io", v) for v in ("list", "watch")),
    *(("namespaces", v) for v in ("list", "watch")),
    *(("functions.kubefaas.io", v) for v in ("get", "list", "watch", "patch", "update")),
    *(("functions.kubefaas.io/status", v) for v in ("get", "patch", "update")),
    *(("configmaps", v) for v in CRUD),
    *(("services", v) for v in CRUD),
    *(("deployments.apps", v) for v in CRUD),
    *(("networkpolicies.networking.k8s.io", v) for v in CRUD),
    *(("deployments.apps/scale", v) for v in ("get", "patch", "update")),
    *(("pods", v) for v in ("get", "list", "watch")),
    # Build Jobs (docs/packaging.md, "On a cluster: the build Job").
    *(("jobs.batch", v) for v in ("get", "list", "watch", "create", "delete")),
    ("events", "create"),
    ("events.events.k8s.io", "create"),
}
# What every authenticated identity may do (system:basic-user), not granted by us.
EVERYONE = {
    ("selfsubjectreviews.authentication.k8s.io", "create"),
    ("selfsubjectaccessreviews.authorization.k8s.io", "create"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
}


@pytest.fixture(scope="module")
def installed(kube_api: KubeApi) -> Iterator[None]:
    """The CRD and the plain manifests' namespace + RBAC, removed again afterwards."""
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )
    kube_api.kubectl(
        "apply", "-f", str(DEPLOY / "namespace.yaml"), "-f", str(DEPLOY / "operator-rbac.yaml")
    )
    yield
    kube_api.kubectl(
        "delete", "-f", str(DEPLOY / "operator-rbac.yaml"), "--wait=false", check=False
    )
    kube_api.kubectl("delete", "-f", str(DEPLOY / "namespace.yaml"), "--wait=false", check=False)


def can_i_list(kube_api: KubeApi, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs of `kubectl auth can-i --list` as the operator."""
    table = kube_api.kubectl("auth", "can-i", "--list", f"--as={USER}", "-n", namespace).stdout
    pairs: set[tuple[str, str]] = set()
    for line in table.splitlines()[1:]:
        if not line or line[0].isspace():
            continue  # non-resource URLs (/healthz, /version...) every client may read
        columns = re.split(r"\s{2,}", line.strip())
        resource, verbs = columns[0], columns[-1]
        for verb in verbs.strip("[]").split():
            pairs.add((resource, verb))
    return pairs


def can_i(kube_api: KubeApi, *args: str) -> bool:
    result = kube_api.kubectl("auth", "can-i", *args, f"--as={USER}", check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_the_manifest_has_no_wildcards_and_no_secrets() -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "operator-rbac.yaml").read_text()) if d]
    (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert "secrets" not in rule["resources"], rule
    (binding,) = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}
    ]


def test_can_i_list_shows_exactly_the_intended_rules(
    kube_api: KubeApi, installed: None, namespace: str
) -> None:
    listed = can_i_list(kube_api, namespace)
    assert listed - EVERYONE == INTENDED, (
        f"granted but not intended: {sorted(listed - EVERYONE - INTENDED)}\n"
        f"intended but not granted: {sorted(INTENDED - listed)}"
    )
    assert not any("*" in resource or verb == "*" for resource, verb in listed)
    assert not any(resource.startswith("secrets") for resource, _ in listed)


def test_the_operator_cannot_read_secrets_or_touch_pods_or_rbac(
    kube_api: KubeApi, installed: None, namespace: str
) -> None:
    assert can_i(kube_api, "create", "deployments", "-n", namespace)
    assert can_i(kube_api, "patch", "functions.kubefaas.io/status", "-n", namespace)
    assert not can_i(kube_api, "get", "secrets", "-n", namespace)
    assert not can_i(kube_api, "list", "secrets", "--all-namespaces")
    assert not can_i(kube_api, "create", "pods", "-n", namespace)
    assert not can_i(kube_api, "delete", "functions.kubefaas.io", "-n", namespace)
    assert not can_i(kube_api, "create", "clusterrolebindings")
    assert not can_i(kube_api, "create", "pods/exec", "-n", namespace)


def token_kubeconfig(kube_api: KubeApi, path: Path) -> Path:
    """A kubeconfig that authenticates with a token of the operator's ServiceAccount."""
    token = kube_api.kubectl(
        "create", "token", ACCOUNT, "-n", NAMESPACE, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(kube_api.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in admin["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in admin["clusters"]}
    cluster = clusters[contexts[admin["current-context"]]["cluster"]]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(what: str, check: Any, operator: OperatorProcess) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out waiting for {what}\n--- operator ---\n{operator.logs()}",
                pytrace=False,
            )
        time.sleep(0.25)


def test_the_operator_works_with_only_these_permissions(
    kube_api: KubeApi, installed: None, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = token_kubeconfig(kube_api, tmp_path / "operator.kubeconfig")
    # The token really is the operator's identity, and it is not an admin.
    who = kube_api.kubectl(f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json")
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == USER
    operator = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "operator.log").start()
    try:
        name = f"rbac-{uuid.uuid4().hex[:6]}"
        manifest = {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
            },
        }
        kube_api.kubectl("apply", "-f", "-", input=json.dumps(manifest))

        def ready() -> bool:
            fn = kube_api.kubectl_json("get", "fn", name, "-n", namespace)
            conditions = (fn.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for("Ready=True", ready, operator)
        old = kube_api.kubectl_json("get", "deployment", name, "-n", namespace)
        kube_api.kubectl("delete", "deployment", name, "-n", namespace, "--wait=false")

        def recreated() -> bool:
            result = kube_api.kubectl(
                "get", "deployment", name, "-n", namespace, "-o", "json", check=False
            )
            if result.returncode != 0:
                return False
            return bool(json.loads(result.stdout)["metadata"]["uid"] != old["metadata"]["uid"])

        wait_for("the Deployment recreated", recreated, operator)

        def posted() -> bool:
            events = kube_api.kubectl_json("get", "events", "-n", namespace)["items"]
            return any(e["involvedObject"].get("name") == name for e in events)

        wait_for("an event on the Function", posted, operator)
        # An RBAC denial reads 'User "system:serviceaccount:..." cannot <verb> resource'.
        logs = operator.logs(tail=200_000)
        assert f'User "{USER}" cannot' not in logs, logs
    finally:
        operator.stop()
