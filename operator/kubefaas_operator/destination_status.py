"""The `DestinationsAllowed` condition: URL destinations the SSRF rule refuses, told at apply
time (docs/architecture.md, "Refused destinations").

Pure, like `status`: the Function, the rule (`kubefaas.destinations.AddressRule`, the one
the gateway applies when it sends) and the previous conditions in; the conditions to write
out. The operator never resolves names, so only what a URL says by itself is judged here
(an IP literal, `localhost`); a name is judged by the gateway on the addresses it resolves
to, when a result is sent, and a refused send is logged there. A Function without URL
destinations carries no such condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from kubefaas.api import Function
from kubefaas.destinations import ALLOWED_CIDRS_ENV, AddressRule

CONDITION: Final = "DestinationsAllowed"
REASON_REFUSED: Final = "DestinationRefused"
REASON_ALLOWED: Final = "NoneRefused"


def url_destinations(fn: Function) -> list[tuple[str, str]]:
    """(field, url) of the Function's URL destinations, e.g. ("onFailure", "http://...")."""
    config = fn.spec.async_
    found = []
    for field, destination in (("onSuccess", config.on_success), ("onFailure", config.on_failure)):
        if destination is not None and destination.url is not None:
            found.append((field, destination.url))
    return found


def destinations_condition(
    fn: Function, rule: AddressRule, *, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any] | None:
    """The condition for `fn`'s URL destinations, or None when it has none."""
    destinations = url_destinations(fn)
    if not destinations:
        return None
    refused = [
        f"{field} URL {url[:200]!r} is refused: {why}"
        for field, url in destinations
        if (why := rule.url_refusal(url)) is not None
    ]
    if refused:
        status, reason = "False", REASON_REFUSED
        message = (
            "; ".join(refused) + ". Results are not sent there; destinations may only go to "
            f"public addresses unless {ALLOWED_CIDRS_ENV} names them"
        )
    else:
        status, reason = "True", REASON_ALLOWED
        message = (
            "no destination URL names a refused address; host names are checked on the "
            "addresses they resolve to when a result is sent"
        )
    since = now
    if previous is not None and previous.get("status") == status:
        since = str(previous.get("lastTransitionTime") or now)
    condition: dict[str, Any] = {
        "type": CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if fn.metadata.generation is not None:
        condition["observedGeneration"] = fn.metadata.generation
    return condition


def with_destinations(
    conditions: Sequence[Mapping[str, Any]], fn: Function, rule: AddressRule, *, now: str
) -> list[Any]:
    """`conditions` with the `DestinationsAllowed` one set (or removed: no URL destination)."""
    previous = next((c for c in conditions if c.get("type") == CONDITION), None)
    others = [c for c in conditions if c.get("type") != CONDITION]
    condition = destinations_condition(fn, rule, previous=previous, now=now)
    return others if condition is None else [*others, condition]
