"""`kubefaas logs --cluster` on real pods (docs/logs.md): two instances' lines merged in
time order, one invocation's lines alone, and the lines of pods a scale-to-zero deleted,
kept by the gateway's log keeper.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import REPO, wait_for

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e

IDLE_SECONDS = 10  # the smallest scaleToZeroAfterSeconds the API allows
CALLS = 8

# Prints one line per invocation, with the caller's tag, and answers with its pod's name.
CODE = """\
import os

def handler(event, context):
    print(f"said {event['tag']}")
    return {"instance": os.environ.get("HOSTNAME"), "requestId": context.request_id}
"""


def kubefaas_logs(
    release: Release, name: str, *args: str, stderr: list[str] | None = None
) -> list[dict[str, Any]]:
    """`kubefaas logs NS/NAME --cluster ...` as a user runs it: the JSON lines printed
    (what it said on stderr is appended to `stderr`)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "kubefaas.cli", "logs",
            f"{release.functions_namespace}/{name}", "--cluster",
            f"--kubeconfig={release.cluster.kubeconfig}", *args,
        ],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, f"kubefaas logs failed:\n{result.stderr}"
    if stderr is not None:
        stderr.append(result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def said(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The handler's own lines, by the tag it printed."""
    return {
        line["msg"].removeprefix("said "): line
        for line in lines
        if line.get("logger") == "stdout" and line.get("msg", "").startswith("said ")
    }


def ready_pods(release: Release, name: str) -> list[str]:
    return [
        pod["metadata"]["name"]
        for pod in release.function_pods(name)
        if not pod["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
    ]


def test_logs_of_two_instances_merged_then_kept_after_scale_to_zero(
    release: Release, deploy: Deploy
) -> None:
    name = deploy(
        "hello",
        spec={
            "code": {"inline": {"main.py": CODE}},
            "scaling": {"minScale": 2, "scaleToZeroAfterSeconds": IDLE_SECONDS},
        },
    )
    pods = wait_for(
        f"two ready pods of {name} (minScale 2)",
        lambda: (found := ready_pods(release, name)) and len(found) == 2 and found,
        timeout=180,
        interval=1,
        explain=release.diagnostics,
    )
    # The gateway probes new pods itself: wait until it routes to both.
    wait_for(
        f"the gateway to route to both pods of {name}",
        lambda: (release.function_stats(name) or {}).get("readyInstances") == 2,
        timeout=60,
        explain=lambda: f"{release.function_stats(name)}\n{release.diagnostics()}",
    )

    answers: dict[str, dict[str, Any]] = {}
    for n in range(CALLS):
        response = release.gateway.invoke(name, {"tag": f"t{n}"})
        assert response.status_code == 200, response.text
        answers[f"t{n}"] = response.json()
    served_by = {answer["instance"] for answer in answers.values()}
    assert served_by == set(pods), f"invocations landed on {served_by}, pods are {pods}"

    # (a) Both instances' lines, merged oldest first.
    lines = kubefaas_logs(release, name)
    printed = said(lines)
    assert set(printed) == set(answers), f"missing lines: {set(answers) - set(printed)}"
    for tag, answer in answers.items():
        assert printed[tag]["instance"] == answer["instance"]
        assert printed[tag]["requestId"] == answer["requestId"]
    assert {line["instance"] for line in lines} >= set(pods)
    stamps = [line["ts"] for line in lines]
    assert stamps == sorted(stamps), "lines are not merged in time order"

    # One invocation: its own line and its REPORT, nothing of the others.
    one = answers["t3"]["requestId"]
    only = kubefaas_logs(release, name, "--invocation", one)
    assert only, f"no lines for invocation {one}"
    assert {line.get("requestId") for line in only} == {one}
    assert list(said(only)) == ["t3"]
    assert [line for line in only if line.get("type") == "REPORT"], "no REPORT line"

    # (b) Scale to zero: the pods, and with them the logs the API server can serve, go.
    release.cluster.kubectl(
        "patch", "function", name, "-n", release.functions_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"scaling": {"minScale": 0}}}),
    )  # fmt: skip
    wait_for(
        f"{name} to scale to zero",
        lambda: release.function_replicas(name) == 0 and not release.function_pods(name),
        timeout=IDLE_SECONDS + 180,
        interval=1,
        explain=release.diagnostics,
    )
    gone = release.cluster.kubectl(
        "logs", pods[0], "-n", release.functions_namespace, check=False
    )  # fmt: skip
    assert gone.returncode != 0
    assert "not found" in gone.stderr.lower(), gone.stderr
    said_on_stderr: list[str] = []
    assert said(kubefaas_logs(release, name, stderr=said_on_stderr)) == {}, "no pod, no lines"
    assert "no pod of" in said_on_stderr[0]
    assert "--gateway URL --token T" in said_on_stderr[0]

    # The gateway kept what those pods printed as they ended.
    kept = kubefaas_logs(
        release, name, f"--gateway={release.gateway.url}", f"--token={release.admin_token()}"
    )
    printed = said(kept)
    assert set(printed) == set(answers), f"not kept: {set(answers) - set(printed)}"
    for tag, answer in answers.items():
        assert printed[tag]["instance"] == answer["instance"]
    stamps = [line["ts"] for line in kept]
    assert stamps == sorted(stamps)
    assert {line["instance"] for line in kept} == set(pods)
    # Kept until each container exited: the runtime's last words while stopping are there.
    drained = {line["instance"] for line in kept if line.get("msg") == "drained"}
    assert drained == set(pods), f"no 'drained' line kept for {set(pods) - drained}"
    only = kubefaas_logs(
        release, name, f"--gateway={release.gateway.url}", f"--token={release.admin_token()}",
        "--invocation", one,
    )  # fmt: skip
    assert list(said(only)) == ["t3"]
    assert {line.get("requestId") for line in only} == {one}
