"""Headless Chromium for the console's browser tests, shared by the local tier
(tests/local/test_console.py) and the end-to-end tier (e2e/test_console.py).

Debian's `chromium` and `chromium-driver` (Makefile SYSTEM_PACKAGES) driven by selenium;
missing binaries fail the test (never a skip) naming the packages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubefaas.api import InvalidFunction, parse_function

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 30.0


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the console tests need Debian's chromium and chromium-driver: make system-deps"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait_shown(check: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> object:
    """Poll `check` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def screenshot(driver: object, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / f"{name}.png"))  # type: ignore[attr-defined]


def api_message(document: dict[str, object]) -> str:
    """What the Function API says about `document` (the model the CRD is generated from)."""
    try:
        parse_function(document)
    except InvalidFunction as exc:
        return exc.problems[0]
    raise AssertionError("expected the document to be invalid")
