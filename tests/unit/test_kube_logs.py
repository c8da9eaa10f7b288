"""`kubefaas logs --cluster` merges the pod logs of every instance by time and filters by
invocation (docs/logs.md); reading them needs a kubelet, so the API calls are e2e's."""

from __future__ import annotations

import json

from kubefaas.kube_logs import merged_lines


def _line(ts: str, msg: str, request_id: str | None = None) -> str:
    document = {"ts": ts, "msg": msg, "function": "default/hello"}
    if request_id is not None:
        document["requestId"] = request_id
    return json.dumps(document)


def test_pod_logs_merge_by_timestamp_and_keep_each_pods_order() -> None:
    logs = {
        "hello-a": "\n".join(
            [_line("2026-01-01T00:00:01.000Z", "a1", "x"), _line("2026-01-01T00:00:03.000Z", "a2")]
        ),
        "hello-b (previous)": _line("2026-01-01T00:00:02.000Z", "b1", "y") + "\n\n",
    }
    merged = merged_lines(logs, invocation=None)
    assert [json.loads(line)["msg"] for _, _, line in merged] == ["a1", "b1", "a2"]
    assert [pod for _, pod, _ in merged] == ["hello-a", "hello-b (previous)", "hello-a"]


def test_one_invocation_only_and_plain_lines_are_kept_without_a_filter() -> None:
    logs = {"hello-a": "not json\n" + _line("2026-01-01T00:00:01.000Z", "mine", "x")}
    assert [line for _, _, line in merged_lines(logs, invocation="x")] == [
        _line("2026-01-01T00:00:01.000Z", "mine", "x")
    ]
    assert len(merged_lines(logs, invocation=None)) == 2
