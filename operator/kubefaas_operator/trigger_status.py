"""`status.triggers` from what the gateways report (docs/triggers.md, "Visibility").

Each gateway's `/internal/stats` entry of a function with triggers carries `triggers`:
one entry per trigger with `name`, `lastFireTime`, `lastMessageTime`, `lag`, `lastError`
and `lastErrorTime` (UTC ISO-8601 strings, so the latest is the greatest). Several gateways
combine per trigger name: the latest fire, message and error win; the lag is the broker's,
the same seen from every gateway, so the largest is taken (as for the async queue depth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TriggerReport = Mapping[str, Any]
FIELDS = ("name", "lastFireTime", "lastMessageTime", "lag", "lastError")


def parse(entries: Any) -> tuple[TriggerReport, ...]:
    """The `triggers` of one `/internal/stats` function entry; malformed items are dropped."""
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        return ()
    return tuple(e for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str))


def _latest(a: Any, b: Any) -> Any:
    present = [v for v in (a, b) if isinstance(v, str)]
    return max(present) if present else None


def merge(
    first: Sequence[TriggerReport], second: Sequence[TriggerReport]
) -> tuple[TriggerReport, ...]:
    by_name: dict[str, dict[str, Any]] = {str(e["name"]): dict(e) for e in first}
    for entry in second:
        name = str(entry["name"])
        seen = by_name.get(name)
        if seen is None:
            by_name[name] = dict(entry)
            continue
        lags = [v for v in (seen.get("lag"), entry.get("lag")) if isinstance(v, int)]
        newer_error = (entry.get("lastErrorTime") or "") > (seen.get("lastErrorTime") or "")
        by_name[name] = {
            "name": name,
            "lastFireTime": _latest(seen.get("lastFireTime"), entry.get("lastFireTime")),
            "lastMessageTime": _latest(seen.get("lastMessageTime"), entry.get("lastMessageTime")),
            "lag": max(lags) if lags else None,
            "lastError": entry.get("lastError") if newer_error else seen.get("lastError"),
            "lastErrorTime": _latest(seen.get("lastErrorTime"), entry.get("lastErrorTime")),
        }
    return tuple(by_name[name] for name in sorted(by_name))


def status_entries(reports: Sequence[TriggerReport]) -> list[dict[str, Any]]:
    """`status.triggers` as written on the Function: the fields of the API's TriggerStatus
    that have a value, one entry per trigger, by name."""
    return [
        {key: report[key] for key in FIELDS if report.get(key) is not None}
        for report in sorted(reports, key=lambda r: str(r["name"]))
    ]


def summary(entries: Sequence[TriggerReport]) -> str:
    """`status.triggersSummary`, the `Triggers` column of `kubectl get fn`: how many
    triggers reported and the latest fire or message, to the second in UTC, e.g.
    `2 (last 2026-01-02T03:00:00Z)`; just the count before anything fired."""
    times = [
        moment
        for e in entries
        for key in ("lastFireTime", "lastMessageTime")
        if (moment := _utc(e.get(key))) is not None
    ]
    if not times:
        return str(len(entries))
    return f"{len(entries)} (last {max(times).strftime('%Y-%m-%dT%H:%M:%SZ')})"


def _utc(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def status_patch(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The status merge-patch the operator writes: the entries and their summary."""
    return {"triggers": entries, "triggersSummary": summary(entries)}
