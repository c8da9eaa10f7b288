"""Once-only: a request that may have reached an instance is never sent again
(docs/security.md), against the real gateway and runtime processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

# Counts each run in a file, then kills its own instance before answering (a crash).
CRASH = """import os

def handler(event, context):
    if event["path"] == "/warm":
        return {"statusCode": 200, "body": "warm"}
    with open(%(runs)r, "a") as runs:
        runs.write(event["httpMethod"] + "\\n")
    os._exit(1)
"""


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
def test_a_request_whose_instance_died_runs_the_handler_once(
    method: str,
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.txt"
    manifest_dir.add_function("crash", CRASH % {"runs": str(runs)}, eventFormat="http")
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("crash", method="GET", path="/warm").status_code == 200  # pooled
    answer = gateway.invoke("crash", method=method, path="/boom")
    assert answer.status_code == 502
    assert answer.json()["error"].get("errorType") == "InstanceLost"
    assert runs.read_text().splitlines() == [method]
