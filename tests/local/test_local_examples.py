"""Every example in examples/ through the real gateway and real runtime processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import RunningGateway


pytestmark = pytest.mark.local


def test_hello_answers_json_with_the_invocation_id(examples_gateway: RunningGateway) -> None:
    response = examples_gateway.invoke("hello", {"name": "kube"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["message"] == "hello, kube!"
    assert body["requestId"] == response.headers["x-invocation-id"]


def test_counter_state_survives_on_the_same_instance(examples_gateway: RunningGateway) -> None:
    answers = [examples_gateway.invoke("counter", {}).json() for _ in range(3)]
    assert [a["count"] for a in answers] == [1, 2, 3]
    assert len({a["instance"] for a in answers}) == 1


def test_tmp_cache_is_written_then_read_back(examples_gateway: RunningGateway) -> None:
    first = examples_gateway.invoke("tmp-cache", {}).json()
    second = examples_gateway.invoke("tmp-cache", {}).json()
    assert first["cached"] is False
    assert second == {"cached": True, "value": first["value"]}


def test_http_event_gets_method_sub_path_query_and_shapes_the_response(
    examples_gateway: RunningGateway,
) -> None:
    response = examples_gateway.invoke("http", path="/items/42?verbose=1", method="GET")
    assert response.status_code == 200
    assert response.headers["x-handled-by"] == "kubefaas"
    assert response.json() == {
        "method": "GET",
        "path": "/items/42",
        "query": {"verbose": "1"},
        "body": None,
    }
    posted = examples_gateway.invoke("http", namespace="default", content=b"raw text")
    assert posted.json()["body"] == "raw text"
    assert posted.json()["path"] == "/"


def test_http_handler_chosen_status_and_headers_pass_through(
    examples_gateway: RunningGateway,
) -> None:
    response = examples_gateway.invoke("http", method="DELETE", path="/items/42")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


def test_slow_sleeps_as_asked(examples_gateway: RunningGateway) -> None:
    response = examples_gateway.invoke("slow", {"seconds": 0.2})
    assert response.status_code == 200
    assert response.json() == {"slept": 0.2}
    assert float(response.headers["x-duration-ms"]) >= 200


def test_fail_is_502_with_the_error_type_and_everything_keeps_serving(
    examples_gateway: RunningGateway,
) -> None:
    response = examples_gateway.invoke("fail", {"why": "test"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "FunctionFailed"
    assert error["errorType"] == "RuntimeError"
    assert "failing on purpose" in error["errorMessage"]
    assert error["invocationId"] == response.headers["x-invocation-id"]
    assert examples_gateway.invoke("fail", {}).status_code == 502
    assert examples_gateway.invoke("hello", {}).status_code == 200
