"""Every example, applied with kubectl and invoked through the gateway Service, on real pods.

A new Function has no pods, so its first call is a cold start that the gateway holds until
the pod answers; the next call reuses that pod, which is where module state and /tmp show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e


def _cold(response: Any) -> bool:
    return bool(response.headers.get("x-cold-start") == "true")


def test_hello_cold_start_then_warm(release: Release, deploy: Deploy) -> None:
    name = deploy("hello")

    first = release.gateway.invoke(name, {"name": "e2e"})
    assert first.status_code == 200, first.text
    assert _cold(first), first.headers
    body = first.json()
    assert body["message"] == "hello, e2e!"
    assert body["requestId"] == first.headers["x-invocation-id"]
    assert float(first.headers["x-duration-ms"]) >= 0

    second = release.gateway.invoke(name, {"name": "again"})
    assert second.status_code == 200, second.text
    assert second.headers["x-cold-start"] == "false"
    assert second.json()["message"] == "hello, again!"
    assert len(release.function_pods(name)) == 1


def test_counter_keeps_module_state_on_a_warm_pod(release: Release, deploy: Deploy) -> None:
    name = deploy("counter")

    responses = [release.gateway.invoke(name, {}) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert [_cold(r) for r in responses] == [True, False, False]
    bodies = [r.json() for r in responses]
    assert [b["count"] for b in bodies] == [1, 2, 3]
    assert len({b["instance"] for b in bodies}) == 1, "all three calls ran on one instance"


def test_tmp_cache_survives_between_calls_on_a_pod(release: Release, deploy: Deploy) -> None:
    name = deploy("tmp-cache")

    first = release.gateway.invoke(name, {})
    second = release.gateway.invoke(name, {})

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert _cold(first)
    assert not _cold(second)
    assert first.json()["cached"] is False
    assert second.json() == {"cached": True, "value": first.json()["value"]}


def test_http_event_format_runs_an_api_gateway_style_handler(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("http")

    response = release.gateway.invoke(name, path="/items/42", method="GET", params={"verbose": "1"})

    assert response.status_code == 200, response.text
    assert _cold(response)
    assert response.headers["x-handled-by"] == "kubefaas"
    body = response.json()
    assert body["method"] == "GET"
    assert body["path"] == "/items/42"
    assert body["query"] == {"verbose": "1"}

    refused = release.gateway.invoke(name, path="/items/42", method="DELETE")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, POST"


def test_slow_answers_within_its_timeout_and_504_past_it(release: Release, deploy: Deploy) -> None:
    name = deploy("slow")  # timeoutSeconds: 5

    quick = release.gateway.invoke(name, {"seconds": 0.5})
    assert quick.status_code == 200, quick.text
    assert _cold(quick)
    assert quick.json() == {"slept": 0.5}

    late = release.gateway.invoke(name, {"seconds": 8})
    assert late.status_code == 504, late.text
    assert late.json()["error"]["type"]

    # The instance survives a timed-out call.
    again = release.gateway.invoke(name, {"seconds": 0})
    assert again.status_code == 200, again.text
    assert not _cold(again)


def test_fail_gives_502_with_the_function_error_and_keeps_serving(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("fail")

    first = release.gateway.invoke(name, {"n": 1})
    assert first.status_code == 502, first.text
    assert _cold(first), f"every response carries X-Cold-Start; got {first.headers}"
    error = first.json()["error"]
    assert error["invocationId"] == first.headers["x-invocation-id"]
    assert "failing on purpose" in error["message"]

    second = release.gateway.invoke(name, {"n": 2})
    assert second.status_code == 502, second.text
    assert not _cold(second), "the pod kept serving after an unhandled exception"


def test_unknown_function_is_404(release: Release) -> None:
    response = release.gateway.invoke("no-such-function", {})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"]
