"""`spec.tmpSize` in local mode (docs/security.md, "Local mode isolation"): a handler that
writes past it gets a clear failure naming the limit, and the gateway keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

# Writes `mib` files of 1 MiB each into /tmp, then holds the call for `hold` seconds (an
# instance busy with the data it wrote), and answers how much it wrote.
WRITER = """\
import os, tempfile, time

def handler(event, context):
    folder = tempfile.gettempdir()
    chunk = b"x" * (1024 * 1024)
    if event.get("one_file"):
        with open(os.path.join(folder, "big"), "wb") as out:
            for _ in range(event["mib"]):
                out.write(chunk)
                out.flush()
    else:
        for n in range(event["mib"]):
            with open(os.path.join(folder, f"part-{n}"), "wb") as out:
                out.write(chunk)
    time.sleep(event.get("hold", 0))
    return {"wrote": event["mib"], "tmp": folder}
"""


@pytest.fixture
def gateway(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> RunningGateway:
    manifest_dir.add_function("writer", WRITER, tmpSize="64Mi", timeoutSeconds=30)
    return start_gateway(
        manifest_dir.path, env={"KUBEFAAS_LOCAL_TMP_CHECK_INTERVAL_SECONDS": "0.2"}
    )


def test_writing_past_tmp_size_recycles_the_instance_with_a_clear_error(
    gateway: RunningGateway,
) -> None:
    within = gateway.invoke("writer", {"mib": 8})
    assert within.status_code == 200, within.text
    [first_pid] = gateway.instance_pids()

    over = gateway.invoke("writer", {"mib": 80, "hold": 10})  # 80 files of 1 MiB > 64Mi
    assert over.status_code == 502, over.text
    error = over.json()["error"]
    assert error["errorType"] == "TmpSizeExceeded"
    assert "over spec.tmpSize 64Mi" in error["message"]
    assert "default/writer" in error["message"]
    log = gateway.stderr()
    assert "function default/writer" in log
    assert "over spec.tmpSize 64Mi" in log
    assert gateway.sample("kubefaas_local_tmp_size_exceeded_total", function="writer") == 1

    # The gateway keeps serving: the next call runs on a fresh instance with an empty /tmp.
    again = gateway.invoke("writer", {"mib": 1})
    assert again.status_code == 200, again.text
    assert first_pid not in gateway.instance_pids()
    assert gateway.client.get("/readyz").status_code == 200


def test_one_file_past_tmp_size_fails_the_write_itself(gateway: RunningGateway) -> None:
    response = gateway.invoke("writer", {"mib": 100, "one_file": True})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["errorType"] == "OSError"  # EFBIG, raised in the handler
    assert "File too large" in error["errorMessage"]
    deadline = time.monotonic() + 5
    while gateway.invoke("writer", {"mib": 1}).status_code != 200:
        assert time.monotonic() < deadline, "the function never served again"
        time.sleep(0.2)
