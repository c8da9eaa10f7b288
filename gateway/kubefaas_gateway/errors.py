"""Sentinel errors of an invocation and the one place they become HTTP responses.

Every layer (route, invoker, backend) raises one of these; `error_response` turns it into
the status and JSON body of docs/architecture.md, "Gateway HTTP API", `{"error": {"type",
"message", "invocationId"}}`, so
a status is decided once. The async delivery catches the same classes to choose a retry.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from kubefaas import wire

JSON_CONTENT_TYPE = b"application/json"


class InvocationError(Exception):
    """Base of every error an invocation can end with; `status` is its HTTP status."""

    status: ClassVar[int] = 500
    # Set by the invoker when the request had waited for an instance to start before it
    # failed, so the caller's `X-Cold-Start` is true on error answers too.
    cold_start: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        return type(self).__name__

    def details(self) -> dict[str, Any]:
        """Extra fields for the JSON body (beside type, message and invocationId)."""
        return {}

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers this error calls for."""
        return []


class FunctionNotFound(InvocationError):
    """No function of that namespace/name is deployed."""

    status = 404


class PayloadTooLarge(InvocationError):
    """The request body is over the sync (6 MiB) or async (1 MiB) limit."""

    status = 413


class Throttled(InvocationError):
    """The function is at its reserved concurrency: the caller should retry later."""

    status = 429

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_seconds).encode())]


class FunctionFailed(InvocationError):
    """The handler raised, the instance crashed, or it answered with an error status.

    `error_type`/`error_message`/`stack_trace` are the runtime's own report when there is
    one (`{"errorType", "errorMessage", "stackTrace"}`), so the caller sees why.
    """

    status = 502

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        stack_trace: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = stack_trace

    def details(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.error_type is not None:
            extra["errorType"] = self.error_type
        if self.error_message is not None:
            extra["errorMessage"] = self.error_message
        if self.stack_trace is not None:
            extra["stackTrace"] = self.stack_trace
        return extra


class ResponseTooLarge(FunctionFailed):
    """The function's answer is over the gateway's response limit (6 MiB by default); the
    check runs while the answer streams in, so it is never held whole (docs/security.md)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="ResponseTooLarge")

    @property
    def type(self) -> str:
        return "ResponseTooLarge"


class NoCapacity(InvocationError):
    """No instance can be started (start failed, code missing, backend unavailable)."""

    status = 503


class InvocationTimeout(InvocationError):
    """The deadline passed: waiting for an instance, or the handler ran past its timeout."""

    status = 504


class FunctionTimedOut(InvocationTimeout):
    """The handler itself ran past its timeout (an instance had the request).

    Still a 504 to the caller, but for async retries it is the function's fault, as on
    Lambda: retried `maxRetries` times, not backed off for the event's whole lifetime.
    """


class InternalError(InvocationError):
    """A fault in the gateway itself (a bug): logged with its traceback."""

    status = 500


class BadRequest(InvocationError):
    """A request the gateway cannot act on as sent (a bad header, query or cursor)."""

    status = 400


class InvocationNotFound(InvocationError):
    """No async invocation (or dead letter) has that id, or its record expired."""

    status = 404


class Unauthorized(InvocationError):
    """An admin route called without the admin bearer token, or with a wrong one."""

    status = 401

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b'Bearer realm="kubefaas"')]


class AdminDisabled(InvocationError):
    """Admin routes are refused outright because no admin token is configured."""

    status = 403


class RouteNotFound(InvocationError):
    """No gateway route has that path (FastAPI's own 404, in the gateway's format)."""

    status = 404


class MethodNotAllowed(InvocationError):
    """The path exists but not for this method; `Allow` lists the ones it takes."""

    status = 405

    def __init__(self, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())] if self.allow else []


class InvalidRequest(InvocationError):
    """A query, path or body field failed validation; `fields` names each one and why."""

    status = 422

    def __init__(self, message: str, *, fields: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.fields = fields

    def details(self) -> dict[str, Any]:
        return {"fields": self.fields}


def error_body(error: InvocationError, invocation_id: str) -> bytes:
    """The JSON body every gateway error carries."""
    payload: dict[str, Any] = {
        "type": error.type,
        "message": error.message,
        "invocationId": invocation_id,
    }
    payload.update(error.details())
    return json.dumps({"error": payload}).encode()


def error_response(
    error: InvocationError, invocation_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for `error`: the single error -> HTTP mapping."""
    body = error_body(error, invocation_id)
    headers = [
        (b"content-type", JSON_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        # Only an answer about an invocation names one (not a 404 for an unknown route).
        *([(wire.INVOCATION_ID, invocation_id.encode())] if invocation_id else []),
        *error.headers(),
    ]
    return error.status, headers, body
