"""What the pure builders return for a Function: the objects a user will find in the cluster."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest

from kubefaas import limits, naming, wire
from kubefaas.api import Function, parse_function
from kubefaas_operator import builders
from kubefaas_operator.builders import NotReady

UID = "0b7c6a5e-0000-4000-8000-000000000001"
IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}
NOW = "2026-01-02T03:04:05Z"


def function(**spec: Any) -> Function:
    doc: dict[str, Any] = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": UID, "generation": 4},
        "spec": {
            "runtime": "python3.11",
            "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
        },
    }
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return parse_function(doc)


def deployment(fn: Function | None = None, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"image_for_runtime": IMAGES, "replicas_hint": None}
    options.update(kwargs)
    return builders.build_deployment(fn or function(), **options)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(obj)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env_of(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(obj)["env"]}


# --- security -----------------------------------------------------------------------------


def test_pods_pass_the_restricted_pod_security_standard() -> None:
    obj = deployment()
    pod = pod_spec(obj)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == builders.RUNTIME_UID
    assert pod["securityContext"]["runAsGroup"] == builders.RUNTIME_GID
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["runAsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(obj)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod


def test_function_pods_get_no_service_account_token_and_no_service_links() -> None:
    pod = pod_spec(deployment())
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


# --- volumes, code, /tmp --------------------------------------------------------------------


def test_inline_code_is_mounted_read_only_from_the_function_configmap() -> None:
    obj = deployment()
    volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
    assert volumes["code"]["configMap"]["name"] == naming.code_config_map_name("hello")
    assert volumes["code"]["configMap"]["defaultMode"] == 0o444
    mounts = {m["name"]: m for m in container(obj)["volumeMounts"]}
    assert mounts["code"] == {"name": "code", "mountPath": naming.CODE_MOUNT_PATH, "readOnly": True}


def test_code_from_a_user_configmap_is_mounted_from_that_configmap() -> None:
    fn = function(code={"configMap": {"name": "my-code"}})
    volumes = {v["name"]: v for v in pod_spec(deployment(fn))["volumes"]}
    assert volumes["code"]["configMap"]["name"] == "my-code"
    assert builders.code_config_map(fn) == "my-code"


def test_tmp_is_a_private_emptydir_whose_size_limit_equals_the_ephemeral_storage_limit() -> None:
    obj = deployment(function(tmpSize="2Gi"))
    volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}
    mounts = {m["name"]: m for m in container(obj)["volumeMounts"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert mounts["tmp"].get("readOnly") is not True
    resources = container(obj)["resources"]
    assert resources["limits"]["ephemeral-storage"] == "2Gi"
    assert resources["requests"]["ephemeral-storage"] == "2Gi"


def test_custom_image_function_has_no_code_volume() -> None:
    fn = function(runtime=None, code=None, image="example/fn:7")
    obj = deployment(fn)
    assert container(obj)["image"] == "example/fn:7"
    assert [v["name"] for v in pod_spec(obj)["volumes"]] == ["tmp"]
    assert [m["name"] for m in container(obj)["volumeMounts"]] == ["tmp"]


def test_config_map_holds_one_key_per_inline_file() -> None:
    files = {"main.py": "import util\n", "util.py": "X = 1\n", "data.json": "{}"}
    cm = builders.build_config_map(function(code={"inline": files}))
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "hello-code"
    assert cm["metadata"]["namespace"] == "team-a"
    assert cm["data"] == files


def test_config_map_is_refused_for_code_in_a_user_configmap() -> None:
    with pytest.raises(ValueError, match="no inline code"):
        builders.build_config_map(function(code={"configMap": {"name": "x"}}))


# --- resources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "cpu"),
    [("128Mi", "73m"), ("256Mi", "145m"), ("1769Mi", "1000m"), ("10Gi", "5789m"), ("64Mi", "37m")],
)
def test_memory_is_request_and_limit_and_cpu_request_follows_lambdas_ratio(
    memory: str, cpu: str
) -> None:
    resources = container(deployment(function(memory=memory)))["resources"]
    assert resources["limits"]["memory"] == memory
    assert resources["requests"]["memory"] == memory
    assert resources["requests"]["cpu"] == cpu


def test_there_is_no_cpu_limit() -> None:
    assert "cpu" not in container(deployment())["resources"]["limits"]


def test_decimal_memory_sizes_get_cpu_by_their_mebibytes() -> None:
    # 1G = 953.67 MiB -> 954 MiB -> 954000/1769 = 539.3 -> 540m
    assert builders.cpu_request("1G") == "540m"


# --- the runtime launch contract ---------------------------------------------------------


def test_env_carries_the_runtime_launch_contract_then_the_users_variables() -> None:
    fn = function(
        handler="main.handler",
        eventFormat="http",
        timeoutSeconds=42,
        memory="512Mi",
        env=[{"name": "GREETING", "value": "hi"}],
    )
    obj = deployment(fn)
    env = env_of(obj)
    assert env == {
        "PORT": "8080",
        "KUBEFAAS_CODE_DIR": naming.CODE_MOUNT_PATH,
        "KUBEFAAS_HANDLER": "main.handler",
        "KUBEFAAS_FUNCTION_NAME": "hello",
        "KUBEFAAS_FUNCTION_NAMESPACE": "team-a",
        "KUBEFAAS_FUNCTION_VERSION": "4",
        "KUBEFAAS_EVENT_FORMAT": "http",
        "KUBEFAAS_TIMEOUT_SECONDS": "42",
        "KUBEFAAS_MEMORY_MB": "512",
        "TMPDIR": "/tmp",
        "GREETING": "hi",
    }
    assert container(obj)["env"][-1] == {"name": "GREETING", "value": "hi"}


def test_the_contract_names_match_what_the_runtime_reads() -> None:
    from kubefaas_runtime.config import Settings

    settings = Settings.from_env(env_of(deployment(function(timeoutSeconds=7))))
    assert settings.port == wire.RUNTIME_PORT
    assert settings.code_dir == naming.CODE_MOUNT_PATH
    assert settings.function_name == "hello"
    assert settings.function_namespace == "team-a"
    assert settings.timeout_seconds == 7
    assert settings.memory_mb == 256
    assert settings.tmp_dir == "/tmp"


def test_user_env_cannot_override_the_contract() -> None:
    fn = function(env=[{"name": "PORT", "value": "1"}, {"name": "OK", "value": "2"}])
    env = container(deployment(fn))["env"]
    assert [e["value"] for e in env if e["name"] == "PORT"] == ["8080"]
    assert {"name": "OK", "value": "2"} in env
    assert builders.shadowed_env(fn) == ["PORT"]


def test_port_and_readiness_probe_on_the_runtime_port() -> None:
    c = container(deployment())
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    probe = c["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "HTTP"}
    assert probe["periodSeconds"] <= 2
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_termination_grace_outlasts_the_function_timeout() -> None:
    pod = pod_spec(deployment(function(timeoutSeconds=300)))
    assert pod["terminationGracePeriodSeconds"] == 300 + builders.DRAIN_GRACE_SECONDS
    assert pod["terminationGracePeriodSeconds"] > 300


# --- image ----------------------------------------------------------------------------------


def test_runtime_image_comes_from_the_configured_map() -> None:
    assert container(deployment())["image"] == IMAGES["python3.11"]


def test_default_runtime_map_is_the_one_in_limits() -> None:
    obj = deployment(image_for_runtime=limits.RUNTIME_IMAGES)
    assert container(obj)["image"] == limits.RUNTIME_IMAGES["python3.11"]


def test_runtime_missing_from_the_map_is_an_unknown_runtime() -> None:
    with pytest.raises(
        builders.UnknownRuntimeError, match=r"python3\.11.*configured runtimes: none"
    ):
        deployment(image_for_runtime={})


# --- labels, selectors, owners ----------------------------------------------------------


def test_labels_on_deployment_template_and_service_let_the_gateway_find_pods() -> None:
    fn = function()
    dep = deployment(fn)
    svc = builders.build_service(fn)
    expected = {
        naming.FUNCTION_LABEL: "hello",
        "app.kubernetes.io/name": "hello",
        "app.kubernetes.io/component": "function",
        "app.kubernetes.io/managed-by": "kubefaas-operator",
        "app.kubernetes.io/part-of": "kubefaas",
    }
    assert dep["metadata"]["labels"] == expected
    assert dep["spec"]["template"]["metadata"]["labels"] == expected
    assert svc["metadata"]["labels"] == expected
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector[naming.FUNCTION_LABEL] == "hello"
    assert svc["spec"]["selector"] == selector
    # The selector must match the pods it selects.
    assert selector.items() <= expected.items()


def test_service_is_cluster_ip_port_80_to_the_runtime_port_named_http() -> None:
    svc = builders.build_service(function())
    assert svc["metadata"]["name"] == "hello"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]


def test_every_child_is_controlled_by_the_function_so_deletion_cascades() -> None:
    fn = function()
    for obj in (deployment(fn), builders.build_service(fn), builders.build_config_map(fn)):
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "kubefaas.io/v1alpha1",
                "kind": "Function",
                "name": "hello",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_an_object_never_read_from_the_api_has_no_uid_to_own_children() -> None:
    doc = function().model_dump(by_alias=True, exclude_none=True)
    del doc["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        builders.build_service(parse_function(doc))


# --- replicas -------------------------------------------------------------------------------


def test_a_new_deployment_starts_at_zero_replicas() -> None:
    assert deployment()["spec"]["replicas"] == 0


def test_a_new_deployment_starts_at_min_scale() -> None:
    fn = function(scaling={"minScale": 2, "maxScale": 5})
    assert deployment(fn)["spec"]["replicas"] == 2


def test_replicas_set_by_the_autoscaler_are_kept_and_only_raised_to_min_scale() -> None:
    assert deployment(replicas_hint=7)["spec"]["replicas"] == 7
    fn = function(scaling={"minScale": 3, "maxScale": 5})
    assert deployment(fn, replicas_hint=1)["spec"]["replicas"] == 3


# --- checksum and version -----------------------------------------------------------------


def checksum_of(fn: Function) -> str:
    annotations = deployment(fn)["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations[naming.CODE_CHECKSUM_ANNOTATION]
    return value


def test_checksum_changes_when_code_env_memory_handler_or_timeout_change() -> None:
    base = checksum_of(function())
    changed = [
        function(code={"inline": {"main.py": "def handler(e, c):\n    return 2\n"}}),
        function(env=[{"name": "A", "value": "1"}]),
        function(memory="512Mi"),
        function(timeoutSeconds=5),
        function(eventFormat="http"),
        function(tmpSize="1Gi"),
        function(
            handler="app.run",
            code={"inline": {"app.py": "def run(e, c):\n    return 1\n"}},
        ),
    ]
    sums = [checksum_of(fn) for fn in changed]
    assert base not in sums
    assert len(set(sums)) == len(sums)


def test_checksum_does_not_change_when_only_scaling_or_async_change() -> None:
    base = checksum_of(function())
    assert checksum_of(function(scaling={"maxScale": 3, "minScale": 1})) == base
    assert checksum_of(function(scaling={"targetConcurrency": 50})) == base
    assert checksum_of(function(**{"async": {"maxRetries": 0}})) == base


def test_checksum_of_configmap_code_follows_the_configmap_contents() -> None:
    fn = function(code={"configMap": {"name": "src"}})
    one = builders.pod_checksum(fn, {"main.py": "a"})
    assert one == builders.pod_checksum(fn, {"main.py": "a"})
    assert one != builders.pod_checksum(fn, {"main.py": "b"})
    assert one != builders.pod_checksum(
        function(code={"configMap": {"name": "other"}}), {"main.py": "a"}
    )


def test_version_stays_while_the_pods_do_not_change_and_moves_with_them() -> None:
    fn = function()
    live = deployment(fn)  # deployed at generation 4
    checksum = builders.pod_checksum(fn, fn.spec.code.inline if fn.spec.code else None)
    # generation 9 only changed maxScale: same checksum, same version, same pod template
    assert builders.function_version(checksum=checksum, live=live, generation=9) == 4
    # generation 10 changed the code: a new version
    assert builders.function_version(checksum="other", live=live, generation=10) == 10
    assert builders.function_version(checksum=checksum, live=None, generation=3) == 3


def test_a_scaling_only_change_leaves_the_pod_template_identical() -> None:
    fn = function()
    live = deployment(fn)
    doc = fn.model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["scaling"]["maxScale"] = 3
    doc["metadata"]["generation"] = 5
    newer = parse_function(doc)
    checksum = builders.pod_checksum(newer, newer.spec.code.inline if newer.spec.code else None)
    version = builders.function_version(checksum=checksum, live=live, generation=5)
    again = deployment(newer, checksum=checksum, version=version)
    assert again["spec"]["template"] == live["spec"]["template"]


# --- status -------------------------------------------------------------------------------


def live_deployment(replicas: int, ready: int = 0, **status: Any) -> dict[str, Any]:
    obj = deployment(replicas_hint=replicas)
    obj["status"] = {"replicas": replicas, "readyReplicas": ready, **status}
    return obj


def ready_of(status: dict[str, Any]) -> dict[str, Any]:
    found = builders.ready_condition_of(status)
    assert found is not None
    return dict(found)


def test_status_of_a_function_scaled_to_zero_is_ready() -> None:
    status = builders.build_status(
        fn=function(),
        deployment=live_deployment(0),
        problem=None,
        gateway_url="http://gw.example",
        previous=None,
        now=NOW,
    )
    ready = ready_of(status)
    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero")
    assert ready["lastTransitionTime"] == NOW
    assert ready["observedGeneration"] == 4
    assert status["replicas"] == 0
    assert status["readyReplicas"] == 0
    assert status["url"] == "http://gw.example/function/team-a/hello"
    assert status["observedGeneration"] == 4


def test_status_running_and_deployed_follow_ready_replicas() -> None:
    running = builders.build_status(
        fn=function(),
        deployment=live_deployment(3, ready=2),
        problem=None,
        gateway_url="http://gw",
        previous=None,
        now=NOW,
    )
    assert ready_of(running)["reason"] == "Running"
    assert "2 of 3" in ready_of(running)["message"]
    assert (running["replicas"], running["readyReplicas"]) == (3, 2)
    starting = builders.build_status(
        fn=function(),
        deployment=live_deployment(1, ready=0),
        problem=None,
        gateway_url="http://gw",
        previous=None,
        now=NOW,
    )
    assert (ready_of(starting)["status"], ready_of(starting)["reason"]) == ("True", "Deployed")


def test_a_problem_makes_the_function_not_ready_with_its_reason_and_message() -> None:
    status = builders.build_status(
        fn=function(),
        deployment=None,
        problem=NotReady("CodeNotFound", "ConfigMap 'src' not found"),
        gateway_url="http://gw",
        previous=None,
        now=NOW,
    )
    ready = ready_of(status)
    assert (ready["status"], ready["reason"]) == ("False", "CodeNotFound")
    assert "'src' not found" in ready["message"]


def test_a_stuck_rollout_or_refused_pods_are_not_ready() -> None:
    stuck = live_deployment(
        1,
        conditions=[
            {"type": "Progressing", "status": "False", "message": "ProgressDeadlineExceeded"}
        ],
    )
    ready, reason, _ = builders.deployment_readiness(stuck)
    assert (ready, reason) == (False, "RolloutStuck")
    refused = live_deployment(
        1,
        conditions=[{"type": "ReplicaFailure", "status": "True", "message": "forbidden: psa"}],
    )
    ready, reason, message = builders.deployment_readiness(refused)
    assert (ready, reason, message) == (False, "ReplicaFailure", "forbidden: psa")


def test_transition_time_moves_only_when_readiness_flips() -> None:
    earlier = builders.build_status(
        fn=function(),
        deployment=live_deployment(0),
        problem=None,
        gateway_url="http://gw",
        previous=None,
        now="2020-01-01T00:00:00Z",
    )
    same = builders.build_status(
        fn=function(),
        deployment=live_deployment(2, ready=2),
        problem=None,
        gateway_url="http://gw",
        previous=earlier,
        now=NOW,
    )
    assert ready_of(same)["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = builders.build_status(
        fn=function(),
        deployment=None,
        problem=NotReady("ApplyFailed", "403"),
        gateway_url="http://gw",
        previous=same,
        now=NOW,
    )
    assert ready_of(flipped)["lastTransitionTime"] == NOW


def test_conditions_of_others_are_kept() -> None:
    previous = {"conditions": [{"type": "Throttled", "status": "False"}]}
    status = builders.build_status(
        fn=function(),
        deployment=live_deployment(0),
        problem=None,
        gateway_url="http://gw",
        previous=previous,
        now=NOW,
    )
    assert [c["type"] for c in status["conditions"]] == ["Throttled", "Ready"]


def test_refresh_follows_the_deployment_but_keeps_a_problem_found_by_reconcile() -> None:
    ok = builders.build_status(
        fn=function(),
        deployment=live_deployment(0),
        problem=None,
        gateway_url="http://gw",
        previous=None,
        now=NOW,
    )
    refreshed = builders.refresh_status(previous=ok, deployment=live_deployment(2, 2), now=NOW)
    assert (refreshed["replicas"], refreshed["readyReplicas"]) == (2, 2)
    assert ready_of(refreshed)["reason"] == "Running"
    assert ready_of(refreshed)["observedGeneration"] == 4
    broken = builders.build_status(
        fn=function(),
        deployment=None,
        problem=NotReady("CodeNotFound", "missing"),
        gateway_url="http://gw",
        previous=None,
        now=NOW,
    )
    refreshed = builders.refresh_status(previous=broken, deployment=live_deployment(1, 1), now=NOW)
    assert "conditions" not in refreshed
    assert refreshed["readyReplicas"] == 1


def test_status_differs_ignores_only_transition_times() -> None:
    one = builders.build_status(
        fn=function(),
        deployment=live_deployment(0),
        problem=None,
        gateway_url="http://gw",
        previous=None,
        now="2020-01-01T00:00:00Z",
    )
    two = copy.deepcopy(one)
    two["conditions"][0]["lastTransitionTime"] = NOW
    assert not builders.status_differs(one, two)
    two["replicas"] = 1
    assert builders.status_differs(one, two)
    assert builders.status_differs(None, one)


def test_invalid_spec_status_names_the_problem() -> None:
    status = builders.build_problem_status(
        previous=None, problem=NotReady("InvalidSpec", "spec.memory: bad"), generation=2, now=NOW
    )
    assert ready_of(status)["reason"] == "InvalidSpec"
    assert status["observedGeneration"] == 2


# --- purity ---------------------------------------------------------------------------------


def test_builders_import_no_io() -> None:
    """The builders stay pure: no Kubernetes client, kopf, network or subprocess."""
    source = Path(builders.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "hashlib",
        "json",
        "collections",
        "dataclasses",
        "typing",
        "kubefaas",
    }
