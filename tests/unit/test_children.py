"""What the pure children builders return for a Function: the objects a user will find in
the cluster (its status is tested in test_status.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from kubefaas import limits, naming, wire
from kubefaas.api import Function, parse_function
from kubefaas_operator import children, status
from kubefaas_operator.config import RUNTIME_IMAGES_ENV, load_config

UID = "0b7c6a5e-0000-4000-8000-000000000001"
IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}


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
    return children.build_deployment(fn or function(), **options)


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
    assert pod["securityContext"]["runAsUser"] == children.RUNTIME_UID
    assert pod["securityContext"]["runAsGroup"] == children.RUNTIME_GID
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
    assert children.code_config_map(fn) == "my-code"


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
    cm = children.build_config_map(function(code={"inline": files}))
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "hello-code"
    assert cm["metadata"]["namespace"] == "team-a"
    assert cm["data"] == files


def test_config_map_is_refused_for_code_in_a_user_configmap() -> None:
    with pytest.raises(ValueError, match="no inline code"):
        children.build_config_map(function(code={"configMap": {"name": "x"}}))


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
    assert children.cpu_request("1G") == "540m"


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
    assert children.shadowed_env(fn) == ["PORT"]


def test_port_and_readiness_probe_on_the_runtime_port() -> None:
    c = container(deployment())
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    probe = c["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "HTTP"}
    assert probe["periodSeconds"] <= 2
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_termination_grace_outlasts_the_function_timeout() -> None:
    pod = pod_spec(deployment(function(timeoutSeconds=300)))
    assert pod["terminationGracePeriodSeconds"] == 300 + children.DRAIN_GRACE_SECONDS
    assert pod["terminationGracePeriodSeconds"] > 300


# --- image ----------------------------------------------------------------------------------


def runtime_images(configured: str | None) -> dict[str, str]:
    """The operator's runtime -> image map, as its configuration parses it."""
    environ = {} if configured is None else {RUNTIME_IMAGES_ENV: configured}
    config = load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)
    return dict(config.runtime_images)


def test_the_deployment_runs_the_image_the_operator_is_configured_with() -> None:
    images = runtime_images('{"python3.11": "mirror.example/runtime:9"}')
    obj = deployment(image_for_runtime=images)
    assert container(obj)["image"] == "mirror.example/runtime:9"


def test_every_runtime_the_api_accepts_has_an_image_in_a_default_operator() -> None:
    # A Function the CRD admits must not come out UnknownRuntime on a default install.
    images = runtime_images(None)
    for runtime in limits.RUNTIMES:
        image = container(deployment(function(runtime=runtime), image_for_runtime=images))
        assert image["image"], runtime


def test_a_configured_map_replaces_the_default_so_a_missing_runtime_is_refused() -> None:
    images = runtime_images('{"python3.12": "mirror.example/runtime-312:1"}')
    with pytest.raises(
        children.UnknownRuntimeError,
        match=r"spec\.runtime 'python3\.11'.*configured runtimes: python3\.12",
    ):
        deployment(image_for_runtime=images)


def test_runtime_missing_from_an_empty_map_is_an_unknown_runtime() -> None:
    with pytest.raises(
        children.UnknownRuntimeError, match=r"python3\.11.*configured runtimes: none"
    ):
        deployment(image_for_runtime={})


def test_a_custom_image_needs_no_runtime_map() -> None:
    fn = function(runtime=None, code=None, image="example/fn:7")
    assert container(deployment(fn, image_for_runtime={}))["image"] == "example/fn:7"


# --- labels, selectors, owners ----------------------------------------------------------


def test_labels_on_deployment_template_and_service_let_the_gateway_find_pods() -> None:
    fn = function()
    dep = deployment(fn)
    svc = children.build_service(fn)
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
    svc = children.build_service(function())
    assert svc["metadata"]["name"] == "hello"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]


def test_every_child_is_controlled_by_the_function_so_deletion_cascades() -> None:
    fn = function()
    for obj in (deployment(fn), children.build_service(fn), children.build_config_map(fn)):
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
        children.build_service(parse_function(doc))


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
    one = children.pod_checksum(fn, {"main.py": "a"})
    assert one == children.pod_checksum(fn, {"main.py": "a"})
    assert one != children.pod_checksum(fn, {"main.py": "b"})
    assert one != children.pod_checksum(
        function(code={"configMap": {"name": "other"}}), {"main.py": "a"}
    )


def test_version_stays_while_the_pods_do_not_change_and_moves_with_them() -> None:
    fn = function()
    live = deployment(fn)  # deployed at generation 4
    checksum = children.pod_checksum(fn, fn.spec.code.inline if fn.spec.code else None)
    # generation 9 only changed maxScale: same checksum, same version, same pod template
    assert children.function_version(checksum=checksum, live=live, generation=9) == 4
    # generation 10 changed the code: a new version
    assert children.function_version(checksum="other", live=live, generation=10) == 10
    assert children.function_version(checksum=checksum, live=None, generation=3) == 3


def test_a_scaling_only_change_leaves_the_pod_template_identical() -> None:
    fn = function()
    live = deployment(fn)
    doc = fn.model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["scaling"]["maxScale"] = 3
    doc["metadata"]["generation"] = 5
    newer = parse_function(doc)
    checksum = children.pod_checksum(newer, newer.spec.code.inline if newer.spec.code else None)
    version = children.function_version(checksum=checksum, live=live, generation=5)
    again = deployment(newer, checksum=checksum, version=version)
    assert again["spec"]["template"] == live["spec"]["template"]


# --- purity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [children, status], ids=["children", "status"])
def test_builders_import_no_io(module: Any) -> None:
    """The builders stay pure: no Kubernetes client, kopf, network or subprocess."""
    source = Path(module.__file__).read_text()
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
