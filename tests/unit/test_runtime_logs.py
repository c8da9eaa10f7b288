"""Runtime log lines: what a handler prints is tagged, REPORT lines bill as the gateway does,
and a traceparent is accepted only when well formed (docs/logs.md)."""

from __future__ import annotations

import argparse
import io
import json
import threading

import pytest

from kubefaas.observe_cli import parse_duration
from kubefaas_gateway.metering import billed_milliseconds as gateway_billed
from kubefaas_runtime.app import _traceparent
from kubefaas_runtime.logs import (
    REQUEST_ID,
    LineStream,
    billed_milliseconds,
    report_line,
    set_identity,
)


def test_printed_lines_become_tagged_json_lines_per_thread() -> None:
    set_identity(function="team-a/hello", instance="pod-1")
    target = io.StringIO()
    stream = LineStream(target, "stdout")

    def call(request_id: str, text: str) -> None:
        token = REQUEST_ID.set(request_id)
        try:
            stream.write(text[:3])  # a partial line waits for the rest of its own thread
            stream.write(text[3:] + "\nsecond\n")
        finally:
            REQUEST_ID.reset(token)

    threads = [threading.Thread(target=call, args=(f"id-{n}", f"line {n}")) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [json.loads(text) for text in target.getvalue().splitlines()]
    assert len(lines) == 16
    by_id: dict[str, list[str]] = {}
    for line in lines:
        assert line["function"] == "team-a/hello"
        assert line["instance"] == "pod-1"
        assert line["logger"] == "stdout"
        by_id.setdefault(line["requestId"], []).append(line["msg"])
    assert by_id == {f"id-{n}": [f"line {n}", "second"] for n in range(8)}


@pytest.mark.parametrize(
    ("text", "billed"), [(b"0.000", 1), (b"0.400", 1), (b"1.000", 1), (b"1.001", 2), (b"99.5", 100)]
)
def test_billed_duration_rounds_up_to_the_millisecond_the_same_on_both_sides(
    text: bytes, billed: int
) -> None:
    assert billed_milliseconds(text) == gateway_billed(text) == billed


def test_report_line_carries_the_lambda_figures_and_init_only_when_given() -> None:
    cold = json.loads(
        report_line(
            request_id="abc",
            duration_ms_text=b"12.345",
            memory_mb=256,
            status=200,
            attempt=1,
            init_ms=80.5,
        )
    )
    assert cold["type"] == "REPORT"
    assert cold["billedDurationMs"] == 13
    assert cold["memorySizeMB"] == 256
    assert cold["maxMemoryUsedMB"] > 0
    assert cold["initDurationMs"] == 80.5
    assert cold["msg"].startswith("REPORT RequestId: abc Duration: 12.345 ms Billed Duration: 13")
    assert cold["msg"].endswith("Init Duration: 80.5 ms")
    warm = json.loads(
        report_line(
            request_id="abc",
            duration_ms_text=b"1.000",
            memory_mb=256,
            status=500,
            attempt=2,
            init_ms=None,
        )
    )
    assert "initDurationMs" not in warm
    assert (warm["status"], warm["attempt"]) == (500, 2)


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", True),  # case folded
        (b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", True),  # future
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
        (b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        (b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", False),
        (b"garbage", False),
    ],
)
def test_traceparent_is_accepted_only_when_well_formed(raw: bytes, accepted: bool) -> None:
    assert (_traceparent(raw) is not None) is accepted


def test_durations_of_the_command_line() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("45") == 45
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. 10m"):
        parse_duration("ten minutes")
