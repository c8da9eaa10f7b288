"""The warm pool's Deployment as the operator builds it (docs/warm-pool.md, "Pool Deployments")."""

from __future__ import annotations

import pytest

from kubefaas import limits, naming
from kubefaas.api import parse_function
from kubefaas.pool import POOL_LABEL
from kubefaas_operator import children
from kubefaas_operator.config import ConfigError, load_config
from kubefaas_operator.pool import (
    PoolSettings,
    build_pool_deployment,
    pool_drift,
    pool_sizes,
)

IMAGES = dict(limits.RUNTIME_IMAGES)
RUNTIME = "python3.11"


def _pool(**settings: object) -> dict:
    return build_pool_deployment(
        RUNTIME,
        namespace="team-a",
        replicas=2,
        settings=PoolSettings(size=2, **settings),  # type: ignore[arg-type]
        image_for_runtime=IMAGES,
    )


def test_a_pool_pod_is_a_function_pod_without_code_identity_or_credentials() -> None:
    deployment = _pool(memory="512Mi")
    assert deployment["metadata"]["name"] == "kubefaas-pool-python3-11"
    assert "ownerReferences" not in deployment["metadata"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"][POOL_LABEL] == RUNTIME
    assert naming.FUNCTION_LABEL not in spec["template"]["metadata"]["labels"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == IMAGES[RUNTIME]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "PORT": "8080",
        "TMPDIR": naming.TMP_MOUNT_PATH,
        "KUBEFAAS_POOL": "1",
    }
    assert [v["name"] for v in pod["volumes"]] == [children.TMP_VOLUME]
    assert [m["name"] for m in container["volumeMounts"]] == [children.TMP_VOLUME]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] == "512Mi"

    # The same pod security as a function's own pods.
    fn = parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "team-a", "uid": "u"},
            "spec": {"runtime": RUNTIME, "code": {"inline": {"main.py": ""}}},
        }
    )
    function_pod = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=0)["spec"][
        "template"
    ]["spec"]
    assert pod["securityContext"] == function_pod["securityContext"]
    assert container["securityContext"] == function_pod["containers"][0]["securityContext"]
    assert container["readinessProbe"] == function_pod["containers"][0]["readinessProbe"]


def test_the_per_namespace_limit_caps_all_runtimes_together() -> None:
    runtimes = ["python3.12", "python3.11"]
    assert pool_sizes(runtimes, PoolSettings(size=3, max_per_namespace=4)) == {
        "python3.11": 3,
        "python3.12": 1,
    }
    assert pool_sizes(runtimes, PoolSettings(size=0)) == {}
    assert pool_sizes(runtimes, PoolSettings(size=2, max_per_namespace=0)) == {}


def test_drift_is_replicas_image_env_or_memory() -> None:
    wanted = _pool()
    assert pool_drift(wanted, wanted) == []
    live = _pool(memory="1Gi")
    live["spec"]["replicas"] = 5
    assert pool_drift(live, wanted) == ["replicas", "memory"]


def test_pool_settings_come_from_the_environment_and_bad_ones_are_named() -> None:
    def load(**environ: str):
        return load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)

    assert load().pool == PoolSettings(size=0, max_per_namespace=4, memory="256Mi")
    assert load(KUBEFAAS_POOL_SIZE="2", KUBEFAAS_POOL_MEMORY="512Mi").pool.size == 2
    with pytest.raises(ConfigError, match="KUBEFAAS_POOL_SIZE"):
        load(KUBEFAAS_POOL_SIZE="-1")
    with pytest.raises(ConfigError, match="KUBEFAAS_POOL_MEMORY"):
        load(KUBEFAAS_POOL_MEMORY="lots")
