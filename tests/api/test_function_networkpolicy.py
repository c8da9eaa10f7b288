"""Every Function's NetworkPolicy on a real API server (docs/architecture.md, "Function
network policies").

The real operator runs with the settings and the RBAC the chart gives it with every
namespace watched (the default), holding only a token of the chart's ServiceAccount. A
Function in a namespace nobody named at install time gets its policy, which is recreated
when deleted, repaired when edited, deleted when the setting is switched off, and
garbage-collected with the Function (the controller-manager runs in this tier). Nothing is
enforced here (no network plugin); tests/unit/test_chart_networkpolicy.py shows the
selectors match the real pods.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_operator import network_policy
from kubefaas_operator.config import load_config
from kubefaas_operator.reconcile import parse
from tests.api.test_chart_rbac import Install, helm_template, install_rbac, token_kubeconfig
from tests.operator_process import OperatorProcess

WAIT_SECONDS = 60.0
T = TypeVar("T")


@pytest.fixture
def everywhere(kube_api: KubeApi) -> Iterator[Install]:
    yield from install_rbac(kube_api, watch=False)


def chart_operator_env(install: Install) -> dict[str, str]:
    """The operator's environment as the chart renders it (plain values only)."""
    objects = helm_template(install.release, install.namespace)
    [deployment] = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def wait(what: str, check: Callable[[], T | None], operator: OperatorProcess) -> T:
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


def get(kube_api: KubeApi, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = kube_api.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_a_function_anywhere_gets_its_policy_kept_in_line_and_collected_with_it(
    kube_api: KubeApi, everywhere: Install, tmp_path: Path
) -> None:
    environ = chart_operator_env(everywhere)
    assert environ["KUBEFAAS_FUNCTION_NETWORK_POLICY"] == "true"
    kubeconfig = token_kubeconfig(everywhere, tmp_path / "operator.kubeconfig")

    def start(**env: str) -> OperatorProcess:
        return OperatorProcess(
            kubeconfig=kubeconfig,
            log_path=tmp_path / "operator.log",
            env={**environ, "KUBEFAAS_OPERATOR_HEALTH_PORT": "0", **env},
        ).start()

    ns = everywhere.unwatched  # no value of the chart names this namespace
    name = f"np-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "python3.11",
            "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
        },
    }
    operator = start()
    try:
        kube_api.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        policy = wait(
            "the NetworkPolicy", lambda: get(kube_api, "networkpolicy", name, ns), operator
        )
        fn_body = kube_api.kubectl_json("get", "fn", name, "-n", ns)
        config = load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)
        wanted = network_policy.for_config(config, parse(fn_body))
        # Admitted as built: nothing dropped or defaulted away, so no repair loop.
        assert policy["spec"] == wanted["spec"]
        [peer] = policy["spec"]["ingress"][0]["from"]
        assert peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": everywhere.namespace}
        }
        (owner,) = policy["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Function", name, True)
        assert owner["uid"] == fn_body["metadata"]["uid"]

        # Deleted by hand: recreated by the child watch.
        kube_api.kubectl("delete", "networkpolicy", name, "-n", ns)

        def recreated() -> dict[str, Any] | None:
            found = get(kube_api, "networkpolicy", name, ns)
            uid = policy["metadata"]["uid"]
            return found if found is not None and found["metadata"]["uid"] != uid else None

        assert wait("the NetworkPolicy recreated", recreated, operator)["spec"] == wanted["spec"]

        # Opened to every pod by hand: repaired.
        patch = [{"op": "add", "path": "/spec/ingress/0/from/-", "value": {"podSelector": {}}}]
        kube_api.kubectl(
            "patch", "networkpolicy", name, "-n", ns, "--type=json", f"-p={json.dumps(patch)}"
        )

        def repaired() -> dict[str, Any] | None:
            found = get(kube_api, "networkpolicy", name, ns)
            return found if found is not None and found["spec"] == wanted["spec"] else None

        wait("the NetworkPolicy repaired", repaired, operator)
        logs = operator.logs(tail=200_000)
        assert f'User "{everywhere.account("operator")}" cannot' not in logs, logs
        assert "Forbidden" not in logs, logs
    finally:
        operator.stop()

    # Switched off: the operator deletes the policies it made.
    operator = start(KUBEFAAS_FUNCTION_NETWORK_POLICY="false")
    try:
        wait(
            "the NetworkPolicy deleted",
            lambda: get(kube_api, "networkpolicy", name, ns) is None,
            operator,
        )
        kube_api.kubectl("get", "deployment", name, "-n", ns)  # the rest stays
    finally:
        operator.stop()

    # Back on, then the Function deleted: the garbage collector takes its policy along.
    operator = start()
    try:
        wait("the NetworkPolicy again", lambda: get(kube_api, "networkpolicy", name, ns), operator)
        kube_api.kubectl("delete", "fn", name, "-n", ns, "--wait=false")
        wait(
            "the NetworkPolicy garbage-collected",
            lambda: get(kube_api, "networkpolicy", name, ns) is None,
            operator,
        )
    finally:
        operator.stop()
