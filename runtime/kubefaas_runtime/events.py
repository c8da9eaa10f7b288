"""Requests to events and handler results to responses, for both event formats.

Pure functions over bytes and plain values, no I/O, so every mapping rule is unit-tested
directly. ``server.py`` only moves bytes between these functions and the socket.

**json** (``eventFormat: json``, the default): the event is the JSON-decoded body; a
body that is not JSON arrives as ``str`` (bytes that are not UTF-8 become U+FFFD: use
the http format for binary payloads); an empty body is ``{}``. The return value is sent
as ``application/json``. NaN and infinities are refused (``Runtime.SerializationError``)
because no JSON parser outside Python accepts them.

**http** (``eventFormat: http``): the event is an API Gateway (REST, v1) proxy event, so
handlers written for Lambda/SCF HTTP triggers and adapters such as Mangum run unchanged::

    {"resource": "/{proxy+}", "path": "/a/b", "httpMethod": "GET",
     "headers": {"accept": "a,b"}, "multiValueHeaders": {"accept": ["a", "b"]},
     "queryStringParameters": {"q": "last"} | None,
     "multiValueQueryStringParameters": {"q": ["first", "last"]} | None,
     "pathParameters": {"proxy": "a/b"} | None, "stageVariables": None,
     "requestContext": {"requestId", "httpMethod", "path", "stage": "$default",
                        "requestTimeEpoch", "resourcePath", "protocol",
                        "identity": {"sourceIp"}},
     "body": str | None, "isBase64Encoded": bool}

Header names are lower-cased and repeated headers comma-joined; header values are decoded
as Latin-1 (the HTTP default, lossless). ``body`` is None for an empty body and base64
with ``isBase64Encoded: true`` when it is not valid UTF-8.

A returned dict with ``statusCode`` becomes the response:

- ``statusCode``: int (or a numeric string) from 200 to 599.
- ``headers`` (name -> value) and ``multiValueHeaders`` (name -> list) are both sent.
  ``content-length``, ``transfer-encoding``, ``connection`` and the runtime's own
  ``x-invocation-id``, ``x-duration-ms``, ``x-function-error`` are dropped: the runtime
  owns framing and those headers.
- ``body``: a str (base64-decoded when ``isBase64Encoded`` is true), bytes, None, or any
  other JSON-encodable value, which is JSON-encoded.
- Without a content-type header: ``application/octet-stream`` for a base64 body,
  ``application/json`` when the body starts with ``{`` or ``[`` (after white space) or was
  JSON-encoded here, else ``text/plain; charset=utf-8``. 204 and 304 carry no body.

A malformed proxy response is answered 500 ``Runtime.InvalidResponse``. Any other return
value is answered 200 JSON as in the json format.

Errors have Lambda's shape ``{"errorType", "errorMessage", "stackTrace": [frames]}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import importlib
import json
import json.encoder
import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from kubefaas import wire

Headers = Sequence[tuple[bytes, bytes]]

CONTENT_JSON = b"application/json"
CONTENT_TEXT = b"text/plain; charset=utf-8"
CONTENT_BINARY = b"application/octet-stream"

# Values of the X-Function-Error header: the gateway tells a function error (502 to the
# caller, retried for async calls) from a runtime or transport failure by it.
FUNCTION_ERROR_UNHANDLED = b"Unhandled"
FUNCTION_ERROR_TIMEOUT = b"Timeout"

# Framing and the runtime's own headers: never taken from a handler's proxy response.
_RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        wire.INVOCATION_ID.decode("ascii"),
        wire.DURATION_MS.decode("ascii"),
        wire.FUNCTION_ERROR.decode("ascii"),
    }
)
_STATUSES_WITHOUT_BODY = frozenset({204, 304})
_FORBIDDEN_IN_HEADER = ("\r", "\n", "\x00")


def _not_serializable(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_json_encoder() -> Callable[[Any], str]:
    """Compact, UTF-8, NaN-refusing JSON encoding of a handler's result.

    Calls the C encoder directly when the interpreter has it: ``json.dumps`` builds a
    new one on every call, which is two thirds of its cost for a small result. No
    circular-reference bookkeeping: a cycle ends in RecursionError, answered as a
    serialization error like any other.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    encode = make(
        None, _not_serializable, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode_json(value: Any) -> str:
        return "".join(encode(value, 0))

    return encode_json


_encode_json = _make_json_encoder()


class Reply(NamedTuple):
    """A response before the runtime adds its own headers (id, duration, length)."""

    status: int
    body: bytes
    content_type: bytes | None = CONTENT_JSON
    headers: Headers = ()
    """Extra headers, from an http-format proxy response."""
    function_error: bytes | None = None
    """Value of ``X-Function-Error``, when the handler failed."""


# --- events -------------------------------------------------------------------------


def json_event(body: bytes) -> Any:
    """The event of the json format: the decoded body, its text, or ``{}`` if empty."""
    if not body or body.isspace():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")


def http_event(
    *,
    method: str,
    path: str,
    query_string: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    request_id: str,
    request_time_ms: int,
    source_ip: str | None,
) -> dict[str, Any]:
    """The API-Gateway-proxy event of the http format (see the module docstring)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        values = multi.get(name)
        if values is None:
            multi[name] = [value]
            single[name] = value
        else:
            values.append(value)
            single[name] = f"{single[name]},{value}"

    query: dict[str, str] | None = None
    multi_query: dict[str, list[str]] | None = None
    if query_string:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if pairs:
            query, multi_query = {}, {}
            for key, value in pairs:
                query[key] = value
                multi_query.setdefault(key, []).append(value)

    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode("ascii")
            encoded = True

    path = path or "/"
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": {"proxy": path[1:]} if path != "/" else None,
        "stageVariables": None,
        "requestContext": {
            "requestId": request_id,
            "httpMethod": method,
            "path": path,
            "stage": "$default",
            "requestTimeEpoch": request_time_ms,
            "resourcePath": "/{proxy+}",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


# --- responses ----------------------------------------------------------------------


def json_reply(result: Any) -> Reply:
    """200 with the JSON encoding of ``result``, or 500 if it has none."""
    try:
        body = _encode_json(result).encode("utf-8")
    except Exception as exc:  # any encoder failure comes from the user's value
        return serialization_error(exc)
    return Reply(200, body)


def http_reply(result: Any) -> Reply:
    """Map a proxy response dict to a Reply; anything else is answered as JSON."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        return json_reply(result)
    try:
        return _proxy_reply(result)
    except _InvalidResponse as exc:
        return error_reply(
            500, "Runtime.InvalidResponse", str(exc), function_error=FUNCTION_ERROR_UNHANDLED
        )


class _InvalidResponse(ValueError):
    pass


def _proxy_reply(result: Mapping[str, Any]) -> Reply:
    status = _status(result["statusCode"])
    headers: list[tuple[bytes, bytes]] = []
    content_type: bytes | None = None

    def add(name: object, value: object) -> None:
        nonlocal content_type
        if not isinstance(name, str) or not name or not _is_token(name):
            raise _InvalidResponse(f"header name {name!r} is not a valid HTTP token")
        text = _header_text(value)
        if any(bad in text for bad in _FORBIDDEN_IN_HEADER):
            raise _InvalidResponse(f"header {name!r} has a line break or NUL in its value")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            return
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw = text.encode("utf-8")
        if lowered == "content-type":
            if content_type is None:
                content_type = raw
            return
        headers.append((lowered.encode("ascii"), raw))

    for name, value in _mapping(result, "headers").items():
        add(name, value)
    for name, values in _mapping(result, "multiValueHeaders").items():
        for value in values if isinstance(values, list | tuple) else [values]:
            add(name, value)

    body, default_type = _proxy_body(result)
    if status in _STATUSES_WITHOUT_BODY:
        return Reply(status, b"", content_type, headers)
    return Reply(status, body, content_type or default_type, headers)


def _status(value: Any) -> int:
    if isinstance(value, bool):
        raise _InvalidResponse(f"statusCode {value!r} is not an integer")
    try:
        status = int(value)
    except (TypeError, ValueError):
        raise _InvalidResponse(f"statusCode {value!r} is not an integer") from None
    if not 200 <= status <= 599:
        raise _InvalidResponse(f"statusCode {status} is outside 200-599")
    return status


def _mapping(result: Mapping[str, Any], key: str) -> Mapping[Any, Any]:
    value = result.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _InvalidResponse(f"{key} must be an object, got {type(value).__name__}")
    return value


def _header_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _is_token(name: str) -> bool:
    return all(33 <= ord(c) <= 126 and c not in '"(),/:;<=>?@[\\]{}' for c in name)


def _proxy_body(result: Mapping[str, Any]) -> tuple[bytes, bytes]:
    body = result.get("body")
    if body is None:
        return b"", CONTENT_TEXT
    if isinstance(body, bytes | bytearray):
        return bytes(body), CONTENT_BINARY
    if isinstance(body, str):
        if result.get("isBase64Encoded"):
            try:
                return base64.b64decode(body, validate=True), CONTENT_BINARY
            except binascii.Error as exc:
                raise _InvalidResponse(f"body is not valid base64: {exc}") from None
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _InvalidResponse(f"body is not encodable as UTF-8: {exc}") from None
        looks_json = body.lstrip()[:1] in ("{", "[")
        return raw, CONTENT_JSON if looks_json else CONTENT_TEXT
    try:
        return _encode_json(body).encode("utf-8"), CONTENT_JSON
    except Exception as exc:  # any encoder failure comes from the user's value
        raise _InvalidResponse(f"body is not a string and not JSON-encodable: {exc}") from None


# --- errors -------------------------------------------------------------------------


def error_body(error_type: str, message: str, stack: Sequence[str] = ()) -> bytes:
    """Lambda's error document. ASCII-escaped so any message can be encoded."""
    document = {"errorType": error_type, "errorMessage": message, "stackTrace": list(stack)}
    return json.dumps(document).encode("ascii")


def error_reply(
    status: int,
    error_type: str,
    message: str,
    stack: Sequence[str] = (),
    *,
    function_error: bytes | None = None,
) -> Reply:
    """A JSON error response in Lambda's shape."""
    return Reply(status, error_body(error_type, message, stack), function_error=function_error)


def serialization_error(exc: BaseException) -> Reply:
    """500 for a return value that cannot be sent as JSON."""
    return error_reply(
        500,
        "Runtime.SerializationError",
        f"Unable to marshal response: {exc}",
        function_error=FUNCTION_ERROR_UNHANDLED,
    )


def exception_reply(exc: BaseException) -> Reply:
    """500 for an exception that escaped the handler (SystemExit and friends included)."""
    return error_reply(
        500,
        type(exc).__name__,
        exception_message(exc),
        stack_trace(exc.__traceback__),
        function_error=FUNCTION_ERROR_UNHANDLED,
    )


def timeout_reply(budget_seconds: float) -> Reply:
    """504 for a call that outlived its deadline; the message matches Lambda's."""
    return error_reply(
        504,
        "Runtime.Timeout",
        f"Task timed out after {max(0.0, budget_seconds):.2f} seconds",
        function_error=FUNCTION_ERROR_TIMEOUT,
    )


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, except that ``sys.exit(code)`` says what happened."""
    if isinstance(exc, SystemExit):
        return f"the handler called sys.exit({exc.code!r}); the instance keeps serving"
    return str(exc)


def _module_dir(module: Any) -> str:
    return os.path.dirname(os.path.abspath(str(module.__file__))) + os.sep


# Frames of the runtime itself and of the machinery between it and the user's code
# (thread pool, event loop, import system) say nothing about the user's bug.
_INTERNAL_PREFIXES = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    _module_dir(asyncio),
    _module_dir(concurrent.futures),
    _module_dir(importlib),
    "<frozen importlib.",
)


def stack_trace(tb: TracebackType | None) -> list[str]:
    """The traceback as Lambda formats it (one string per frame), without frames of the
    runtime and the interpreter's import/thread/loop machinery. All frames are kept if
    that would leave none."""
    frames = traceback.extract_tb(tb)
    user = [frame for frame in frames if not frame.filename.startswith(_INTERNAL_PREFIXES)]
    return traceback.format_list(user or frames)
