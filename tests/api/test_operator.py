"""The operator, run as `kubefaas operator`, against a real API server (no kubelet).

Each test starts its own operator process watching the test's namespace and reads the
cluster with kubectl, as a user would. The controller-manager runs in this tier, so the
garbage collector and the Deployment controller act as in a real cluster; pods are
created but never scheduled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubefaas import naming
from kubefaas_cluster.pytest_plugin import KubeApi
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "function.yaml"
WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25

T = TypeVar("T")


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


@dataclass
class Cluster:
    """One test's namespace, its operator, and the questions a user would ask kubectl."""

    api: KubeApi
    namespace: str
    operator: OperatorProcess

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.api.kubectl(*args, "-n", self.namespace, input=input).stdout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.api.kubectl(
            "get", kind, name, "-n", self.namespace, "-o", "json", check=False
        )
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = self.api.kubectl_json(*args)["items"]
        return items

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(document))

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = WAIT_SECONDS) -> T:
        """Poll `check` until it returns something; fail with the operator's log if not."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:.0f}s waiting for {what}\n"
                    f"--- operator (alive: {self.operator.alive()}) ---\n"
                    f"{self.operator.logs()}",
                    pytrace=False,
                )
            time.sleep(POLL_SECONDS)

    def ready(self, name: str) -> dict[str, Any] | None:
        """The Ready condition of Function `name` once its status reflects the spec."""
        fn = self.get("fn", name)
        if fn is None:
            return None
        status = fn.get("status") or {}
        if status.get("observedGeneration") != fn["metadata"]["generation"]:
            return None
        for condition in status.get("conditions") or []:
            if condition["type"] == "Ready":
                found: dict[str, Any] = condition
                return found
        return None

    def wait_ready(self, name: str, status: str = "True") -> dict[str, Any]:
        return self.wait(
            f"Function {name} Ready={status}",
            lambda: (c := self.ready(name)) and c["status"] == status and c,
        )


@pytest.fixture
def cluster(kube_api: KubeApi, crd: None, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    operator = OperatorProcess(
        kubeconfig=kube_api.kubeconfig,
        log_path=tmp_path / "operator.log",
        namespaces=[namespace],
    ).start()
    try:
        yield Cluster(api=kube_api, namespace=namespace, operator=operator)
    finally:
        operator.stop()


def function(name: str = "hello", **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name},
        "spec": {
            "runtime": "python3.11",
            "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
        },
    }
    doc["spec"].update(spec)
    return doc


def template_of(deployment: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = template_of(deployment)["spec"]["containers"][0]
    return found


def checksum_of(deployment: dict[str, Any]) -> str:
    value: str = template_of(deployment)["metadata"]["annotations"][naming.CODE_CHECKSUM_ANNOTATION]
    return value


# --- tests ----------------------------------------------------------------------------------


def test_a_function_gets_owned_children_and_becomes_ready_scaled_to_zero(
    cluster: Cluster,
) -> None:
    cluster.apply(function())
    ready = cluster.wait_ready("hello")
    assert ready["reason"] == "ScaledToZero"
    fn = cluster.get("fn", "hello")
    assert fn is not None
    status = fn["status"]
    assert (status["replicas"], status["readyReplicas"]) == (0, 0)
    assert status["url"].endswith(f"/function/{cluster.namespace}/hello")
    uid = fn["metadata"]["uid"]
    children = {
        "deployment": cluster.get("deployment", "hello"),
        "service": cluster.get("service", "hello"),
        "configmap": cluster.get("configmap", naming.code_config_map_name("hello")),
    }
    for kind, child in children.items():
        assert child is not None, kind
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("Function", uid, True)
        assert child["metadata"]["labels"][naming.FUNCTION_LABEL] == "hello"
    deployment = children["deployment"]
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    pod = template_of(deployment)["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert container_of(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
    # kubectl get fn shows the status through the printer columns.
    table = cluster.kubectl("get", "fn", "hello")
    assert "True" in table
    assert status["url"] in table


def test_updating_the_code_updates_the_configmap_and_rolls_the_pod_template(
    cluster: Cluster,
) -> None:
    cluster.apply(function())
    cluster.wait_ready("hello")
    before = cluster.get("deployment", "hello")
    assert before is not None
    new_code = "def handler(event, context):\n    return 2\n"
    cluster.apply(function(code={"inline": {"main.py": new_code}}))
    cluster.wait_ready("hello")
    code = cluster.get("configmap", "hello-code")
    assert code is not None
    assert code["data"] == {"main.py": new_code}
    after = cluster.get("deployment", "hello")
    assert after is not None
    assert checksum_of(after) != checksum_of(before)
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    env = {e["name"]: e["value"] for e in container_of(after)["env"]}
    assert env["KUBEFAAS_FUNCTION_VERSION"] == "2"


def test_a_deployment_deleted_by_hand_is_recreated(cluster: Cluster) -> None:
    cluster.apply(function())
    cluster.wait_ready("hello")
    old = cluster.get("deployment", "hello")
    assert old is not None
    cluster.kubectl("delete", "deployment", "hello", "--wait=false")

    def recreated() -> dict[str, Any] | None:
        found = cluster.get("deployment", "hello")
        fresh = found is not None and found["metadata"]["uid"] != old["metadata"]["uid"]
        return found if fresh else None

    new = cluster.wait("a new Deployment", recreated)
    assert checksum_of(new) == checksum_of(old)
    cluster.kubectl("delete", "service", "hello", "--wait=false")
    cluster.wait("the Service back", lambda: cluster.get("service", "hello"))


def test_a_deployment_edited_by_hand_is_repaired(cluster: Cluster) -> None:
    cluster.apply(function(env=[{"name": "GREETING", "value": "hi"}]))
    cluster.wait_ready("hello")
    original = cluster.get("deployment", "hello")
    assert original is not None
    image = container_of(original)["image"]
    cluster.kubectl("set", "image", "deployment/hello", "function=evil.example/miner:1")
    cluster.kubectl("set", "env", "deployment/hello", "GREETING=hacked", "EXTRA=1")

    def repaired() -> dict[str, Any] | None:
        found = cluster.get("deployment", "hello")
        if found is None:
            return None
        env = {e["name"]: e["value"] for e in container_of(found)["env"]}
        ok = container_of(found)["image"] == image and env.get("GREETING") == "hi"
        return found if ok and "EXTRA" not in env else None

    cluster.wait("the Deployment repaired", repaired)
    # The repair is reported where users look: events on the Function.
    events = cluster.items("events")
    assert any(
        e["involvedObject"]["kind"] == "Function" and e["reason"] == "Repaired" for e in events
    ), [e["message"] for e in events]


def test_replicas_set_by_the_scaler_are_kept_across_a_function_update(
    cluster: Cluster,
) -> None:
    cluster.apply(function())
    cluster.wait_ready("hello")
    cluster.kubectl("scale", "deployment/hello", "--replicas=3")
    # The Function's status follows the Deployment: three pods exist (none can run here).
    cluster.wait(
        "status.replicas = 3",
        lambda: (fn := cluster.get("fn", "hello")) and fn["status"].get("replicas") == 3,
    )
    ready = cluster.ready("hello")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Deployed")

    cluster.apply(function(env=[{"name": "NEW", "value": "1"}], memory="512Mi"))
    cluster.wait_ready("hello")

    def updated() -> dict[str, Any] | None:
        found = cluster.get("deployment", "hello")
        if found is None:
            return None
        names = {e["name"] for e in container_of(found)["env"]}
        return found if "NEW" in names else None

    deployment = cluster.wait("the template updated", updated)
    assert deployment["spec"]["replicas"] == 3
    assert container_of(deployment)["resources"]["limits"]["memory"] == "512Mi"


def test_min_scale_sets_the_replicas_of_a_new_deployment(cluster: Cluster) -> None:
    cluster.apply(function(scaling={"minScale": 2, "maxScale": 4}))
    cluster.wait_ready("hello")
    deployment = cluster.get("deployment", "hello")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2


def test_operator_restarted_mid_way_converges_without_duplicates(
    cluster: Cluster, tmp_path: Path
) -> None:
    names = [f"fn-{i:02d}" for i in range(20)]
    items = [function(name) for name in names]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": items})
    )
    # Crash it (SIGKILL, no cleanup) as soon as it has begun creating children.
    cluster.wait(
        "the first Deployment",
        lambda: cluster.items("deployments"),
        timeout=WAIT_SECONDS,
    )
    cluster.operator.kill()
    cluster.operator = OperatorProcess(
        kubeconfig=cluster.api.kubeconfig,
        log_path=tmp_path / "operator-restarted.log",
        namespaces=[cluster.namespace],
    ).start()
    try:
        for name in names:
            cluster.wait_ready(name)
        selector = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY}"
        for kind in ("deployments", "services", "configmaps"):
            found = sorted(i["metadata"]["name"] for i in cluster.items(kind, selector))
            expected = (
                [naming.code_config_map_name(n) for n in names] if kind == "configmaps" else names
            )
            assert found == sorted(expected), kind
    finally:
        cluster.operator.stop()


def test_deleting_the_function_removes_its_children(cluster: Cluster) -> None:
    cluster.apply(function())
    cluster.wait_ready("hello")
    cluster.kubectl("delete", "fn", "hello", "--wait=true", "--timeout=60s")
    selector = f"{naming.FUNCTION_LABEL}=hello"

    def all_gone() -> bool:
        return not any(
            cluster.items(kind, selector) for kind in ("deployments", "services", "configmaps")
        )

    cluster.wait("the children garbage-collected", all_gone)


def test_code_not_found_until_the_configmap_is_created(cluster: Cluster) -> None:
    cluster.apply(function(code={"configMap": {"name": "src"}}))
    ready = cluster.wait_ready("hello", status="False")
    assert ready["reason"] == "CodeNotFound"
    assert "src" in ready["message"]
    assert cluster.get("deployment", "hello") is None
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "src"},
            "data": {"main.py": "def handler(event, context):\n    return 3\n"},
        }
    )
    ready = cluster.wait_ready("hello")
    assert ready["reason"] == "ScaledToZero"
    deployment = cluster.get("deployment", "hello")
    assert deployment is not None
    volumes = {v["name"]: v for v in template_of(deployment)["spec"]["volumes"]}
    assert volumes["code"]["configMap"]["name"] == "src"


def test_the_operator_leaves_other_namespaces_alone(cluster: Cluster, kube_api: KubeApi) -> None:
    other = f"{cluster.namespace}-other"
    kube_api.kubectl("create", "namespace", other)
    try:
        kube_api.kubectl("apply", "-n", other, "-f", "-", input=json.dumps(function("elsewhere")))
        cluster.apply(function())
        cluster.wait_ready("hello")
        found = kube_api.kubectl("get", "deployment", "elsewhere", "-n", other, check=False)
        assert found.returncode != 0
        assert "NotFound" in found.stderr
    finally:
        kube_api.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_a_runtime_without_an_image_is_reported_not_ready(
    kube_api: KubeApi, crd: None, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(
        kubeconfig=kube_api.kubeconfig,
        log_path=tmp_path / "operator.log",
        namespaces=[namespace],
        env={"KUBEFAAS_RUNTIME_IMAGES": '{"python3.99": "nowhere:1"}'},
    ).start()
    cluster = Cluster(api=kube_api, namespace=namespace, operator=operator)
    try:
        cluster.apply(function())
        ready = cluster.wait_ready("hello", status="False")
        assert ready["reason"] == "UnknownRuntime"
        assert "python3.11" in ready["message"]
        assert cluster.get("deployment", "hello") is None
    finally:
        operator.stop()
