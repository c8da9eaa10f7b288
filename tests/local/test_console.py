"""The web console in a real headless Chromium against a real local gateway
(docs/console.md).

A gateway serving a copy of examples/ with `--console` and an admin token; Debian's
`chromium` and `chromium-driver` (Makefile SYSTEM_PACKAGES) driven by selenium. The flow a
user follows: log in, see the examples, edit `hello` in the code editor and deploy, test it
and read the new answer and the cold-start header, send an async event and find its
record, and see the API's own message next to a bad field. Each page is saved as a
screenshot under tests/local/artifacts/console/ (gitignored; docs/console/ keeps copies).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.browser import api_message as _api_message
from tests.browser import browser, screenshot
from tests.browser import wait_shown as _wait
from tests.local.conftest import EXAMPLES, ManifestDir, RunningGateway

__all__ = ["browser"]

pytestmark = pytest.mark.local

TOKEN = "console-test-token"
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"


@pytest.fixture
def console_gateway(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> RunningGateway:
    """`kubefaas local` (its code, local_mode) on a verbatim copy of examples/, console on."""
    for example in EXAMPLES.glob("*.yaml"):
        shutil.copy(example, manifest_dir.path / example.name)
    return start_gateway(
        manifest_dir.path,
        # Retries in a fraction of a second, so `fail` reaches the dead letters at once.
        env={"KUBEFAAS_ADMIN_TOKEN": TOKEN, "KUBEFAAS_ASYNC_RETRY_BASE_SECONDS": "0.2"},
        extra_args=("--console",),
    )


def _shot(driver: object, name: str) -> None:
    screenshot(driver, ARTIFACTS, name)


def _notice(driver: object) -> str:
    """The notice of the page a form post led to (waited for: the post may still load)."""
    from selenium.webdriver.common.by import By

    found = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "p.ok"), "the notice")  # type: ignore[attr-defined]
    return str(found[0].text)  # type: ignore[index]


def test_console_login_edit_deploy_test_async(
    console_gateway: RunningGateway, manifest_dir: ManifestDir, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    find = driver.find_element  # type: ignore[attr-defined]
    base = console_gateway.url

    # Not logged in: the console sends the browser to its login form.
    driver.get(f"{base}/console/functions")  # type: ignore[attr-defined]
    assert driver.current_url.endswith("/console/login")  # type: ignore[attr-defined]
    token = find(By.ID, "token")
    assert find(By.CSS_SELECTOR, "label[for=token]").text == "Admin token"
    token.send_keys("wrong")
    token.send_keys(Keys.ENTER)  # the keyboard is enough
    assert "wrong token" in find(By.ID, "login-error").text
    find(By.ID, "token").send_keys(TOKEN)
    _shot(driver, "login")
    find(By.ID, "token").send_keys(Keys.ENTER)

    # The examples are listed, one row each, with their invoke URL.
    _wait(lambda: driver.current_url.endswith("/console/functions"), "the functions page")  # type: ignore[attr-defined]
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-function]")  # type: ignore[attr-defined]
    listed = {row.get_attribute("data-function") for row in rows}
    examples = {
        f"default/{yaml.safe_load(p.read_text())['metadata']['name']}"
        for p in EXAMPLES.glob("*.yaml")
    }
    assert listed == examples
    hello_row = find(By.CSS_SELECTOR, "tr[data-function='default/hello']")
    assert f"{base}/function/hello" in hello_row.text

    # Edit hello's code in the editor (CodeMirror), deploy.
    find(By.LINK_TEXT, "hello").click()
    editor = _wait(
        lambda: driver.find_elements(By.CSS_SELECTOR, ".editor .cm-content"),  # type: ignore[attr-defined]
        "the code editor",
    )[0]  # type: ignore[index]
    editor.click()
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys('GREETING = "howdy"')
    editor.send_keys(Keys.ESCAPE)  # close any completion popup
    find(By.ID, "deploy").click()
    status = _wait(lambda: driver.find_elements(By.ID, "deploy-status"), "the deploy answer")[0]  # type: ignore[attr-defined,index]
    assert status.text.startswith("Deployed: wrote hello.yaml")
    deployed = yaml.safe_load((manifest_dir.path / "hello.yaml").read_text())
    assert 'GREETING = "howdy"' in deployed["spec"]["code"]["inline"]["main.py"]
    assert (manifest_dir.path / "hello.yaml").read_text().startswith("# JSON in, JSON out")

    # Test it: the new answer, from a new instance (cold start), with its duration.
    event = find(By.CSS_SELECTOR, "#test-form .cm-content")
    event.click()
    event.send_keys(Keys.CONTROL, "a")
    event.send_keys(Keys.DELETE)
    event.send_keys('{"name": "console"')  # the editor closes the brace
    find(By.ID, "send").click()
    body = _wait(lambda: driver.find_elements(By.ID, "result-body"), "the test answer")[0]  # type: ignore[attr-defined,index]
    assert '"message": "howdy, console!"' in body.text
    assert find(By.ID, "result-status").text == "200 OK"
    assert find(By.CSS_SELECTOR, "dd[data-header='x-cold-start']").text == "true"
    assert float(find(By.CSS_SELECTOR, "dd[data-header='x-duration-ms']").text) > 0
    _shot(driver, "function")

    # The same function over plain HTTP agrees: the deploy reached the gateway itself.
    assert console_gateway.invoke("hello", {"name": "curl"}).json()["message"] == "howdy, curl!"

    # Send an async event and find its record on the Async page.
    find(By.ID, "mode-async").click()
    find(By.ID, "send").click()
    link = _wait(lambda: driver.find_elements(By.ID, "async-link"), "the async answer")[0]  # type: ignore[attr-defined,index]
    invocation_id = link.text
    link.click()

    def succeeded() -> bool:
        driver.get(f"{base}/console/async")  # type: ignore[attr-defined]
        found = driver.find_elements(By.ID, f"inv-{invocation_id}")  # type: ignore[attr-defined]
        return bool(found) and found[0].get_attribute("data-status") == "succeeded"

    _wait(succeeded, "the async record to succeed")
    assert "howdy, console!" in find(By.ID, f"inv-{invocation_id}").text

    # An event `fail` cannot handle ends in the dead letters; redrive it, then purge it.
    driver.get(f"{base}/console/functions/default/fail")  # type: ignore[attr-defined]
    find(By.ID, "mode-async").click()
    find(By.ID, "send").click()
    failed_id = _wait(lambda: driver.find_elements(By.ID, "async-link"), "the async answer")[0].text  # type: ignore[attr-defined,index]

    def dead_letter() -> list[object]:
        driver.get(f"{base}/console/async")  # type: ignore[attr-defined]
        return driver.find_elements(By.ID, f"dead-{failed_id}")  # type: ignore[attr-defined,no-any-return]

    row = _wait(dead_letter, "the dead letter")[0]  # type: ignore[index]
    assert "failing on purpose" in row.text
    assert find(By.ID, f"inv-{failed_id}").get_attribute("data-status") == "dead"
    _shot(driver, "async")
    row.find_element(By.CSS_SELECTOR, "button.redrive").click()
    assert _notice(driver) == f"redriven: {failed_id}"
    row = _wait(dead_letter, "the redriven event to be dead again")[0]  # type: ignore[index]
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    assert _notice(driver) == f"purged: {failed_id}"
    assert driver.find_elements(By.ID, f"dead-{failed_id}") == []  # type: ignore[attr-defined]

    # A bad field: the API's own message, next to that field; nothing is written.
    driver.get(f"{base}/console/functions/default/hello")  # type: ignore[attr-defined]
    before = (manifest_dir.path / "hello.yaml").read_text()
    field = find(By.ID, "f-maxScale")
    field.clear()
    field.send_keys("5000")
    find(By.ID, "deploy").click()
    error = _wait(lambda: driver.find_elements(By.ID, "err-maxScale"), "the field's error")[0]  # type: ignore[attr-defined,index]
    bad = yaml.safe_load(before)
    bad["spec"]["scaling"]["maxScale"] = 5000
    assert error.text == _api_message(bad)
    assert find(By.ID, "f-maxScale").get_attribute("aria-describedby") == "err-maxScale"
    assert (manifest_dir.path / "hello.yaml").read_text() == before
    _shot(driver, "bad-field")

    # A new function: a bad name gets the API's rule beside it, a good one is deployed
    # into the folder and answers at once.
    driver.get(f"{base}/console/functions")  # type: ignore[attr-defined]
    find(By.ID, "new-function").click()
    find(By.ID, "f-name").send_keys("Made_Here")
    find(By.ID, "create").click()
    name_error = _wait(lambda: driver.find_elements(By.ID, "err-name"), "the name's error")[0]  # type: ignore[attr-defined,index]
    assert name_error.text.startswith("metadata.name: ")
    field = find(By.ID, "f-name")
    field.clear()
    field.send_keys("made-here")
    find(By.ID, "create").click()
    _wait(lambda: driver.current_url.endswith("/console/functions/default/made-here"), "its page")  # type: ignore[attr-defined]
    assert (manifest_dir.path / "made-here.yaml").exists()
    find(By.ID, "send").click()
    body = _wait(lambda: driver.find_elements(By.ID, "result-body"), "its answer")[0]  # type: ignore[attr-defined,index]
    assert '"hello": {' in body.text

    # The functions page counts what happened (sync, async and the curl call).
    driver.get(f"{base}/console/functions")  # type: ignore[attr-defined]
    hello_row = find(By.CSS_SELECTOR, "tr[data-function='default/hello']")
    counts = [c.text for c in hello_row.find_elements(By.CSS_SELECTOR, ".count")]
    assert counts[:2] == ["3", "0"]  # invocations, errors
    assert int(counts[2]) >= 1  # cold starts
    _shot(driver, "functions")

    # The page keeps itself current: one more call shows up without a reload.
    console_gateway.invoke("hello", {"name": "again"})

    def invocations_shown() -> str:
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            row = find(By.CSS_SELECTOR, "tr[data-function='default/hello']")
            return str(row.find_elements(By.CSS_SELECTOR, ".count")[0].text)
        except StaleElementReferenceException:
            return ""  # replaced by the refresh while being read

    _wait(lambda: invocations_shown() == "4", "the functions page to refresh itself")
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    driver.get(f"{base}/console/functions/default/hello")  # type: ignore[attr-defined]
    _shot(driver, "function-dark")


def test_console_refuses_without_session_or_csrf(console_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=console_gateway.url, follow_redirects=False) as client:
        _refuses(client)


def _refuses(client: httpx.Client) -> None:
    # Every page sends a browser without a session to the login form.
    for path in ("/console/functions", "/console/functions/default/hello", "/console/async"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/login")
    assert client.post("/console/login", data={"token": "nope"}).status_code == 401
    # A form posted from another site is refused even with the right token.
    cross = client.post(
        "/console/login", data={"token": TOKEN}, headers={"Origin": "http://192.0.2.1"}
    )
    assert cross.status_code == 403
    login = client.post("/console/login", data={"token": TOKEN})
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console"):
        assert attribute in cookie
    # With the cookie but without the form's CSRF token, nothing is deployed.
    refused = client.post(
        "/console/functions/default/hello/deploy", data={"maxScale": "2", "env": ""}
    )
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]


def test_console_is_off_unless_enabled(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_example("hello")
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_ADMIN_TOKEN": TOKEN})
    assert gateway.client.get("/console/login").status_code == 404


def test_console_without_an_admin_token_says_how_to_set_one(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_example("hello")
    gateway = start_gateway(manifest_dir.path, extra_args=("--console",))
    page = gateway.client.get("/console/login")
    assert page.status_code == 200
    assert "KUBEFAAS_ADMIN_TOKEN" in page.text
    # No token configured never means open: every token is wrong.
    assert gateway.client.post("/console/login", data={"token": ""}).status_code == 401
    assert gateway.client.get("/console/functions").status_code == 303


TEAM_A = "console-team-a-token"
TALK = """\
import logging

def handler(event, context):
    print("talking to", event.get("name"))
    logging.warning("warned %s", event.get("name"))
    return {"said": event.get("name")}
"""


def _tenant_folder(manifest_dir: ManifestDir) -> None:
    """The examples (namespace default), `talk` in team-a, `echo` in team-b, and team-a's
    namespace token in the mounted-Secret file layout (so a test can revoke it)."""
    for example in EXAMPLES.glob("*.yaml"):
        shutil.copy(example, manifest_dir.path / example.name)
    manifest_dir.add_function("talk", TALK, namespace="team-a")
    manifest_dir.add_function("echo", "def handler(event, context):\n    return event\n",
                              namespace="team-b")  # fmt: skip
    folder = manifest_dir.path / "secrets" / "default" / "kubefaas-namespace-tokens"
    folder.mkdir(parents=True)
    (folder / "team-a").write_text(TEAM_A)


@pytest.fixture
def tenant_gateway(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> RunningGateway:
    _tenant_folder(manifest_dir)
    return start_gateway(
        manifest_dir.path,
        env={
            "KUBEFAAS_ADMIN_TOKEN": TOKEN,
            "KUBEFAAS_NAMESPACE_TOKENS_SECRET": "kubefaas-namespace-tokens",
            "KUBEFAAS_SECRET_CACHE_SECONDS": "0.2",
            "KUBEFAAS_ASYNC_RETRY_BASE_SECONDS": "0.2",
        },
        extra_args=("--console",),
    )


def _log_in(driver: object, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{base}/console/login")  # type: ignore[attr-defined]
    field = driver.find_element(By.ID, "token")  # type: ignore[attr-defined]
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    _wait(lambda: driver.current_url.endswith("/console/functions"), "the functions page")  # type: ignore[attr-defined]


def test_console_namespace_login_sees_its_namespace_tests_with_logs_and_deletes(
    tenant_gateway: RunningGateway, manifest_dir: ManifestDir, browser: object
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    find = driver.find_element  # type: ignore[attr-defined]
    base = tenant_gateway.url

    # Log in with team-a's namespace token: only team-a's function is listed.
    driver.get(f"{base}/console/login")  # type: ignore[attr-defined]
    assert find(By.CSS_SELECTOR, "label[for=token]").text == "Admin or namespace token"
    _log_in(driver, base, TEAM_A)
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-function]")  # type: ignore[attr-defined]
    assert [row.get_attribute("data-function") for row in rows] == ["team-a/talk"]
    assert find(By.ID, "who").text == "Logged in: namespace team-a"
    _shot(driver, "namespace-functions")

    # Another namespace's function page is refused, saying why.
    driver.get(f"{base}/console/functions/team-b/echo")  # type: ignore[attr-defined]
    assert "may not see functions in namespace 'team-b'" in find(By.TAG_NAME, "body").text

    # A sync test shows the invocation's own log lines, ending with its REPORT line.
    driver.get(f"{base}/console/functions/team-a/talk")  # type: ignore[attr-defined]
    find(By.ID, "send").click()
    logs = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#result-logs li"), "the logs")  # type: ignore[attr-defined]
    invocation_id = find(By.CSS_SELECTOR, "dd[data-header='x-invocation-id']").text
    texts = [line.text for line in logs]  # type: ignore[attr-defined]
    assert texts[:2] == ["INFO stdout talking to console", "WARNING root warned console"]
    assert texts[-1].startswith(f"REPORT RequestId: {invocation_id} Duration: ")
    assert logs[-1].get_attribute("data-type") == "REPORT"  # type: ignore[index]
    _shot(driver, "test-logs")

    # An async test waits for the record and shows each attempt's lines.
    find(By.ID, "mode-async").click()
    find(By.ID, "send").click()
    outcome = _wait(lambda: driver.find_elements(By.ID, "async-outcome"), "the async outcome")[0]  # type: ignore[attr-defined,index]
    assert outcome.get_attribute("data-status") == "succeeded"
    async_id = find(By.ID, "async-link").text
    attempt = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#logs-attempt-1 li")]  # type: ignore[attr-defined]
    assert attempt[0] == "INFO stdout talking to console"
    assert attempt[-1].startswith(f"REPORT RequestId: {async_id} ")
    assert find(By.ID, "async-result").text == '{"said": "console"}'

    # Delete, confirmed by typing the name: the manifest file goes, the URL answers 404.
    talk_file = manifest_dir.path / "team-a-talk.yaml"
    assert talk_file.exists()
    find(By.ID, "confirm-delete").send_keys("talk")
    _shot(driver, "delete")
    find(By.ID, "delete").click()
    notice = _wait(lambda: driver.find_elements(By.ID, "notice"), "the delete notice")[0]  # type: ignore[attr-defined,index]
    assert notice.text.startswith("removed team-a-talk.yaml and reloaded ")
    assert not talk_file.exists()
    assert driver.find_elements(By.CSS_SELECTOR, "tr[data-function]") == []  # type: ignore[attr-defined]
    assert tenant_gateway.invoke("talk", {}, namespace="team-a").status_code == 404

    # The admin token still sees every namespace.
    find(By.CSS_SELECTOR, "form.logout button").click()
    _wait(lambda: driver.current_url.endswith("/console/login"), "the login form")  # type: ignore[attr-defined]
    _log_in(driver, base, TOKEN)
    listed = {
        row.get_attribute("data-function")
        for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-function]")  # type: ignore[attr-defined]
    }
    assert "team-b/echo" in listed
    assert "default/hello" in listed
    assert find(By.ID, "who").text == "Logged in: admin"


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_console_namespace_session_cannot_touch_other_namespaces(
    tenant_gateway: RunningGateway, manifest_dir: ManifestDir
) -> None:
    with httpx.Client(base_url=tenant_gateway.url, follow_redirects=False) as client:
        assert client.post("/console/login", data={"token": TEAM_A}).status_code == 303
        csrf = _csrf(client.get("/console/functions/team-a/talk"))
        before = (manifest_dir.path / "team-b-echo.yaml").read_text()
        for action, form in (
            ("deploy", {"maxScale": "2", "env": ""}),
            ("test", {"mode": "sync", "event": "{}"}),
            ("delete", {"confirm": "echo"}),
        ):
            path = f"/console/functions/team-b/echo/{action}"
            refused = client.post(path, data=form | {"csrf": csrf})
            assert refused.status_code == 403, action
            assert "namespace 'team-b'" in refused.json()["detail"]
        assert (manifest_dir.path / "team-b-echo.yaml").read_text() == before
        new = client.post(
            "/console/new", data={"csrf": csrf, "name": "sneaky", "namespace": "team-b"}
        )
        assert new.status_code == 403
        assert "may not deploy functions in namespace &#39;team-b&#39;" in new.text
        assert not list(manifest_dir.path.glob("*sneaky*"))

        # Another namespace's dead letter: not listed, and not redriven.
        accepted = tenant_gateway.client.post("/async-function/fail", json={"x": 1})
        dead_id = accepted.json()["invocationId"]
        admin = {"Authorization": f"Bearer {TOKEN}"}

        def dead() -> bool:
            listed = tenant_gateway.client.get("/system/dead-letters", headers=admin).json()
            return any(item["invocationId"] == dead_id for item in listed["items"])

        _wait(dead, "the dead letter")
        assert dead_id not in client.get("/console/async").text
        redrive = client.post(f"/console/async/dead-letters/{dead_id}/redrive", data={"csrf": csrf})
        assert redrive.status_code == 403
        assert "namespace 'default'" in redrive.json()["detail"]

        # Revoking the token (its key removed from the Secret) ends the session.
        (manifest_dir.path / "secrets/default/kubefaas-namespace-tokens/team-a").unlink()
        _wait(lambda: client.get("/console/functions").status_code == 303, "the session to end")
        assert client.post("/console/login", data={"token": TEAM_A}).status_code == 401
