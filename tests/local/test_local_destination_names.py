"""A destination URL whose host is a name is judged by the gateway when it sends, on the
addresses the name resolves to (docs/architecture.md, "Refused destinations"): the
operator cannot tell from the URL, the gateway still refuses. `localhost` is the one name
used, resolved by the machine itself; nothing leaves the machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.local.test_local_ssrf import ECHO, sink

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

__all__ = ["sink"]

pytestmark = pytest.mark.local


def test_a_destination_name_resolving_to_loopback_is_refused_when_sent(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    sink: tuple[str, list[str]],
) -> None:
    url, received = sink
    named = url.replace("127.0.0.1", "localhost")
    manifest_dir.add_function("echo", ECHO, **{"async": {"onSuccess": {"url": f"{named}/dest"}}})
    gateway = start_gateway(manifest_dir.path)
    assert gateway.client.post("/async-function/echo", json={}).status_code == 202
    deadline = time.monotonic() + 15
    while "not sent" not in gateway.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = gateway.stderr()
    assert f"'{named}/dest' goes to 127.0.0.1, a loopback address" in log, log
    assert received == []
