"""The operator's side of the build Job (docs/packaging.md, "On a cluster: the build Job"):
the chart's `build.*` values as the operator reads them, the build key, the Job's name,
and what a finished Job's pod says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubefaas import build_job
from kubefaas.api import parse_function
from kubefaas_operator import build_jobs
from kubefaas_operator.build_config import BuildConfig
from kubefaas_operator.config import ConfigError, load_config
from tests.unit.test_chart import container, env_of, find, render


def operator_env(*sets: str) -> dict[str, str]:
    operator = find(render(*sets), "Deployment", "kubefaas-operator")
    env = env_of(container(operator, "operator"))
    return {k: v for k, v in env.items() if isinstance(v, str)}


def test_the_charts_build_values_reach_the_operator_and_parse() -> None:
    assert not [k for k in operator_env() if k.startswith("KUBEFAAS_BUILD_")]
    env = operator_env(
        "build.registry=127.0.0.1:5000/fn",
        "build.plainHttp=true",
        "build.pipIndexUrl=http://10.0.0.5:8080/simple/",
        "build.pipExtraArgs=--trusted-host 10.0.0.5 --no-compile",
        "build.credentialsSecret=registry-push",
        "build.baseImages.python3\\.11=127.0.0.1:5000/kubefaas-runtime:0.1.0",
    )
    config = load_config(namespaces=None, gateway_url=None, verbose=False, environ=env).build
    assert config is not None
    assert config.registry == "127.0.0.1:5000/fn"
    assert config.plain_http is True
    assert config.pip_index_url == "http://10.0.0.5:8080/simple/"
    assert config.pip_extra_args == ("--trusted-host", "10.0.0.5", "--no-compile")
    assert config.credentials_secret == "registry-push"
    assert config.base_image("python3.11", {}) == "127.0.0.1:5000/kubefaas-runtime:0.1.0"
    assert (config.deadline_seconds, config.ttl_seconds) == (900, 3600)


def test_the_job_rule_is_in_the_operators_role() -> None:
    role = find(render(), "ClusterRole", "kubefaas-operator")
    jobs = [r for r in role["rules"] if r["apiGroups"] == ["batch"]]
    assert jobs == [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KUBEFAAS_BUILD_REGISTRY", "https://registry.example", "without a scheme"),
        ("KUBEFAAS_BUILD_REGISTRY", "registry", "HOST[:PORT]"),
        ("KUBEFAAS_BUILD_DEADLINE_SECONDS", "soon", "KUBEFAAS_BUILD_DEADLINE_SECONDS"),
        ("KUBEFAAS_BUILD_PIP_EXTRA_ARGS", "--x 'unclosed", "KUBEFAAS_BUILD_PIP_EXTRA_ARGS"),
    ],
)
def test_bad_build_settings_are_refused_naming_the_variable(
    name: str, value: str, expected: str
) -> None:
    environ = {"KUBEFAAS_BUILD_REGISTRY": "127.0.0.1:5000", name: value}
    with pytest.raises(ConfigError, match="KUBEFAAS_BUILD") as refused:
        load_config(namespaces=None, gateway_url=None, verbose=False, environ=environ)
    assert expected in str(refused.value)


def fn(name: str = "page", files: dict[str, str] | None = None) -> Any:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": "team", "uid": "u-1", "generation": 1},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": files or {"main.py": "x", "requirements.txt": "a==1\n"}},
            },
        }
    )


CONFIG = BuildConfig(registry="127.0.0.1:5000")


def test_the_key_follows_the_code_and_the_base_and_names_the_job_and_tag() -> None:
    files = build_jobs.code_files(inline={"main.py": "x", "requirements.txt": "a==1\n"})
    one = build_jobs.plan(fn(), files, config=CONFIG, base="rt@sha256:1")
    assert one == build_jobs.plan(fn(), dict(files), config=CONFIG, base="rt@sha256:1")
    assert one.target == f"127.0.0.1:5000/team-page:{one.key[:16]}"
    assert one.job_name == f"page-build-{one.key[:10]}"
    edited = build_jobs.plan(fn(), {**files, "main.py": b"y"}, config=CONFIG, base="rt@sha256:1")
    rebased = build_jobs.plan(fn(), files, config=CONFIG, base="rt@sha256:2")
    assert len({one.key, edited.key, rebased.key}) == 3
    # The dependencies layer's key is the requirements alone: a code edit keeps it.
    assert build_job.deps_key("python3.11", "a==1\n") == build_job.deps_key(
        "python3.11", "a==1  # pinned\n\n"
    )
    long_name = "f" * 52
    assert len(build_jobs.job_name(long_name, one.key)) <= 63


def test_a_user_config_maps_binary_data_is_hashed_as_the_pod_sees_it() -> None:
    files = build_jobs.code_files(
        config_map={"data": {"main.py": "x"}, "binaryData": {"blob.bin": "AAEC"}}
    )
    assert files == {"main.py": b"x", "blob.bin": b"\x00\x01\x02"}


def finished_job(kind: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": kind, "status": "True", "reason": "R"}]}}


def pod(message: str, exit_code: int) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message}
    return {
        "status": {"containerStatuses": [{"name": "build", "state": {"terminated": terminated}}]}
    }


def test_what_a_finished_job_says() -> None:
    assert build_jobs.job_result({"status": {}}, []).state == "running"
    ok = build_jobs.job_result(
        finished_job("Complete"), [pod(json.dumps({"image": "r/x@sha256:1"}), 0)]
    )
    assert (ok.state, ok.image) == ("succeeded", "r/x@sha256:1")
    error = json.dumps({"error": "pip could not install requirements.txt: ERROR: nope"})
    failed = build_jobs.job_result(finished_job("Failed"), [pod(error, 1)])
    assert (failed.state, failed.message) == (
        "failed",
        "pip could not install requirements.txt: ERROR: nope",
    )
    # A builder that crashed: FallbackToLogsOnError put the end of its log there.
    crashed = build_jobs.job_result(
        finished_job("Failed"), [pod("Traceback ...\nMemoryError", 137)]
    )
    assert crashed.state == "failed"
    assert "MemoryError" in crashed.message
    # Deadline exceeded before the pod ran: the Job's own reason.
    gone = build_jobs.job_result(finished_job("Failed"), [])
    assert "without a result" in gone.message
