"""The context object handlers receive, and the runtime's JSON log lines."""

from __future__ import annotations

import json
import logging
import time

import pytest

from kubefaas_runtime.context import Context
from kubefaas_runtime.logs import REQUEST_ID, JsonFormatter, install_record_factory


def _context(*, deadline_ms: int) -> Context:
    return Context(
        request_id="abc123",
        function_name="hello",
        function_namespace="team-a",
        function_version="3",
        memory_limit_in_mb=512,
        invocation_type="async",
        attempt=2,
        tmp_dir="/scratch",
        deadline_ms=deadline_ms,
    )


def test_context_offers_the_lambda_names() -> None:
    context = _context(deadline_ms=0)
    assert context.request_id == context.aws_request_id == "abc123"
    assert context.function_name == "hello"
    assert context.function_namespace == "team-a"
    assert context.function_version == "3"
    assert context.memory_limit_in_mb == 512
    assert context.invocation_type == "async"
    assert context.attempt == 2
    assert context.tmp_dir == "/scratch"
    assert context.function_arn == "kubefaas:team-a:function:hello:3"
    assert context.invoked_function_arn == context.function_arn
    assert context.client_context is None
    assert context.identity is None


def test_context_is_slotted_so_typos_fail_loudly() -> None:
    context = _context(deadline_ms=0)
    with pytest.raises(AttributeError):
        context.request_idd = "x"  # type: ignore[attr-defined]


def test_remaining_time_counts_down_to_zero() -> None:
    now_ms = int(time.time() * 1000)
    remaining = _context(deadline_ms=now_ms + 5_000).get_remaining_time_in_millis()
    assert 4_000 < remaining <= 5_000
    assert _context(deadline_ms=now_ms - 10).get_remaining_time_in_millis() == 0


def test_log_writes_one_line_prefixed_with_the_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _context(deadline_ms=0).log("loaded", 3, "rows\nfrom db")
    assert capsys.readouterr().err == "abc123 loaded 3 rows\\nfrom db\n"


def test_log_records_carry_the_current_request_id() -> None:
    install_record_factory()
    token = REQUEST_ID.set("req-42")
    try:
        record = logging.getLogger("user.code").makeRecord(
            "user.code", logging.INFO, __file__, 1, "hi %s", ("there",), None
        )
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["requestId"] == "req-42"
    assert line["msg"] == "hi there"
    assert line["level"] == "INFO"
    assert line["ts"].endswith("Z")


def test_json_log_line_carries_extra_fields_and_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = logging.getLogger("kubefaas_runtime").makeRecord(
            "kubefaas_runtime",
            logging.ERROR,
            __file__,
            1,
            "init failed",
            (),
            (type(exc), exc, exc.__traceback__),
            extra={"initMs": 12.5},
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["initMs"] == 12.5
    assert "ValueError: boom" in line["exc"]
    assert "requestId" not in line
