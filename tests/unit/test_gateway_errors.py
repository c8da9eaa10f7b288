"""Each sentinel error maps to one HTTP status and the documented JSON body.

See docs/architecture.md, "Gateway HTTP API".
"""

from __future__ import annotations

import json

import pytest

from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionNotFound,
    InvocationError,
    InvocationTimeout,
    NoCapacity,
    PayloadTooLarge,
    Throttled,
    error_response,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (FunctionNotFound("function default/x not found"), 404),
        (PayloadTooLarge("too big"), 413),
        (Throttled("at reserved concurrency"), 429),
        (FunctionFailed("crashed"), 502),
        (NoCapacity("cannot start"), 503),
        (InvocationTimeout("too slow"), 504),
    ],
)
def test_each_error_has_its_status_and_the_documented_body(
    error: InvocationError, status: int
) -> None:
    code, headers, body = error_response(error, "inv-1")
    assert code == status
    document = json.loads(body)
    assert document == {
        "error": {"type": type(error).__name__, "message": error.message, "invocationId": "inv-1"}
    }
    header_map = dict(headers)
    assert header_map[b"content-type"] == b"application/json"
    assert header_map[b"x-invocation-id"] == b"inv-1"
    assert int(header_map[b"content-length"]) == len(body)


def test_throttled_tells_the_caller_when_to_retry() -> None:
    _, headers, _ = error_response(Throttled("busy", retry_after_seconds=3), "inv-2")
    assert dict(headers)[b"retry-after"] == b"3"


def test_function_failed_repeats_the_runtime_error_report() -> None:
    error = FunctionFailed(
        "function default/fail failed: RuntimeError: boom",
        error_type="RuntimeError",
        error_message="boom",
        stack_trace=['  File "main.py", line 2'],
    )
    status, _, body = error_response(error, "inv-3")
    assert status == 502
    reported = json.loads(body)["error"]
    assert reported["errorType"] == "RuntimeError"
    assert reported["errorMessage"] == "boom"
    assert reported["stackTrace"] == ['  File "main.py", line 2']
