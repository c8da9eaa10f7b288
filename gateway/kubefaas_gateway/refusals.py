"""`kubefaas_gateway_refused_requests_total{reason}`: requests refused by a limit on what
the caller controls (docs/security.md): `url_length`, `header_bytes`, `header_count`
`header_timeout`, `body_timeout` (the HTTP server, `http_limits`), `response_size` (the
invoker), `queue_function` and `queue_total` (async quotas)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

_counters: dict[int, Counter] = {}


def refusal_counter(registry: CollectorRegistry) -> Counter:
    """`kubefaas_gateway_refused_requests_total{reason}` in `registry` (one per registry)."""
    counter = _counters.get(id(registry))
    if counter is None:
        counter = Counter(
            "kubefaas_gateway_refused_requests",
            "Requests refused by a limit on what the caller controls, by limit.",
            ["reason"],
            registry=registry,
        )
        _counters[id(registry)] = counter
    return counter
