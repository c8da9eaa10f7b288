"""Fixtures for the end-to-end tier: the Helm chart on a real cluster, real pods, real HTTP.

The session installs the chart once (`release`) into its own namespace, with Functions in
a second namespace; both enforce the "restricted" Pod Security Standard, so every pod the
chart or the operator makes is checked by the API server's admission. How the cluster is
chosen and the gateway reached is in `e2e.harness`.

    def test_something(release, deploy):
        name = deploy("counter", spec={"scaling": {"scaleToZeroAfterSeconds": 10}})
        response = release.gateway.invoke(name, {"x": 1})
        assert response.headers["x-cold-start"] == "true"

`deploy(example, *, name=None, **merge)` applies ``examples/<example>.yaml`` (deep-merged
with `merge`) under a unique name into the functions namespace and deletes it after the
test. Tests marked ``@pytest.mark.uninstall`` run last: they take the release down. A
failed test's report shows the release's pods, events and gateway/operator logs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.harness import (
    Cluster,
    Release,
    function_manifest,
    installed_release,
    resolve_cluster,
    wait_for,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real cluster with a kubelet (make e2e)")
    config.addinivalue_line(
        "markers", "uninstall: takes the session's release down, so it runs last"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that uninstall the release run after every test that needs it."""
    items.sort(key=lambda item: item.get_closest_marker("uninstall") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report carries the release's state, taken at the moment it failed."""
    report: pytest.TestReport = yield
    found = getattr(item, "funcargs", {}).get("release")
    if report.when == "call" and report.failed and isinstance(found, Release) and found.installed:
        report.sections.append(("release state at failure", found.diagnostics()))
    return report


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return resolve_cluster()


@pytest.fixture(scope="session")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart, installed once per session under restricted Pod Security."""
    values = {
        # These tests are about everything but invoke auth (docs/security.md).
        "auth": {"default": "none"},
        "gateway": {"logLevel": "debug"},
        # The console's browser flow (test_console.py); it logs in with the admin token.
        "console": {"enabled": True},
    }
    with installed_release(cluster, "kubefaas-e2e", values) as result:
        yield result


Deploy = Callable[..., str]


@pytest.fixture
def deploy(release: Release) -> Iterator[Deploy]:
    """Apply an example under a unique name; delete every Function applied after the test."""
    applied: list[str] = []

    def apply(example: str, *, name: str | None = None, **merge: Any) -> str:
        function = name or f"{example}-{uuid.uuid4().hex[:5]}"
        manifest = function_manifest(
            example, name=function, namespace=release.functions_namespace, **merge
        )
        release.cluster.kubectl("apply", "-f", "-", input=manifest)
        applied.append(function)
        # Ready to call once the operator made the Deployment (the gateway scales it) and the
        # gateway's watch has seen the Function (until then it answers 404).
        wait_for(
            f"the operator to create Deployment {function}",
            lambda: release.cluster.kubectl(
                "get", "deployment", function, "-n", release.functions_namespace, check=False
            ).returncode == 0,
            timeout=60,
            explain=release.diagnostics,
        )  # fmt: skip
        wait_for(
            f"the gateway to know Function {function}",
            lambda: release.function_stats(function) is not None,
            timeout=30,
            explain=release.diagnostics,
        )
        return function

    yield apply
    if release.installed and applied:
        release.cluster.kubectl(
            "delete", "functions", *applied, "-n", release.functions_namespace,
            "--wait=false", "--ignore-not-found", check=False,
        )  # fmt: skip
