"""Request -> event and result -> response mapping of the runtime (pure functions)."""

from __future__ import annotations

import base64
import json

import pytest

from kubefaas_runtime.events import (
    FUNCTION_ERROR_UNHANDLED,
    Reply,
    http_event,
    http_reply,
    json_event,
    json_reply,
    timeout_reply,
)


def _event(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [],
        "body": b"",
        "request_id": "req-1",
        "request_time_ms": 1_700_000_000_000,
        "source_ip": "10.0.0.7",
    }
    arguments.update(overrides)
    return http_event(**arguments)  # type: ignore[arg-type]


def _error(reply: Reply) -> dict[str, object]:
    document = json.loads(reply.body)
    assert isinstance(document, dict)
    return document


# --- json format --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (b'{"name": "ada", "n": [1, 2]}', {"name": "ada", "n": [1, 2]}),
        (b"[1, 2, 3]", [1, 2, 3]),
        (b'"just a string"', "just a string"),
        (b"42", 42),
        (b"null", None),
        (b"not json at all", "not json at all"),
        (b"{broken", "{broken"),
        (b"", {}),
        (b"  \n", {}),
        ("héllo".encode(), "héllo"),
    ],
)
def test_json_event_decodes_body_falls_back_to_text_and_defaults_to_empty_object(
    body: bytes, event: object
) -> None:
    assert json_event(body) == event


def test_json_event_replaces_bytes_that_are_not_utf8() -> None:
    assert json_event(b"ab\xffcd") == "ab\ufffdcd"


def test_json_reply_is_compact_utf8_json() -> None:
    reply = json_reply({"greeting": "héllo", "n": [1, 2.5, None, True]})
    assert reply.status == 200
    assert reply.content_type == b"application/json"
    assert reply.function_error is None
    assert reply.body == '{"greeting":"héllo","n":[1,2.5,null,true]}'.encode()


@pytest.mark.parametrize(
    "value", [{1, 2}, b"bytes", object(), float("nan"), {"x": float("inf")}, {(1, 2): "tuple key"}]
)
def test_json_reply_refuses_values_json_cannot_carry(value: object) -> None:
    reply = json_reply(value)
    assert reply.status == 500
    assert reply.function_error == FUNCTION_ERROR_UNHANDLED
    document = _error(reply)
    assert document["errorType"] == "Runtime.SerializationError"
    assert str(document["errorMessage"]).startswith("Unable to marshal response:")


def test_json_reply_refuses_a_circular_value() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert _error(json_reply(loop))["errorType"] == "Runtime.SerializationError"


def test_timeout_reply_says_how_long_the_call_had() -> None:
    reply = timeout_reply(1.5)
    assert reply.status == 504
    assert reply.function_error == b"Timeout"
    document = _error(reply)
    assert document["errorType"] == "Runtime.Timeout"
    assert document["errorMessage"] == "Task timed out after 1.50 seconds"


# --- http format: events ------------------------------------------------------------


def test_http_event_has_the_api_gateway_proxy_shape() -> None:
    event = _event(
        method="POST",
        path="/orders/42",
        query_string=b"expand=items",
        headers=[(b"content-type", b"application/json")],
        body=b'{"qty": 1}',
    )
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/orders/42"
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": "orders/42"}
    assert event["body"] == '{"qty": 1}'
    assert event["isBase64Encoded"] is False
    assert event["queryStringParameters"] == {"expand": "items"}
    assert event["requestContext"] == {
        "requestId": "req-1",
        "httpMethod": "POST",
        "path": "/orders/42",
        "stage": "$default",
        "requestTimeEpoch": 1_700_000_000_000,
        "resourcePath": "/{proxy+}",
        "protocol": "HTTP/1.1",
        "identity": {"sourceIp": "10.0.0.7"},
    }
    # The event must survive the trip to an async queue or a log line.
    assert json.loads(json.dumps(event)) == event


def test_http_event_lowercases_header_names_and_joins_repeated_ones() -> None:
    event = _event(
        headers=[
            (b"Accept", b"text/html"),
            (b"X-Trace", b"a"),
            (b"accept", b"application/json"),
        ]
    )
    assert event["headers"] == {"accept": "text/html,application/json", "x-trace": "a"}
    assert event["multiValueHeaders"] == {
        "accept": ["text/html", "application/json"],
        "x-trace": ["a"],
    }


def test_http_event_query_last_value_wins_and_all_values_are_kept() -> None:
    event = _event(query_string=b"tag=a&tag=b&name=J%C3%BCrgen&empty=")
    assert event["queryStringParameters"] == {"tag": "b", "name": "Jürgen", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {
        "tag": ["a", "b"],
        "name": ["Jürgen"],
        "empty": [""],
    }


def test_http_event_without_query_or_body_has_nulls() -> None:
    event = _event(path="")
    assert event["path"] == "/"
    assert event["pathParameters"] is None
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


def test_http_event_base64_encodes_a_body_that_is_not_utf8() -> None:
    payload = bytes(range(256))
    event = _event(method="PUT", body=payload)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(str(event["body"])) == payload


# --- http format: responses ---------------------------------------------------------


def test_proxy_response_sets_status_headers_and_body() -> None:
    reply = http_reply(
        {
            "statusCode": 201,
            "headers": {"Location": "/orders/43", "X-Count": 3, "X-Flag": True},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": '{"id": 43}',
        }
    )
    assert reply.status == 201
    assert reply.body == b'{"id": 43}'
    assert reply.content_type == b"application/json"
    assert list(reply.headers) == [
        (b"location", b"/orders/43"),
        (b"x-count", b"3"),
        (b"x-flag", b"true"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert reply.function_error is None


def test_proxy_response_decodes_a_base64_body() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x01"
    reply = http_reply(
        {"statusCode": 200, "body": base64.b64encode(png).decode(), "isBase64Encoded": True}
    )
    assert reply.body == png
    assert reply.content_type == b"application/octet-stream"


@pytest.mark.parametrize(
    ("response", "content_type"),
    [
        ({"statusCode": 200, "body": "hello"}, b"text/plain; charset=utf-8"),
        ({"statusCode": 200, "body": "  [1, 2]"}, b"application/json"),
        ({"statusCode": 200, "body": {"encoded": "here"}}, b"application/json"),
        (
            {"statusCode": 200, "body": "<p>hi</p>", "headers": {"Content-Type": "text/html"}},
            b"text/html",
        ),
    ],
)
def test_proxy_response_content_type_defaults(
    response: dict[str, object], content_type: bytes
) -> None:
    reply = http_reply(response)
    assert reply.content_type == content_type
    assert not any(name == b"content-type" for name, _ in reply.headers)


def test_proxy_response_encodes_a_non_string_body_as_json() -> None:
    assert http_reply({"statusCode": 200, "body": {"a": [1]}}).body == b'{"a":[1]}'


def test_proxy_response_204_has_no_body() -> None:
    reply = http_reply({"statusCode": 204, "body": "ignored"})
    assert reply.status == 204
    assert reply.body == b""


def test_proxy_response_drops_framing_and_runtime_headers() -> None:
    reply = http_reply(
        {
            "statusCode": 200,
            "headers": {
                "Content-Length": "999",
                "Transfer-Encoding": "chunked",
                "X-Function-Error": "Unhandled",
                "X-Kept": "yes",
            },
            "body": "ok",
        }
    )
    assert list(reply.headers) == [(b"x-kept", b"yes")]


def test_proxy_status_may_be_a_numeric_string() -> None:
    assert http_reply({"statusCode": "404", "body": "nope"}).status == 404


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        ({"statusCode": "teapot"}, "statusCode 'teapot' is not an integer"),
        ({"statusCode": 99}, "outside 200-599"),
        ({"statusCode": True}, "not an integer"),
        ({"statusCode": 200, "headers": ["a"]}, "headers must be an object"),
        ({"statusCode": 200, "headers": {"X-A": "a\r\nInjected: 1"}}, "line break"),
        ({"statusCode": 200, "headers": {"bad name": "v"}}, "not a valid HTTP token"),
        ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "not valid base64"),
        ({"statusCode": 200, "body": {1, 2}}, "not JSON-encodable"),
    ],
)
def test_malformed_proxy_response_is_a_500_that_says_why(
    response: dict[str, object], fragment: str
) -> None:
    reply = http_reply(response)
    assert reply.status == 500
    assert reply.function_error == FUNCTION_ERROR_UNHANDLED
    document = _error(reply)
    assert document["errorType"] == "Runtime.InvalidResponse"
    assert fragment in str(document["errorMessage"])


@pytest.mark.parametrize("result", [{"no": "statusCode"}, ["a"], "text", None])
def test_other_http_results_are_sent_as_json(result: object) -> None:
    reply = http_reply(result)
    assert reply.status == 200
    assert reply.content_type == b"application/json"
    assert json.loads(reply.body) == result
