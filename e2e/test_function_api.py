"""The Function API as a kubectl user meets it: bad manifests refused, deletion cleans up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import KubectlError, function_manifest, wait_for
from kubefaas import naming

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"timeoutSeconds": 0}, "spec.timeoutSeconds"),
        ({"memory": "8Mi"}, "spec.memory"),
        ({"scaling": {"scaleToZeroAfterSeconds": 5}}, "scaleToZeroAfterSeconds"),
        ({"scaling": {"minScale": 3, "maxScale": 2}}, "minScale"),
        ({"eventFormat": "xml"}, "spec.eventFormat"),
    ],
)
def test_kubectl_apply_refuses_a_bad_manifest_naming_the_field(
    release: Release, spec: dict[str, Any], field: str
) -> None:
    manifest = function_manifest(
        "hello", name="bad-hello", namespace=release.functions_namespace, spec=spec
    )

    result = release.cluster.kubectl("apply", "-f", "-", input=manifest, check=False)

    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr
    missing = release.cluster.kubectl(
        "get", "function", "bad-hello", "-n", release.functions_namespace, check=False
    )
    assert missing.returncode != 0, "a refused Function must not exist"


def test_deleting_a_function_removes_its_pods_and_children(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("hello")
    assert release.gateway.invoke(name, {}).status_code == 200
    assert release.function_pods(name), "the call started a pod"

    release.cluster.kubectl("delete", "function", name, "-n", release.functions_namespace)

    def children() -> list[str]:
        found = release.cluster.items(
            "deployments,replicasets,pods,services,configmaps",
            "-n",
            release.functions_namespace,
            "-l",
            f"{naming.FUNCTION_LABEL}={name}",
        )
        return [f"{item['kind']}/{item['metadata']['name']}" for item in found]

    wait_for(
        f"the children of Function {name} to be garbage-collected",
        lambda: not children(),
        timeout=120,
        explain=lambda: str(children()),
    )
    after = release.gateway.invoke(name, {})
    assert after.status_code == 404, after.text


def test_kubectl_get_fn_shows_readiness_and_the_invoke_url(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("hello")

    def ready() -> dict[str, Any] | None:
        fn: dict[str, Any] = release.cluster.json(
            "get", "fn", name, "-n", release.functions_namespace
        )
        conditions = fn.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return fn
        return None

    fn = wait_for(f"Function {name} to be Ready", ready, timeout=60)
    assert fn["status"]["url"].endswith(f"/function/{release.functions_namespace}/{name}")
    table = release.cluster.kubectl("get", "fn", name, "-n", release.functions_namespace).stdout
    assert "READY" in table
    assert "URL" in table


def test_unknown_field_is_an_error_not_silently_dropped(release: Release) -> None:
    manifest = function_manifest(
        "hello", name="typo-hello", namespace=release.functions_namespace, spec={"timeout": 3}
    )
    with pytest.raises(KubectlError, match="timeout"):
        release.cluster.kubectl("apply", "--validate=strict", "-f", "-", input=manifest)
