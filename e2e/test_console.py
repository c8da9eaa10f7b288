"""The web console in headless Chromium against the chart on a real cluster
(docs/console.md): the session's release runs with `console.enabled: true`.

The flow a user follows: log in with the admin token the chart generated, see the
functions listed, edit `hello`'s message in the code editor and deploy it (server-side
apply through the API server, as the gateway's ServiceAccount), test it and read the new
answer and the cold-start header, send an async event and find its record, and see the
API's own message next to a bad field. The browser helpers are the local tier's
(`tests.browser`). Screenshots go to tmp/artifacts/console-e2e/ (gitignored).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import REPO, wait_for
from tests.browser import api_message, browser, screenshot, wait_shown

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

__all__ = ["browser"]

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "tmp" / "artifacts" / "console-e2e"
# A cold start through the console waits on a pod being scheduled and started.
INVOKE_WAIT_SECONDS = 120.0


def function_object(release: Release, name: str) -> dict[str, Any]:
    found: dict[str, Any] = release.cluster.json(
        "get", "function", name, "-n", release.functions_namespace
    )
    return found


def test_console_on_the_cluster_login_edit_deploy_test_async(
    release: Release, deploy: Deploy, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ns = release.functions_namespace
    hello = deploy("hello")
    other = deploy("counter")
    driver: Any = browser
    find = driver.find_element
    base = release.gateway.url

    # Not logged in: the console sends the browser to its login form.
    driver.get(f"{base}/console/functions")
    assert driver.current_url.endswith("/console/login")
    token = find(By.ID, "token")
    token.send_keys("wrong")
    token.send_keys(Keys.ENTER)
    assert "wrong token" in find(By.ID, "login-error").text
    find(By.ID, "token").send_keys(release.admin_token())
    screenshot(driver, ARTIFACTS, "login")
    find(By.ID, "token").send_keys(Keys.ENTER)

    # The Functions the gateway watches are listed, with their invoke URL.
    wait_shown(lambda: driver.current_url.endswith("/console/functions"), "the functions page")
    listed = {
        row.get_attribute("data-function")
        for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-function]")
    }
    assert {f"{ns}/{hello}", f"{ns}/{other}"} <= listed
    row = find(By.CSS_SELECTOR, f"tr[data-function='{ns}/{hello}']")
    assert f"/function/{ns}/{hello}" in row.text or f"/function/{hello}" in row.text
    screenshot(driver, ARTIFACTS, "functions")

    # Edit hello's code in the editor and deploy: a server-side apply of the Function.
    generation = function_object(release, hello)["metadata"]["generation"]
    find(By.LINK_TEXT, hello).click()
    editor = wait_shown(
        lambda: driver.find_elements(By.CSS_SELECTOR, ".editor .cm-content"), "the code editor"
    )[0]  # type: ignore[index]
    editor.click()
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys('GREETING = "howdy"')
    editor.send_keys(Keys.ESCAPE)  # close any completion popup
    find(By.ID, "deploy").click()
    status = wait_shown(lambda: driver.find_elements(By.ID, "deploy-status"), "the deploy")[0]  # type: ignore[index]
    assert f"applied Function {ns}/{hello} to the cluster" in status.text, status.text

    applied = function_object(release, hello)
    assert 'GREETING = "howdy"' in applied["spec"]["code"]["inline"]["main.py"]
    assert applied["metadata"]["generation"] > generation
    fields = release.cluster.json("get", "function", hello, "-n", ns, "--show-managed-fields")[
        "metadata"
    ]["managedFields"]
    assert "kubefaas-console" in {entry["manager"] for entry in fields}
    # The operator has rolled the new spec into the Deployment before the test call, as a
    # user reading the Ready column would wait for.
    wait_for(
        f"the operator to observe generation {applied['metadata']['generation']} of {hello}",
        lambda: (
            (function_object(release, hello).get("status") or {}).get("observedGeneration")
            == applied["metadata"]["generation"]
        ),
        timeout=60,
        explain=release.diagnostics,
    )

    # Test it: the new answer from a new pod (hello was never called: a cold start).
    assert release.function_replicas(hello) == 0
    driver.get(f"{base}/console/functions/{ns}/{hello}")
    event = find(By.CSS_SELECTOR, "#test-form .cm-content")
    event.click()
    event.send_keys(Keys.CONTROL, "a")
    event.send_keys(Keys.DELETE)
    event.send_keys('{"name": "console"')  # the editor closes the brace
    find(By.ID, "send").click()
    body = wait_shown(
        lambda: driver.find_elements(By.ID, "result-body"), "the test answer", INVOKE_WAIT_SECONDS
    )[0]  # type: ignore[index]
    assert '"message": "howdy, console!"' in body.text, body.text
    assert find(By.ID, "result-status").text == "200 OK"
    assert find(By.CSS_SELECTOR, "dd[data-header='x-cold-start']").text == "true"
    assert float(find(By.CSS_SELECTOR, "dd[data-header='x-duration-ms']").text) > 0
    screenshot(driver, ARTIFACTS, "function")
    # The same function over plain HTTP agrees.
    answer = release.gateway.invoke(hello, {"name": "curl"})
    assert answer.json()["message"] == "howdy, curl!"

    # Send an async event and find its record on the Async page.
    find(By.ID, "mode-async").click()
    find(By.ID, "send").click()
    link = wait_shown(lambda: driver.find_elements(By.ID, "async-link"), "the async answer")[0]  # type: ignore[index]
    invocation_id = link.text
    link.click()

    def succeeded() -> bool:
        driver.get(f"{base}/console/async")
        found = driver.find_elements(By.ID, f"inv-{invocation_id}")
        return bool(found) and found[0].get_attribute("data-status") == "succeeded"

    wait_shown(succeeded, "the async record to succeed", INVOKE_WAIT_SECONDS)
    assert "howdy, console!" in find(By.ID, f"inv-{invocation_id}").text
    screenshot(driver, ARTIFACTS, "async")

    # A bad field: the API's own message next to that field; nothing reaches the cluster.
    before = function_object(release, hello)
    driver.get(f"{base}/console/functions/{ns}/{hello}")
    field = find(By.ID, "f-maxScale")
    field.clear()
    field.send_keys("5000")
    find(By.ID, "deploy").click()
    error = wait_shown(lambda: driver.find_elements(By.ID, "err-maxScale"), "the field's error")[0]  # type: ignore[index]
    bad = {
        "apiVersion": before["apiVersion"],
        "kind": before["kind"],
        "metadata": {"name": hello, "namespace": ns},
        "spec": json.loads(json.dumps(before["spec"])),
    }
    bad["spec"].setdefault("scaling", {})["maxScale"] = 5000
    assert error.text == api_message(bad)
    assert find(By.ID, "f-maxScale").get_attribute("aria-describedby") == "err-maxScale"
    after = function_object(release, hello)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    screenshot(driver, ARTIFACTS, "bad-field")
