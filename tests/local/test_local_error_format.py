"""The gateway's own refusals (unknown route, wrong method, a query that fails validation)
answer in its JSON error format, `{"error": {"type", "message", "invocationId"}}`, never
FastAPI's `{"detail": ...}` (docs/architecture.md, "Gateway HTTP API")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ADMIN_TOKEN = "error-format-admin-token"


@pytest.fixture
def gateway(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> RunningGateway:
    manifest_dir.add_function("echo", "def handler(event, context):\n    return event\n")
    return start_gateway(manifest_dir.path, env={"KUBEFAAS_ADMIN_TOKEN": ADMIN_TOKEN})


def test_unknown_route_is_a_json_404_naming_the_path(gateway: RunningGateway) -> None:
    response = gateway.client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "RouteNotFound"
    assert "GET /no/such/route" in error["message"]
    assert "detail" not in response.json()
    # With the console off its paths are unknown routes like any other.
    console = gateway.client.get("/console/login")
    assert console.status_code == 404
    assert console.json()["error"]["type"] == "RouteNotFound"


def test_wrong_method_is_a_json_405_with_allow(gateway: RunningGateway) -> None:
    response = gateway.client.delete("/readyz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    error = response.json()["error"]
    assert error["type"] == "MethodNotAllowed"
    assert "DELETE /readyz" in error["message"]
    assert "allowed: GET" in error["message"]
    # A route that takes POST only, answered the same way.
    wrong = gateway.client.get("/async-function/echo")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["type"] == "MethodNotAllowed"


def test_a_query_failing_validation_is_a_json_422_naming_the_field(
    gateway: RunningGateway,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = gateway.client.get("/system/dead-letters", params={"limit": "0"}, headers=admin)
    assert response.status_code == 422
    body = response.json()
    assert "detail" not in body
    error = body["error"]
    assert error["type"] == "InvalidRequest"
    assert "query.limit" in error["message"]
    assert [f["field"] for f in error["fields"]] == ["query.limit"]
    missing = gateway.client.get("/system/logs", headers=admin)  # `function` is required
    assert missing.status_code == 422
    assert missing.json()["error"]["fields"][0]["field"] == "query.function"
    assert "required" in missing.json()["error"]["fields"][0]["message"].lower()
    # The gateway still serves.
    assert gateway.invoke("echo", {"a": 1}).json() == {"a": 1}
