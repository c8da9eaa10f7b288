"""The chart's Grafana dashboard and PrometheusRule name only metrics the code exports, and
the rules pass `promtool check rules` (docs/logs.md).

Rendered with real helm (see test_chart.py); the exported names come from the real
registries: the gateway's (`Metrics`, async and usage metrics on one registry, as
`create_app` builds it) and the operator's module-level metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from kubefaas_gateway.metering import Metering
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.tracker import Tracker
from tests.unit.test_chart import find, render

ON = ("metrics.grafanaDashboard.enabled=true", "metrics.prometheusRule.enabled=true")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class _NoInstances:
    def instances(self, fn: Any) -> list[Any]:
        return []


def _exposed(registry: CollectorRegistry, prefix: str = "kubefaas_") -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith(prefix):
            for suffix in SUFFIXES.get(family.type, ("",)):
                names.add(family.name + suffix)
    return names


def exported_metric_names() -> set[str]:
    metrics = Metrics(
        functions=lambda: [], tracker=Tracker(), backend=_NoInstances(), signals=ScalingSignals()
    )  # type: ignore[arg-type]
    AsyncMetrics(metrics.registry)
    Metering(metrics.registry, store=None)
    import kubefaas_operator.operator_metrics  # noqa: F401 - registers the operator's metrics

    return _exposed(metrics.registry) | _exposed(REGISTRY, "kubefaas_operator_")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside label matchers, grouping
    clauses and strings that are not followed by `(` (a function call)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    names = set()
    for match in _NAME.finditer(stripped):
        rest = stripped[match.end() :].lstrip()
        word = match.group(0)
        if rest.startswith("(") or word in {"and", "or", "unless", "bool", "offset", "le"}:
            continue
        if word[0].isdigit():
            continue
        names.add(word)
    return names


def _rendered() -> tuple[dict[str, Any], list[str], list[str]]:
    objects = render(*ON)
    rule = find(objects, "PrometheusRule", "kubefaas")
    dashboard_map = find(objects, "ConfigMap", "kubefaas-dashboard")
    dashboard = json.loads(dashboard_map["data"]["kubefaas-functions.json"])
    alert_exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    panel_exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return rule, alert_exprs, panel_exprs


def test_expression_parser_finds_metric_names_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, function) (rate(a_bucket{code=~"5.."}[5m])))'
        " / on (function) b > 0.5"
    )
    assert metric_names(expr) == {"a_bucket", "b"}


def test_every_metric_an_alert_or_a_panel_names_is_exported() -> None:
    rule, alert_exprs, panel_exprs = _rendered()
    exported = exported_metric_names()
    assert {"kubefaas_usage_gb_seconds_total", "kubefaas_operator_reconciles_total"} <= exported
    for expr in [*alert_exprs, *panel_exprs]:
        named = metric_names(expr)
        assert named, f"no metric found in {expr!r}"
        assert named <= exported, f"{expr!r} names {sorted(named - exported)}, not exported"
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts == {
        "KubefaasFunctionErrorRate",
        "KubefaasFunctionThrottled",
        "KubefaasDeadLettersGrowing",
        "KubefaasAsyncQueueOld",
        "KubefaasOperatorReconcileErrors",
    }


def test_dashboard_configmap_carries_the_sidecar_label_and_both_are_off_by_default() -> None:
    dashboard_map = find(render(*ON), "ConfigMap", "kubefaas-dashboard")
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render()}
    assert ("PrometheusRule", "kubefaas") not in kinds
    assert ("ConfigMap", "kubefaas-dashboard") not in kinds


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: `make system-deps` installs the Debian prometheus package")
    rule, _, _ = _rendered()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout
