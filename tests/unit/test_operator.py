"""The operator's configuration and its kopf wiring, as an installer of the platform sees them."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import kopf
import pytest

from kubefaas import limits, naming
from kubefaas_operator import persistence
from kubefaas_operator.config import (
    DEFAULT_GATEWAY_URL,
    ConfigError,
    load_config,
)
from kubefaas_operator.handlers import register_all
from kubefaas_operator.handlers.builds import BUILD_SELECTOR
from kubefaas_operator.handlers.child_events import CHILD_SELECTOR
from kubefaas_operator.settings import build_settings


def config(environ: dict[str, str] | None = None, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"namespaces": None, "gateway_url": None, "verbose": False}
    options.update(kwargs)
    return load_config(environ=environ or {}, **options)


# --- configuration --------------------------------------------------------------------------


def test_defaults_watch_everything_with_the_default_images_and_gateway() -> None:
    cfg = config()
    assert cfg.clusterwide
    assert dict(cfg.runtime_images) == limits.RUNTIME_IMAGES
    assert cfg.gateway_url == DEFAULT_GATEWAY_URL
    assert (cfg.health_port, cfg.metrics_port) == (8081, 9090)


def test_namespace_flags_limit_the_watch() -> None:
    cfg = config(namespaces=["a", "b", "a"])
    assert cfg.namespaces == ("a", "b")
    assert not cfg.clusterwide


def test_gateway_url_flag_wins_over_the_environment() -> None:
    env = {"KUBEFAAS_GATEWAY_URL": "http://from-env/"}
    assert config(env).gateway_url == "http://from-env"
    assert config(env, gateway_url="https://flag.example").gateway_url == "https://flag.example"
    with pytest.raises(ConfigError, match="http"):
        config(gateway_url="gateway:8080")


def test_runtime_images_from_the_environment_replace_the_map() -> None:
    images = {"python3.11": "registry.local/rt:2", "python3.12": "registry.local/rt312:1"}
    cfg = config({"KUBEFAAS_RUNTIME_IMAGES": json.dumps(images)})
    assert dict(cfg.runtime_images) == images


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KUBEFAAS_RUNTIME_IMAGES": "{not json"}, "KUBEFAAS_RUNTIME_IMAGES"),
        ({"KUBEFAAS_RUNTIME_IMAGES": '["a"]'}, "KUBEFAAS_RUNTIME_IMAGES"),
        ({"KUBEFAAS_RUNTIME_IMAGES": '{"python3.11": ""}'}, "KUBEFAAS_RUNTIME_IMAGES"),
        ({"KUBEFAAS_OPERATOR_HEALTH_PORT": "http"}, "KUBEFAAS_OPERATOR_HEALTH_PORT"),
        ({"KUBEFAAS_OPERATOR_METRICS_PORT": "70000"}, "KUBEFAAS_OPERATOR_METRICS_PORT"),
        ({"KUBEFAAS_OPERATOR_RESYNC_SECONDS": "-1"}, "KUBEFAAS_OPERATOR_RESYNC_SECONDS"),
        ({"KUBEFAAS_OPERATOR_WORKERS": "0"}, "KUBEFAAS_OPERATOR_WORKERS"),
        ({"KUBEFAAS_OPERATOR_AUTOSCALER": "maybe"}, "KUBEFAAS_OPERATOR_AUTOSCALER"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config(env)


def test_ports_of_zero_switch_the_endpoints_off() -> None:
    cfg = config({"KUBEFAAS_OPERATOR_HEALTH_PORT": "0", "KUBEFAAS_OPERATOR_METRICS_PORT": "0"})
    assert (cfg.health_port, cfg.metrics_port) == (0, 0)


def test_the_autoscaler_reads_the_gateways_the_chart_names_else_every_gateway() -> None:
    default = config({})
    assert default.gateway_namespace is None
    assert default.gateway_selector == "app.kubernetes.io/component=gateway"
    release = "app.kubernetes.io/instance=kf,app.kubernetes.io/component=gateway"
    chart = config(
        {"KUBEFAAS_GATEWAY_NAMESPACE": "kubefaas-system", "KUBEFAAS_GATEWAY_SELECTOR": release}
    )
    assert chart.gateway_namespace == "kubefaas-system"
    assert chart.gateway_selector == release


def test_the_cli_runs_the_operator_with_the_parsed_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubefaas import cli
    from kubefaas_operator import main

    seen: dict[str, Any] = {}

    async def fake_operate(cfg: Any, **_: Any) -> int:
        seen["config"] = cfg
        return 0

    monkeypatch.setattr(main, "operate", fake_operate)
    # kopf.configure rewires the root logger for the process; keep the test run's logging.
    monkeypatch.setattr(kopf, "configure", lambda **kw: seen.update(logging=kw))
    monkeypatch.setenv("KUBEFAAS_RUNTIME_IMAGES", '{"python3.11": "x:1"}')
    code = cli.main(["operator", "--namespace", "a", "--gateway-url", "http://g", "--verbose"])
    assert code == 0
    cfg = seen["config"]
    assert cfg.namespaces == ("a",)
    assert cfg.gateway_url == "http://g"
    assert cfg.verbose
    assert seen["logging"]["verbose"]
    assert dict(cfg.runtime_images) == {"python3.11": "x:1"}


def test_the_cli_reports_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubefaas import cli

    monkeypatch.setenv("KUBEFAAS_RUNTIME_IMAGES", "nope")
    assert cli.main(["operator"]) == 2
    assert "KUBEFAAS_RUNTIME_IMAGES" in capsys.readouterr().out


# --- kopf settings ------------------------------------------------------------------------


def test_kopf_keeps_its_state_in_kubefaas_annotations_and_never_in_status() -> None:
    settings = build_settings(config())
    assert settings.persistence.finalizer == naming.FINALIZER
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == naming.PROGRESS_PREFIX
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, persistence.CompactDiffBaseStorage)
    assert diffbase.prefix == naming.PROGRESS_PREFIX


def test_kopf_posts_events_runs_standalone_and_filters_child_watches_by_label() -> None:
    settings = build_settings(config({"KUBEFAAS_OPERATOR_WORKERS": "7"}))
    assert settings.posting.enabled
    assert settings.posting.loggers
    assert settings.posting.level == logging.WARNING
    assert settings.peering.standalone
    assert isinstance(settings.watching.server_timeout, int)
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.execution.max_workers == 7
    selectors = {str(k): v for k, v in settings.watching.label_selectors.items()}
    assert len(selectors) == 5  # Deployments, Services, ConfigMaps, NetworkPolicies, Jobs
    # The children's watches, and the build Jobs' (docs/packaging.md, "On a cluster").
    assert set(selectors.values()) == {CHILD_SELECTOR, BUILD_SELECTOR}
    assert BUILD_SELECTOR.endswith("app.kubernetes.io/component=build")
    assert (
        f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY},{naming.FUNCTION_LABEL}"
    ) == CHILD_SELECTOR


def test_inline_code_is_stored_as_digests_in_the_diff_base() -> None:
    big = "x = 1\n" * 40_000  # 240 KB: verbatim, it alone would fill the annotation limit
    body = kopf.Body(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "n", "annotations": {}},
            "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": big}}},
        }
    )
    storage = persistence.diffbase_storage()
    essence = storage.build(body=body)
    stored = essence["spec"]["code"]["inline"]["main.py"]
    assert stored == persistence.digest(big)
    assert len(json.dumps(essence)) < 1000
    raw = dict(body)
    raw["spec"] = {"runtime": "python3.11", "code": {"inline": {"main.py": big + "y"}}}
    changed = kopf.Body(cast(kopf.RawBody, raw))
    assert storage.build(body=changed) != essence


def test_every_trigger_is_registered() -> None:
    registry = kopf.OperatorRegistry()
    register_all(registry)
    changing = {h.id for h in registry._changing.get_all_handlers()}
    assert {"create", "update", "resume"} <= changing
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert watching == {
        "deployment-event",
        "service-event",
        "configmap-event",
        "networkpolicy-event",
        "build-job-event",
    }
    # No handler forces a finalizer: deleting a Function never waits for the operator.
    assert not any(h.requires_finalizer for h in registry._changing.get_all_handlers())
    assert not registry._spawning.get_all_handlers()
