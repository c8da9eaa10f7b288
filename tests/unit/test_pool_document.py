"""The warm pool's specialisation document gives a pool instance the environment the
function's own pod gets (docs/warm-pool.md), so the two paths cannot drift."""

from __future__ import annotations

import pytest

from kubefaas.api import Function, parse_function
from kubefaas.pool import INSTANCE_OWNED, ineligible_reason, specialization_document
from kubefaas_operator import children

IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}
CODE = {"main.py": "def handler(event, context):\n    return 1\n", "util.py": "X = 1\n"}


def function(**spec: object) -> Function:
    doc = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": "u-1", "generation": 3},
        "spec": {"runtime": "python3.11", "code": {"inline": CODE}, **spec},
    }
    return parse_function(doc)


def test_the_document_carries_the_deployments_environment_but_the_instances_own() -> None:
    fn = function(
        env=[{"name": "GREETING", "value": "hi"}, {"name": "PORT", "value": "1"}],
        memory="256Mi",
        timeoutSeconds=12,
    )
    deployment = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    pod_env = {e["name"]: e["value"] for e in container["env"]}
    version = int(pod_env["KUBEFAAS_FUNCTION_VERSION"])

    doc = specialization_document(fn, version=version)

    expected = {k: v for k, v in pod_env.items() if k not in INSTANCE_OWNED}
    assert doc["env"] == expected
    assert doc["env"]["GREETING"] == "hi"
    assert "PORT" not in doc["env"]  # the user's PORT is shadowed in the pod too
    assert doc["files"] == CODE


def test_code_from_a_config_map_must_be_passed_in() -> None:
    fn = function(code={"configMap": {"name": "hello-code"}})
    with pytest.raises(ValueError, match="team-a/hello has no inline code"):
        specialization_document(fn, version=1)
    doc = specialization_document(fn, version=1, files={"main.py": "x = 1\n"})
    assert doc["files"] == {"main.py": "x = 1\n"}


def test_only_functions_that_fit_a_pool_instance_are_eligible() -> None:
    assert ineligible_reason(function(memory="256Mi"), pool_memory_mib=256) is None
    reason = ineligible_reason(function(memory="512Mi"), pool_memory_mib=256)
    assert reason is not None
    assert "more memory" in reason


def test_a_function_that_reads_secrets_or_needs_dependencies_never_uses_a_pool_instance() -> None:
    mounted = function(secrets=[{"name": "api-keys"}])
    from_env = function(
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-keys", "key": "t"}}}]
    )
    with_deps = function(code={"inline": {**CODE, "requirements.txt": "jinja2\n"}})
    assert "Secrets" in (ineligible_reason(mounted, pool_memory_mib=256) or "")
    assert "Secrets" in (ineligible_reason(from_env, pool_memory_mib=256) or "")
    assert "dependencies" in (ineligible_reason(with_deps, pool_memory_mib=256) or "")
