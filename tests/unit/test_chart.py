"""The Helm chart as a cluster operator meets it: `helm lint` and `helm template` with real helm.

Rendering needs no cluster, so these tests belong to the unit tier; they need the helm
binary, which `make k8s-binaries` builds. Without it they fail and say so: a chart that
nobody rendered is not a tested chart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas import limits, naming

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubefaas"
RELEASE = "kubefaas"
NAMESPACE = "kubefaas-system"
OPERATOR_RBAC = ROOT / "deploy" / "operator-rbac.yaml"
HELM_TIMEOUT_SECONDS = 60

# Helm built from source without its release ldflags assumes Kubernetes v1.20, below the
# chart's kubeVersion; render for the version the local cluster runs.
try:
    from kubefaas_cluster.versions import KUBERNETES_VERSION
except ImportError:  # pragma: no cover - the cluster package ships in the same distribution
    KUBERNETES_VERSION = "v1.34.4"

# The Pod Security Standard "restricted" allows only these volume types.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}

# Every optional object switched on: renders that cover all templates.
ALL_FEATURES = (
    "networkPolicy.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "gateway.persistence.enabled=true",
)
REDIS = ("redis.url=redis://redis.db.svc:6379/0", "gateway.replicas=3")


@cache
def helm_binary() -> Path:
    """The pinned helm of `make k8s-binaries`, else a `helm` on PATH; fail without either."""
    problem = "kubefaas_cluster is not importable"
    try:
        from kubefaas_cluster.binaries import BinaryCache, MissingBinary

        return BinaryCache.default().binary("helm")
    except ImportError:
        pass
    except MissingBinary as exc:
        problem = str(exc)
    found = shutil.which("helm")
    if found is not None:
        return Path(found)
    pytest.fail(
        f"helm is needed to test the chart and was not found ({problem}; none on PATH): "
        "build it with `make k8s-binaries` or put helm v3 on PATH"
    )


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_SECONDS,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def template_args(*sets: str, release: str = RELEASE) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION]
    for value in sets:
        args += ["--set", value]
    return args


@cache
def render(*sets: str, release: str = RELEASE) -> tuple[dict[str, Any], ...]:
    """The objects `helm template` renders (test hooks included) with these --set values."""
    out = helm(*template_args(*sets, release=release)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render_error(*sets: str) -> str:
    """`helm template` must refuse these values; the error it prints."""
    result = helm(*template_args(*sets), check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    return result.stderr


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )


def kinds(objects: tuple[dict[str, Any], ...]) -> set[str]:
    return {obj["kind"] for obj in objects}


def pod_specs(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            yield name, obj["spec"]
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield name, obj["spec"]["template"]["spec"]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def env_of(container_spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """RBAC rules as (apiGroup, resource, resourceName, verb) grants, however they are grouped."""
    grants = set()
    for rule in rules:
        assert not rule.get("nonResourceURLs"), rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for name in rule.get("resourceNames") or ["*any*"]:
                    for verb in rule.get("verbs", []):
                        grants.add((group, resource, name, verb))
    return grants


def assert_least_privilege(role: dict[str, Any]) -> None:
    """No wildcards; Secrets only for the gateway, and only `get` by name (invoke keys,
    docs/security.md): nobody may list or watch them, the operator not even read one."""
    name = role["metadata"]["name"]
    for group, resource, _, verb in rule_triples(role["rules"]):
        assert "*" not in (group, resource, verb), f"{name} has a wildcard"
        if resource == "secrets":
            assert name.endswith("-gateway"), f"{name} may read Secrets"
            assert verb == "get", f"{name} may {verb} Secrets"


# --- lint and CRD -------------------------------------------------------------------------


@pytest.mark.parametrize("sets", [(), ALL_FEATURES, REDIS], ids=["default", "all", "redis"])
def test_helm_lint_strict_passes(sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBERNETES_VERSION]
    for value in sets:
        args += ["--set", value]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_chart_crd_is_the_generated_crd_byte_for_byte() -> None:
    chart_crd = (CHART / "crds" / "function.yaml").read_bytes()
    assert chart_crd == (ROOT / "crds" / "function.yaml").read_bytes(), (
        "charts/kubefaas/crds/function.yaml differs from crds/function.yaml: run `make crds`"
    )


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"].startswith(">=1.29")


# --- what gets installed ------------------------------------------------------------------


def test_default_release_serves_the_gateway_at_kubefaas_gateway() -> None:
    objects = render()
    service = find(objects, "Service", "kubefaas-gateway")
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    gateway = find(objects, "Deployment", "kubefaas-gateway")
    [container_port] = container(gateway, "gateway")["ports"]
    assert container_port == {"name": port["targetPort"], "containerPort": 8080, "protocol": "TCP"}
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_gateway_pods_carry_the_label_the_autoscaler_looks_for() -> None:
    gateway = find(render(), "Deployment", "kubefaas-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels[naming.COMPONENT_LABEL] == naming.GATEWAY_COMPONENT
    operator = find(render(), "Deployment", "kubefaas-operator")
    selector = env_of(container(operator, "operator"))["KUBEFAAS_GATEWAY_SELECTOR"]
    wanted = dict(pair.split("=") for pair in selector.split(","))
    assert wanted.items() <= labels.items()
    # The port the autoscaler reads /internal/stats on is the container port named "http".
    assert container(gateway, "gateway")["ports"][0]["name"] == naming.RUNTIME_PORT_NAME


def test_every_object_has_the_standard_labels() -> None:
    for obj in render(*ALL_FEATURES):
        labels = obj["metadata"]["labels"]
        for key in ("name", "instance", "version", "managed-by", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (obj["kind"], obj["metadata"]["name"])
        assert labels["helm.sh/chart"] == "kubefaas-0.1.0"


def test_operator_runs_once_and_is_told_the_gateway_url_and_runtime_images() -> None:
    operator = find(render(), "Deployment", "kubefaas-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    spec = container(operator, "operator")
    assert spec["command"] == ["kubefaas", "operator"]
    env = env_of(spec)
    assert env["KUBEFAAS_GATEWAY_URL"] == "http://kubefaas-gateway.kubefaas-system.svc"
    assert json.loads(env["KUBEFAAS_RUNTIME_IMAGES"]) == limits.RUNTIME_IMAGES


def test_operator_is_restarted_when_its_loop_hangs_and_exposes_metrics() -> None:
    operator = find(render(), "Deployment", "kubefaas-operator")
    spec = container(operator, "operator")
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    env = env_of(spec)
    assert ports == {
        "health": int(env["KUBEFAAS_OPERATOR_HEALTH_PORT"]),
        "metrics": int(env["KUBEFAAS_OPERATOR_METRICS_PORT"]),
    }
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "readinessProbe" not in spec
    service = find(render(), "Service", "kubefaas-operator-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_watched_namespaces_reach_the_operator_and_the_gateway() -> None:
    objects = render("watchNamespaces={team-a,team-b}", "operator.verbose=true")
    spec = container(find(objects, "Deployment", "kubefaas-operator"), "operator")
    assert spec["args"] == ["--namespace=team-a", "--namespace=team-b", "--verbose"]
    gateway = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    assert gateway["KUBEFAAS_NAMESPACES"] == "team-a,team-b"
    assert "args" not in container(find(render(), "Deployment", "kubefaas-operator"), "operator")
    gateway = env_of(container(find(render(), "Deployment", "kubefaas-gateway"), "gateway"))
    assert "KUBEFAAS_NAMESPACES" not in gateway


def test_extra_runtime_images_join_the_default_one() -> None:
    objects = render(
        "runtime.extraImages.python3\\.12=registry.example/kubefaas-runtime-py312:0.1.0",
        "runtime.image.tag=0.1.1",
    )
    env = env_of(container(find(objects, "Deployment", "kubefaas-operator"), "operator"))
    assert json.loads(env["KUBEFAAS_RUNTIME_IMAGES"]) == {
        "python3.11": "kubefaas-runtime:0.1.1",
        "python3.12": "registry.example/kubefaas-runtime-py312:0.1.0",
    }


def test_public_url_overrides_the_url_in_function_status() -> None:
    objects = render("gateway.publicUrl=https://fn.example.com")
    env = env_of(container(find(objects, "Deployment", "kubefaas-operator"), "operator"))
    assert env["KUBEFAAS_GATEWAY_URL"] == "https://fn.example.com"


def test_another_release_name_prefixes_every_name() -> None:
    objects = render(release="faas")
    find(objects, "Service", "faas-kubefaas-gateway")
    operator = find(objects, "Deployment", "faas-kubefaas-operator")
    env = env_of(container(operator, "operator"))
    assert env["KUBEFAAS_GATEWAY_URL"] == "http://faas-kubefaas-gateway.kubefaas-system.svc"


def test_gateway_serves_on_8080_with_probes_and_a_state_dir() -> None:
    gateway = find(render(), "Deployment", "kubefaas-gateway")
    spec = container(gateway, "gateway")
    assert spec["command"] == ["kubefaas", "gateway"]
    assert spec["args"][spec["args"].index("--port") + 1] == "8080"
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = env_of(spec)
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    assert mounts["state"] == env["KUBEFAAS_STATE_DIR"]
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"]
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"]["type"] == "Recreate"
    assert "KUBEFAAS_REDIS_URL" not in env


def test_persistence_puts_the_queue_on_a_claim() -> None:
    objects = render("gateway.persistence.enabled=true", "gateway.persistence.size=5Gi")
    claim = find(objects, "PersistentVolumeClaim", "kubefaas-gateway-state")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    gateway = find(objects, "Deployment", "kubefaas-gateway")
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "kubefaas-gateway-state"
    existing = render("gateway.persistence.enabled=true", "gateway.persistence.existingClaim=q")
    assert "PersistentVolumeClaim" not in kinds(existing)
    gateway = find(existing, "Deployment", "kubefaas-gateway")
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "q"


def test_several_gateway_replicas_without_redis_are_refused_with_the_reason() -> None:
    error = render_error("gateway.replicas=2")
    assert "gateway.replicas=2 needs redis.url" in error
    assert "SQLite" in error


def test_redis_allows_several_gateways_and_rolling_upgrades() -> None:
    objects = render(*REDIS)
    gateway = find(objects, "Deployment", "kubefaas-gateway")
    assert gateway["spec"]["replicas"] == 3
    assert gateway["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(container(gateway, "gateway"))
    assert env["KUBEFAAS_REDIS_URL"] == {
        "secretKeyRef": {"name": "kubefaas-gateway", "key": "redis-url"}
    }
    assert env["KUBEFAAS_REDIS_PREFIX"] == "kubefaas"
    secret = find(objects, "Secret", "kubefaas-gateway")
    assert secret["data"]["redis-url"] == "cmVkaXM6Ly9yZWRpcy5kYi5zdmM6NjM3OS8w"


def test_redis_from_an_existing_secret() -> None:
    objects = render("redis.existingSecret=redis-conn", "gateway.replicas=2")
    env = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    assert env["KUBEFAAS_REDIS_URL"]["secretKeyRef"] == {"name": "redis-conn", "key": "redis-url"}
    assert "redis-url" not in find(objects, "Secret", "kubefaas-gateway")["data"]


def test_persistence_and_redis_together_are_refused() -> None:
    error = render_error("gateway.persistence.enabled=true", "redis.url=redis://r:6379")
    assert "gateway.persistence.enabled" in error


def test_admin_token_reaches_the_gateway_from_a_secret() -> None:
    generated = find(render(), "Secret", "kubefaas-gateway")["data"]["admin-token"]
    assert len(generated) >= 16, "a token is generated when none is given"
    objects = render("gateway.adminToken=0123456789abcdef0123")
    secret = find(objects, "Secret", "kubefaas-gateway")
    assert secret["data"]["admin-token"] == "MDEyMzQ1Njc4OWFiY2RlZjAxMjM="
    assert set(secret["data"]) == {"admin-token", "metrics-token"}
    env = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    assert env["KUBEFAAS_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "kubefaas-gateway", "key": "admin-token"}
    }


def test_an_existing_admin_secret_replaces_the_charts_own() -> None:
    objects = render("gateway.existingSecret=my-admin")
    assert "Secret" not in kinds(objects)
    env = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    assert env["KUBEFAAS_ADMIN_TOKEN"]["secretKeyRef"] == {"name": "my-admin", "key": "admin-token"}


def test_short_admin_tokens_are_refused() -> None:
    assert "adminToken" in render_error("gateway.adminToken=secret")


def test_service_accounts_can_be_brought_by_the_user() -> None:
    objects = render("operator.serviceAccount.create=false", "operator.serviceAccount.name=ops-sa")
    operator = find(objects, "Deployment", "kubefaas-operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"] == [
        "kubefaas-gateway"
    ]
    binding = find(objects, "ClusterRoleBinding", "kubefaas-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ops-sa", "namespace": NAMESPACE}
    ]
    error = render_error("operator.serviceAccount.create=false")
    assert "operator.serviceAccount.name is required" in error


def test_rbac_create_false_leaves_rbac_to_the_admin() -> None:
    rbac = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert not rbac & kinds(render("rbac.create=false"))
    assert not rbac & kinds(render("rbac.create=false", "watchNamespaces={team-a}"))
    assert {"ClusterRole", "ClusterRoleBinding"} <= kinds(render())


# --- security -----------------------------------------------------------------------------


@pytest.mark.parametrize("sets", [(), ALL_FEATURES, REDIS], ids=["default", "all", "redis"])
def test_every_pod_meets_the_restricted_pod_security_standard(sets: tuple[str, ...]) -> None:
    specs = list(pod_specs(render(*sets)))
    assert {name for name, _ in specs} >= {
        "Deployment/kubefaas-operator",
        "Deployment/kubefaas-gateway",
        "Pod/kubefaas-test-gateway",
    }
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] == 65532, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            source = set(volume) - {"name"}
            assert source <= RESTRICTED_VOLUME_TYPES, (name, volume)
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} container {c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc.get("runAsUser", 65532) != 0, where
            assert not sc.get("privileged"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "hostPort" not in str(c.get("ports", [])), where
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where


@pytest.mark.parametrize("sets", [(), ALL_FEATURES], ids=["default", "all"])
def test_images_are_pinned_and_never_pulled_again(sets: tuple[str, ...]) -> None:
    images = {}
    for name, spec in pod_specs(render(*sets)):
        for c in spec["containers"]:
            images[name] = c["image"]
            repository, _, tag = c["image"].rpartition(":")
            assert repository, (name, c["image"])
            assert tag not in {"", "latest"}, (name, c["image"])
            assert c["imagePullPolicy"] == "IfNotPresent", name
    assert images["Deployment/kubefaas-operator"] == "kubefaas-operator:0.1.0"
    assert images["Deployment/kubefaas-gateway"] == "kubefaas-gateway:0.1.0"
    assert images["Pod/kubefaas-test-gateway"] == "kubefaas-gateway:0.1.0"


def test_the_latest_tag_is_refused() -> None:
    assert "/gateway/image/tag" in render_error("gateway.image.tag=latest")
    assert "extraImages" in render_error("runtime.extraImages.py=some/image:latest")


def test_operator_rbac_is_the_operator_engineers_least_privilege_rbac() -> None:
    role = find(render(), "ClusterRole", "kubefaas-operator")
    assert_least_privilege(role)
    assert rule_triples(role["rules"]) >= {
        ("kubefaas.io", "functions", "*any*", "watch"),
        ("apps", "deployments", "*any*", "create"),
        ("apps", "deployments/scale", "*any*", "patch"),
    }
    if OPERATOR_RBAC.exists():
        documents = [d for d in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if d]
        cluster_roles = [d for d in documents if d["kind"] == "ClusterRole"]
        assert cluster_roles, f"{OPERATOR_RBAC} has no ClusterRole"
        wanted = set().union(*(rule_triples(r["rules"]) for r in cluster_roles))
        assert rule_triples(role["rules"]) == wanted, (
            "charts/kubefaas/templates/operator-clusterrole.yaml differs from "
            f"{OPERATOR_RBAC.relative_to(ROOT)}"
        )


# What the gateway's code calls (kube_async.py and its callers), nothing more.
GATEWAY_GRANTS = {
    *(("kubefaas.io", "functions", "*any*", v) for v in ("list", "watch")),
    *(("", "pods", "*any*", v) for v in ("list", "watch")),
    ("", "pods/log", "*any*", "get"),  # an ending function pod's log, kept (docs/logs.md)
    *(("apps", "deployments/scale", "*any*", v) for v in ("get", "patch")),
    ("", "secrets", "*any*", "get"),  # invoke keys of token/jwt Functions
}
# The console: Deploy (server-side apply: create or patch) and Delete.
CONSOLE_GRANTS = {("kubefaas.io", "functions", "*any*", v) for v in ("create", "patch", "delete")}


def test_gateway_rbac_is_what_the_gateway_code_calls() -> None:
    role = find(render(), "ClusterRole", "kubefaas-gateway")
    assert_least_privilege(role)
    assert rule_triples(role["rules"]) == GATEWAY_GRANTS
    with_console = find(render("console.enabled=true"), "ClusterRole", "kubefaas-gateway")
    assert rule_triples(with_console["rules"]) == GATEWAY_GRANTS | CONSOLE_GRANTS
    # With warm pools on: claim, retire or delete pool pods; read code and version.
    pooled = find(render("warmPool.size=2"), "ClusterRole", "kubefaas-gateway")
    assert rule_triples(pooled["rules"]) == GATEWAY_GRANTS | {
        ("", "pods", "*any*", "patch"),
        ("", "pods", "*any*", "delete"),
        ("", "configmaps", "*any*", "get"),
        ("apps", "deployments", "*any*", "get"),
    }


def test_watched_namespaces_get_roles_and_cluster_roles_keep_discovery_only() -> None:
    objects = render("watchNamespaces={team-a,team-b}", "console.enabled=true")
    roles = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objects
        if o["kind"] == "Role"
    }
    assert set(roles) == {
        ("team-a", "kubefaas-operator"),
        ("team-b", "kubefaas-operator"),
        ("team-a", "kubefaas-gateway"),
        ("team-b", "kubefaas-gateway"),
        (NAMESPACE, "kubefaas-operator-gateway-pods"),
    }
    for role in roles.values():
        assert_least_privilege(role)
    everywhere = find(render(), "ClusterRole", "kubefaas-operator")["rules"]
    operator_cluster = find(objects, "ClusterRole", "kubefaas-operator")["rules"]
    operator_role = roles["team-a", "kubefaas-operator"]["rules"]
    stats_role = roles[NAMESPACE, "kubefaas-operator-gateway-pods"]["rules"]
    # Nothing lost, nothing cluster-wide but read-only discovery for kopf.
    assert rule_triples(operator_cluster) | rule_triples(operator_role) | rule_triples(
        stats_role
    ) == rule_triples(everywhere)
    assert {(g, r, v) for g, r, _, v in rule_triples(operator_cluster)} == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    assert rule_triples(stats_role) == {("", "pods", "*any*", v) for v in ("get", "list", "watch")}
    assert rule_triples(roles["team-b", "kubefaas-gateway"]["rules"]) == (
        GATEWAY_GRANTS | CONSOLE_GRANTS
    )
    assert not any(
        o["kind"] in {"ClusterRole", "ClusterRoleBinding"}
        and o["metadata"]["name"].endswith("-gateway")
        for o in objects
    )
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert len(bindings) == len(roles)
    for binding in bindings:
        ns, name = binding["metadata"]["namespace"], binding["metadata"]["name"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }
        component = "operator" if "-operator" in name else "gateway"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"kubefaas-{component}", "namespace": NAMESPACE}
        ], (ns, name)


def test_warm_pool_values_reach_the_operator() -> None:
    operator = find(
        render("warmPool.size=3", "warmPool.memory=512Mi"), "Deployment", "kubefaas-operator"
    )
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBEFAAS_POOL_SIZE"] == "3"
    assert env["KUBEFAAS_POOL_MAX_PER_NAMESPACE"] == "4"
    assert env["KUBEFAAS_POOL_MEMORY"] == "512Mi"
    gateways = [render(*sets) for sets in ((), ("warmPool.size=1",))]
    claims = []
    for objects in gateways:
        gateway = find(objects, "Deployment", "kubefaas-gateway")
        container = gateway["spec"]["template"]["spec"]["containers"][0]
        claims.append({e["name"]: e.get("value") for e in container["env"]}["KUBEFAAS_WARM_POOL"])
    assert claims == ["false", "true"]
    assert "/warmPool/size" in render_error("warmPool.size=-1")


@pytest.mark.parametrize("sets", [(), ALL_FEATURES, REDIS], ids=["default", "all", "redis"])
def test_no_role_grants_wildcards_or_secrets(sets: tuple[str, ...]) -> None:
    roles = [o for o in render(*sets) if o["kind"] in {"ClusterRole", "Role"}]
    assert roles
    for role in roles:
        assert_least_privilege(role)


# --- values and schema --------------------------------------------------------------------


def test_unknown_values_are_refused() -> None:
    assert "bogus" in render_error("bogus=1")
    assert "bogus" in render_error("gateway.bogus=1")
    assert "bogus" in render_error("gateway.persistence.bogus=1")


def test_values_of_the_wrong_type_or_out_of_bounds_are_refused() -> None:
    assert "/gateway/replicas" in render_error("gateway.replicas=two")
    assert "/gateway/replicas" in render_error("gateway.replicas=0")
    assert "/gateway/service/port" in render_error("gateway.service.port=70000")
    assert "/operator/verbose" in render_error("operator.verbose=maybe")
    assert "/operator/resources/requests/cpu" in render_error("operator.resources.requests.cpu=x")
    assert "/watchNamespaces" in render_error("watchNamespaces={Bad_Name}")


def _undocumented_keys(node: yaml.Node, lines: list[str], path: str = "") -> Iterator[str]:
    """Keys of the values file that have no comment right above them or at the line's end."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        line = key.start_mark.line
        text = lines[line]
        above = lines[line - 1].strip() if line > 0 else ""
        # Inside a flow mapping ({cpu: 50m}) the comment of the line documents every key.
        flow = key.start_mark.line == node.start_mark.line and node.flow_style
        if not (above.startswith("#") or " #" in text or flow):
            yield f"{path}{key.value}"
        yield from _undocumented_keys(value, lines, f"{path}{key.value}.")


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    root = yaml.compose(text)
    assert root is not None, "values.yaml is empty"
    keys = list(_undocumented_keys(root, text.splitlines()))
    assert not keys, f"values.yaml keys without a comment: {keys}"


def test_every_value_is_in_the_schema_and_every_schema_object_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    definitions = schema["definitions"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return resolve(definitions[node["$ref"].rsplit("/", 1)[1]])
        return node

    def check_values(values: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if isinstance(values, dict) and "properties" in node:
            for key, value in values.items():
                assert key in node["properties"], f"{path}{key} is not in values.schema.json"
                check_values(value, node["properties"][key], f"{path}{key}.")

    # Kubernetes API objects the chart passes through; the API server validates them.
    passthrough = {"nodeAffinity", "podAffinity", "podAntiAffinity", "global"}

    def check_closed(node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if node.get("type") == "object" and path.rsplit(".", 1)[-1] not in passthrough:
            assert "additionalProperties" in node, f"{path} accepts unknown keys"
            assert node["additionalProperties"] is not True, path
        for key, child in node.get("properties", {}).items():
            check_closed(child, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            check_closed(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            check_closed(node["items"], f"{path}[]")

    check_values(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")
    check_closed(schema, "values")


# --- optional objects and the test hook ---------------------------------------------------


def test_network_policies_by_default_and_service_monitor_only_when_enabled() -> None:
    assert "NetworkPolicy" in kinds(render())
    assert "ServiceMonitor" not in kinds(render())
    assert "NetworkPolicy" not in kinds(render("networkPolicy.enabled=false"))
    objects = render(*ALL_FEATURES)
    policies = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }
    # Function pods get theirs from the operator, one a Function, in any namespace.
    assert policies == {(NAMESPACE, "kubefaas-gateway"), (NAMESPACE, "kubefaas-operator")}
    for component, port in (("gateway", "http"), ("operator", "metrics")):
        monitor = find(objects, "ServiceMonitor", f"kubefaas-{component}")
        endpoint = {"port": port, "path": "/metrics", "interval": "30s"}
        if component == "gateway":  # the gateway's /metrics needs its metrics token
            endpoint["bearerTokenSecret"] = {"name": "kubefaas-gateway", "key": "metrics-token"}
        assert monitor["spec"]["endpoints"] == [endpoint]
        services = [
            o
            for o in objects
            if o["kind"] == "Service"
            and o["spec"]["selector"].items() <= monitor["spec"]["selector"]["matchLabels"].items()
            and monitor["spec"]["selector"]["matchLabels"].items()
            <= o["metadata"]["labels"].items()
        ]
        assert [p["name"] for s in services for p in s["spec"]["ports"]] == [port], component


def test_gateway_policy_always_admits_the_operator_and_restricts_others_on_request() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    objects = render(
        "networkPolicy.enabled=true",
        "networkPolicy.gatewayIngressFrom[0].namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=ingress",
    )
    policy = find(objects, "NetworkPolicy", "kubefaas-gateway")
    public, internal = policy["spec"]["ingress"]
    assert public["from"] == [peer]
    operator = find(objects, "Deployment", "kubefaas-operator")
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert any(
        p["podSelector"]["matchLabels"].items() <= operator_labels.items() for p in internal["from"]
    )


def test_helm_test_hook_checks_the_gateway_health() -> None:
    pod = find(render(), "Pod", "kubefaas-test-gateway")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    [c] = pod["spec"]["containers"]
    assert c["command"][:2] == ["python3", "-c"]
    assert c["command"][-1] == "http://kubefaas-gateway.kubefaas-system.svc/healthz"
    compile(c["command"][2], "test-gateway", "exec")  # the script is valid Python


@pytest.mark.parametrize("sets", [ALL_FEATURES, REDIS], ids=["all", "redis"])
def test_one_resource_kind_per_template_file_named_by_kind(sets: tuple[str, ...]) -> None:
    """`gateway-service.yaml` renders Services only; hooks under tests/ are Pods."""
    out = helm(*template_args(*sets)).stdout
    seen = set()
    for chunk in out.split("---\n"):
        source = next((ln for ln in chunk.splitlines() if ln.startswith("# Source: ")), None)
        doc = yaml.safe_load(chunk)
        if source is None or not doc:
            continue
        path = Path(source.removeprefix("# Source: "))
        seen.add(path.name)
        if path.parent.name == "tests":
            assert doc["kind"] == "Pod", source
        else:
            assert path.stem.rsplit("-", 1)[-1] == doc["kind"].lower(), (
                f"{source} renders a {doc['kind']}"
            )
    assert {"gateway-deployment.yaml", "operator-deployment.yaml", "test-gateway.yaml"} <= seen


def test_invoke_auth_defaults_to_token_and_scrapes_need_the_metrics_token() -> None:
    objects = render()
    gateway = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    assert gateway["KUBEFAAS_AUTH_DEFAULT"] == "token"
    scrape_ref = {"name": "kubefaas-gateway", "key": "metrics-token", "optional": True}
    assert gateway["KUBEFAAS_METRICS_TOKEN"] == {"secretKeyRef": scrape_ref}
    operator = env_of(container(find(objects, "Deployment", "kubefaas-operator"), "operator"))
    assert operator["KUBEFAAS_GATEWAY_STATS_TOKEN"] == {"secretKeyRef": scrape_ref}
    assert len(find(objects, "Secret", "kubefaas-gateway")["data"]["metrics-token"]) >= 40
    opened = render("auth.default=none")
    env = env_of(container(find(opened, "Deployment", "kubefaas-gateway"), "gateway"))
    assert env["KUBEFAAS_AUTH_DEFAULT"] == "none"
    assert "/auth/default" in render_error("auth.default=basic")
