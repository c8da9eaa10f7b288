"""OpenTelemetry spans of the gateway, exported over OTLP only when configured.

See docs/logs.md, "Tracing", and docs/architecture.md, "Logs and metering".
W3C `traceparent` always passes through to the function untouched (the gateway forwards the
caller's headers; the runtime puts it on `context.traceparent`). With
`KUBEFAAS_OTLP_ENDPOINT` set, `create_app` builds a `TracedInvoker` instead of the plain
`Invoker`: each invocation gets an `invoke` span (child of the caller's traceparent, kind
server), a `cold start` child span when it waited for an instance to start, a `queue wait`
child span for an async attempt (from the 202, or the previous attempt, to this one), and the
function receives the `invoke` span's own traceparent, so its spans nest under the
gateway's. OpenTelemetry is an optional extra (`pip install 'kubefaas[tracing]'`) imported
only here and only when configured: with tracing off nothing of it is imported and the
warm path is the plain invoker's.
"""

from __future__ import annotations

import time
from typing import Any

from kubefaas import wire
from kubefaas.api import Function
from kubefaas_gateway.backends.base import Acquired, Backend
from kubefaas_gateway.invoker import InvocationRequest, InvocationResponse, Invoker
from kubefaas_gateway.settings import Settings

SERVICE_NAME = "kubefaas-gateway"


class TracingUnavailable(RuntimeError):
    """OTLP export is configured but the OpenTelemetry packages are not installed."""


def build_tracer(settings: Settings) -> Any:
    """An OpenTelemetry tracer exporting to `settings.otlp_endpoint` (OTLP over HTTP)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "KUBEFAAS_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'kubefaas[tracing]'"
        ) from exc
    endpoint = str(settings.otlp_endpoint).rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
    )
    return provider.get_tracer("kubefaas.gateway")


class _ColdStartSpans:
    """The backend, with a `cold start` span around acquisitions that started an instance."""

    def __init__(self, backend: Backend, tracer: Any) -> None:
        self._backend = backend
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        started = time.time_ns()
        acquired = await self._backend.acquire(fn, deadline)
        if acquired.cold_start:
            span = self._tracer.start_span(
                "cold start",
                start_time=started,
                attributes={"faas.name": fn.name, "faas.namespace": fn.namespace},
            )
            span.end()
        return acquired


class TracedInvoker(Invoker):
    """The invoker with spans (see the module docstring); built only when tracing is on."""

    def __init__(self, *, tracer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._backend = _ColdStartSpans(self._backend, tracer)

    async def invoke(self, fn: Function, request: InvocationRequest) -> InvocationResponse:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {k.lower(): v for k, v in request.headers if k.lower() == wire.TRACEPARENT_NAME}
        parent = self._propagator.extract(carrier)
        with self._tracer.start_as_current_span(
            "invoke",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "faas.name": fn.name,
                "faas.namespace": fn.namespace,
                "faas.invocation_id": request.invocation_id,
                "faas.trigger": "http" if request.invocation_type == "sync" else "pubsub",
                "faas.attempt": request.attempt,
            },
        ) as span:
            if request.queued_at is not None:
                # Async: from the 202 (or the previous attempt) to this attempt.
                self._tracer.start_span(
                    "queue wait",
                    start_time=int(request.queued_at * 1e9),
                    attributes={"faas.invocation_id": request.invocation_id},
                ).end()
            outgoing: dict[str, str] = {}
            self._propagator.inject(outgoing)
            request.headers = [
                (k, v) for k, v in request.headers if k.lower() != wire.TRACEPARENT_NAME
            ]
            request.headers.extend(outgoing.items())
            try:
                response = await super().invoke(fn, request)
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, str(error)))
                raise
            span.set_attribute("http.response.status_code", response.status)
            span.set_attribute("faas.coldstart", response.cold_start)
            return response
