"""The real API server accepts the CRD and every example, and refuses bad Functions itself.

What a user sees from `kubectl apply`: each bound (docs/architecture.md, "Defaults and
bounds") and each cross-field rule is
enforced by the API server (OpenAPI schema + CEL) with a message naming the field, before
any operator runs; unknown fields are refused by kubectl's default strict validation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas import limits
from kubefaas_cluster.pytest_plugin import KubeApi
from tests.code_paths import BAD_PATHS, GOOD_PATHS

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "function.yaml"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


BASE: dict[str, Any] = {
    "apiVersion": "kubefaas.io/v1alpha1",
    "kind": "Function",
    "metadata": {"name": "bad"},
    "spec": {
        "runtime": "python3.11",
        "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
    },
}


def manifest(name: str = "bad", /, **spec: Any) -> str:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    # JSON, not YAML: kubectl reads YAML 1.1, where a bare `y` is a boolean.
    return json.dumps(doc)


def test_the_crd_is_established_with_printer_columns(kube_api: KubeApi, crd: None) -> None:
    found = kube_api.kubectl_json("get", "crd", "functions.kubefaas.io")
    version = found["spec"]["versions"][0]
    assert version["name"] == limits.API_VERSION
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Ready", "Replicas", "Desired", "URL"]
    assert found["spec"]["names"]["shortNames"] == ["fn"]


def test_kubectl_get_fn_shows_the_triggers_summary_the_operator_writes(
    kube_api: KubeApi, crd: None, namespace: str
) -> None:
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("ticking"))
    summary = "2 (last 2026-01-02T03:05:06Z)"
    kube_api.kubectl(
        "patch", "fn", "ticking", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"triggersSummary": summary}}),
    )  # fmt: skip
    shown = kube_api.kubectl("get", "fn", "ticking", "-n", namespace).stdout.splitlines()
    header, row = shown[0].split(), shown[1]
    assert "TRIGGERS" in header
    assert summary in row


def test_every_example_applies_and_gets_the_documented_defaults(
    kube_api: KubeApi, crd: None, namespace: str
) -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    kube_api.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    names = {
        doc["metadata"]["name"]
        for path in examples
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "Function"
    }
    listed = kube_api.kubectl_json("get", "fn", "-n", namespace)["items"]
    assert {item["metadata"]["name"] for item in listed} == names
    hello = kube_api.kubectl_json("get", "fn", "hello", "-n", namespace)["spec"]
    # Filled in by the API server from the CRD's defaults: `kubectl get -o yaml` shows them.
    assert hello["timeoutSeconds"] == limits.TIMEOUT_DEFAULT
    assert hello["memory"] == limits.MEMORY_DEFAULT
    assert hello["tmpSize"] == limits.TMP_SIZE_DEFAULT
    assert hello["handler"] == limits.DEFAULT_HANDLER
    assert hello["scaling"]["maxScale"] == limits.MAX_SCALE_DEFAULT
    assert hello["scaling"]["scaleToZeroAfterSeconds"] == limits.SCALE_TO_ZERO_AFTER_DEFAULT
    assert hello["async"]["maxRetries"] == limits.ASYNC_MAX_RETRIES_DEFAULT


def test_a_custom_image_function_and_a_configmap_function_are_accepted(
    kube_api: KubeApi, crd: None, namespace: str
) -> None:
    image = manifest("custom", runtime=None, code=None, image="registry.example/fn:1")
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=image)
    from_cm = manifest("from-cm", code={"configMap": {"name": "src"}})
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=from_cm)


def test_a_source_tree_and_a_code_path_are_accepted(
    kube_api: KubeApi, crd: None, namespace: str
) -> None:
    """The model's good paths (tests/code_paths.py) pass the API server too."""
    tree = {"main.py": "x = 1", **{path: "y = 2" for path in GOOD_PATHS}}
    kube_api.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("tree", code={"inline": tree})
    )
    local = manifest("from-folder", code={"path": "./src"})
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=local)


INVALID = [
    # (id, manifest, field named in the message, rule text)
    (
        "timeout-low",
        manifest(timeoutSeconds=0),
        "spec.timeoutSeconds",
        "greater than or equal to 1",
    ),
    (
        "timeout-high",
        manifest(timeoutSeconds=901),
        "spec.timeoutSeconds",
        "less than or equal to 900",
    ),
    ("memory-low", manifest(memory="32Mi"), "spec.memory", "must be between 64Mi and 10Gi"),
    ("memory-high", manifest(memory="11Gi"), "spec.memory", "must be between 64Mi and 10Gi"),
    ("memory-not-a-quantity", manifest(memory="lots"), "spec.memory", "should match"),
    ("tmp-high", manifest(tmpSize="20Gi"), "spec.tmpSize", "must be between 64Mi and 10Gi"),
    ("tmp-low", manifest(tmpSize="1Mi"), "spec.tmpSize", "must be between 64Mi and 10Gi"),
    (
        "max-scale-high",
        manifest(scaling={"maxScale": 1001}),
        "spec.scaling.maxScale",
        "less than or equal to 1000",
    ),
    (
        "max-scale-zero",
        manifest(scaling={"maxScale": 0}),
        "spec.scaling.maxScale",
        "greater than or equal to 1",
    ),
    (
        "min-above-max",
        manifest(scaling={"minScale": 5, "maxScale": 2}),
        "spec.scaling",
        "scaling.minScale must not exceed scaling.maxScale",
    ),
    (
        "provisioned-above-max",
        manifest(
            scaling={"maxScale": 2, "provisioned": [{"schedule": "* 9 * * *", "minScale": 3}]}
        ),
        "spec.scaling",
        "scaling.provisioned[].minScale must not exceed scaling.maxScale",
    ),
    (
        "provisioned-every",
        manifest(scaling={"provisioned": [{"schedule": "@every 1m", "minScale": 1}]}),
        "spec.scaling.provisioned[0].schedule",
        "should match",
    ),
    (
        "scale-to-zero-too-soon",
        manifest(scaling={"scaleToZeroAfterSeconds": 5}),
        "spec.scaling",
        "must be 0 (never) or at least 10",
    ),
    (
        "target-concurrency-zero",
        manifest(scaling={"targetConcurrency": 0}),
        "spec.scaling.targetConcurrency",
        "greater than or equal to 1",
    ),
    (
        "retries-high",
        manifest(**{"async": {"maxRetries": 11}}),
        "spec.async.maxRetries",
        "less than or equal to 10",
    ),
    (
        "event-age-low",
        manifest(**{"async": {"maxEventAgeSeconds": 59}}),
        "spec.async.maxEventAgeSeconds",
        "greater than or equal to 60",
    ),
    (
        "runtime-and-image",
        manifest(image="registry.example/fn:1"),
        "spec",
        "set exactly one of spec.runtime and spec.image",
    ),
    (
        "neither-runtime-nor-image",
        manifest(runtime=None, code=None),
        "spec",
        "set exactly one of spec.runtime and spec.image",
    ),
    (
        "code-with-image",
        manifest(runtime=None, image="registry.example/fn:1"),
        "spec",
        "spec.code goes with spec.runtime",
    ),
    ("runtime-without-code", manifest(code=None), "spec", "spec.runtime needs spec.code"),
    ("unknown-runtime", manifest(runtime="python2.7"), "spec.runtime", "Unsupported value"),
    ("bad-event-format", manifest(eventFormat="xml"), "spec.eventFormat", "Unsupported value"),
    ("handler-without-function", manifest(handler="main"), "spec.handler", "should match"),
    (
        "handler-module-not-in-code",
        manifest(handler="app.handler"),
        "spec",
        "spec.handler's module must be one of the files in spec.code.inline",
    ),
    (
        "inline-and-configmap",
        manifest(code={"inline": {"main.py": "x"}, "configMap": {"name": "c"}}),
        "spec.code",
        "set exactly one of code.inline, code.configMap and code.path",
    ),
    *[
        (
            f"inline-path-{index}",
            manifest(code={"inline": {"main.py": "x = 1", path: "y = 2"}}),
            "spec.code.inline",
            "inline file paths must be relative",
        )
        for index, path in enumerate(BAD_PATHS)
    ],
    (
        "duplicate-env",
        manifest(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        "spec",
        "spec.env names must be unique",
    ),
    (
        "bad-env-name",
        manifest(env=[{"name": "1A", "value": "1"}]),
        "spec.env[0].name",
        "should match",
    ),
    (
        "destination-url-and-function",
        manifest(**{"async": {"onFailure": {"url": "http://x", "function": "y"}}}),
        "spec.async.onFailure",
        "a destination sets exactly one of url and function",
    ),
    (
        "trigger-schedule-and-queue",
        manifest(
            triggers=[
                {
                    "name": "t",
                    "schedule": {"expression": "@every 5s"},
                    "queue": {"redis": {"url": "redis://127.0.0.1:1", "stream": "s", "group": "g"}},
                }
            ]
        ),
        "spec.triggers[0]",
        "a trigger sets exactly one of schedule and queue",
    ),
    (
        "trigger-schedule-not-cron",
        manifest(triggers=[{"name": "t", "schedule": {"expression": "every day"}}]),
        "spec.triggers[0].schedule.expression",
        "should match",
    ),
    (
        "trigger-every-with-timezone",
        manifest(
            triggers=[
                {"name": "t", "schedule": {"expression": "@every 5s", "timezone": "Europe/Paris"}}
            ]
        ),
        "spec.triggers[0].schedule",
        "schedule.timezone applies to cron expressions",
    ),
    (
        "trigger-queue-two-sources",
        manifest(
            triggers=[
                {
                    "name": "t",
                    "queue": {
                        "nats": {
                            "url": "nats://127.0.0.1:1",
                            "stream": "S",
                            "subject": "s",
                            "consumer": "c",
                        },
                        "redis": {"url": "redis://127.0.0.1:1", "stream": "s", "group": "g"},
                    },
                }
            ]
        ),
        "spec.triggers[0].queue",
        "a queue trigger sets exactly one source: nats or redis",
    ),
    (
        "trigger-names-unique",
        manifest(
            triggers=[
                {"name": "t", "schedule": {"expression": "@every 5s"}},
                {"name": "t", "schedule": {"expression": "0 * * * *"}},
            ]
        ),
        "spec",
        "spec.triggers names must be unique",
    ),
    (
        "trigger-max-in-flight-zero",
        manifest(
            triggers=[
                {
                    "name": "t",
                    "queue": {
                        "redis": {"url": "redis://127.0.0.1:1", "stream": "s", "group": "g"},
                        "maxInFlight": 0,
                    },
                }
            ]
        ),
        "spec.triggers[0].queue.maxInFlight",
        "greater than or equal to 1",
    ),
    ("unknown-field", manifest(memroy="1Gi"), "spec.memroy", "unknown field"),
    (
        "name-too-long-for-a-service",
        manifest("f" * 64),
        "metadata.name",
        "must be at most 63 characters",
    ),
    (
        "name-not-a-dns-label",
        manifest("1fn"),
        "metadata.name",
        "must be a DNS-1035 label",
    ),
]


@pytest.mark.parametrize(
    ("document", "field", "rule"),
    [pytest.param(doc, field, rule, id=name) for name, doc, field, rule in INVALID],
)
def test_the_api_server_refuses_a_bad_function_naming_field_and_rule(
    kube_api: KubeApi, crd: None, namespace: str, document: str, field: str, rule: str
) -> None:
    result = kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=document, check=False)
    assert result.returncode != 0, f"accepted:\n{document}"
    message = result.stderr
    assert field in message, message
    assert rule in message, message
    # Nothing was stored.
    assert kube_api.kubectl_json("get", "fn", "-n", namespace)["items"] == []
