"""What a caller sees when things go wrong, and what the operator sees on stderr/metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from kubefaas import limits

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local


def test_unknown_function_is_404_naming_it(examples_gateway: RunningGateway) -> None:
    response = examples_gateway.invoke("nope", {})
    assert response.status_code == 404
    assert "default/nope" in response.json()["error"]["message"]
    assert response.json()["error"]["invocationId"] == response.headers["x-invocation-id"]


def test_body_over_6_mib_is_413_and_at_the_limit_is_served(
    examples_gateway: RunningGateway,
) -> None:
    limit = limits.SYNC_BODY_LIMIT_BYTES
    too_big = examples_gateway.invoke("hello", content=b"x" * (limit + 1))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "PayloadTooLarge"
    at_limit = examples_gateway.invoke("hello", content=b"x" * limit)
    assert at_limit.status_code == 200


def test_streamed_body_over_6_mib_is_413(examples_gateway: RunningGateway) -> None:
    chunk = b"x" * 256 * 1024

    def stream() -> Iterator[bytes]:
        for _ in range(limits.SYNC_BODY_LIMIT_BYTES // len(chunk) + 4):
            yield chunk

    response = examples_gateway.invoke("hello", content=stream())  # chunked, no length
    assert response.status_code == 413
    assert examples_gateway.invoke("hello", {}).status_code == 200


def test_handler_past_its_timeout_is_504_and_the_function_keeps_serving(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_example("slow", spec={"timeoutSeconds": 1})
    gateway = start_gateway(manifest_dir.path)
    gateway.invoke("slow", {"seconds": 0})  # warm, so the timeout is the handler's alone
    started = time.monotonic()
    response = gateway.invoke("slow", {"seconds": 5})
    took = time.monotonic() - started
    assert response.status_code == 504
    # The handler itself ran out of time (not a wait for an instance).
    assert response.json()["error"]["type"] == "FunctionTimedOut"
    assert 0.9 <= took < 2.5
    assert gateway.invoke("slow", {"seconds": 0.1}).status_code == 200


def test_bad_manifests_are_reported_and_the_good_ones_served(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_example("hello")
    manifest_dir.add_example("counter", name="too-big", spec={"scaling": {"maxScale": 5000}})
    manifest_dir.add_raw("broken.yaml", "apiVersion: kubefaas.io/v1alpha1\nkind: [unclosed\n")
    gateway = start_gateway(manifest_dir.path)
    errors = gateway.stderr()
    assert "too-big.yaml" in errors
    assert "spec.scaling.maxScale" in errors
    assert "less than or equal to 1000" in errors
    assert "broken.yaml" in errors
    assert "default/hello" in gateway.stdout()
    assert "too-big" not in gateway.stdout()
    assert gateway.invoke("hello", {}).status_code == 200
    assert gateway.invoke("too-big", {}).status_code == 404


def test_code_from_a_configmap_in_the_folder_is_served(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_raw(
        "shared.yaml",
        """\
apiVersion: v1
kind: ConfigMap
metadata: {name: shared-code}
data:
  app.py: |
    def handle(event, context):
        return {"from": "configmap"}
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: from-cm}
spec:
  runtime: python3.11
  handler: app.handle
  code: {configMap: {name: shared-code}}
""",
    )
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("from-cm", {}).json() == {"from": "configmap"}


def test_metrics_count_invocations(examples_gateway: RunningGateway) -> None:
    for _ in range(2):
        examples_gateway.invoke("hello", {})
    examples_gateway.invoke("fail", {})
    assert examples_gateway.sample("kubefaas_invocations_total", function="hello", code="200") == 2
    assert examples_gateway.sample("kubefaas_invocations_total", function="fail", code="502") == 1
    assert examples_gateway.sample("kubefaas_instances", function="hello", state="ready") == 1


def test_handler_that_fails_to_import_answers_502_with_the_import_error(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "broken-init", "import json\nraise ImportError('no such dependency')\n"
    )
    manifest_dir.add_example("hello")
    gateway = start_gateway(manifest_dir.path)
    response = gateway.invoke("broken-init", {})
    assert response.status_code == 502
    error = response.json()["error"]
    assert "Import" in error["errorType"]  # Lambda names it Runtime.ImportModuleError
    assert "no such dependency" in error["errorMessage"]
    assert gateway.invoke("hello", {}).status_code == 200
