"""The console's projects page in real Chromium, against a running API process: a write token
adds a project (its callbacks are then accepted on its own URL), renames and removes it; the page
never shows a secret. Screenshots land in `var/screenshots/console/` (projects-*.png)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.signing import sign
from tests.support.stack import API_TOKEN, Stack, running_stack
from tests.test_console_browser import _shot, _sign_in, _until, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

KEY_SECRET = "console-project-key-secret-never-shown"
CALLBACK_SECRET = "console-project-callback-secret-never-shown"
BOUND_SECONDS = 60.0
"""A bound on the API process's refresh under load, not the contract's 5 s."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        tmp_path, "console_projects", PROJECT_SECRETS_KEY=Fernet.generate_key().decode()
    ) as started:
        started.start_api()
        yield started


def _callback_answer(stack: Stack, body: bytes) -> int:
    answer = httpx.post(
        stack.api_url + "/callbacks/sinch/proj-c/registrations",
        content=body,
        headers={"X-Sinch-Signature": sign(body, CALLBACK_SECRET)},
        timeout=30,
    )
    return answer.status_code


def _until_answered(stack: Stack, body: bytes, status: int) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while _callback_answer(stack, body) != status:
        assert time.monotonic() < deadline, f"the callback was never answered {status}"
        time.sleep(0.1)


def _submit(driver: WebDriver, form_action: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, f"form[action='{form_action}']")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_a_write_token_adds_renames_and_removes_a_project(
    stack: Stack,
    browser: WebDriver,  # noqa: F811 (the fixture)
) -> None:
    base = stack.api_url
    _sign_in(browser, base, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "nav"))
    browser.get(f"{base}/console/projects")
    _until(browser, lambda d: d.find_elements(By.ID, "projects"))
    assert stack.sim.project_id in browser.find_element(By.ID, "projects").text

    form = browser.find_element(By.CSS_SELECTOR, "form[action='/console/projects']")
    for name, value in (
        ("project_id", "proj-c"),
        ("name", "Brand C"),
        ("key_id", "key-c"),
        ("key_secret", KEY_SECRET),
        ("callback_secret", CALLBACK_SECRET),
    ):
        form.find_element(By.NAME, name).send_keys(value)
    _submit(browser, "/console/projects")
    _until(browser, lambda d: "Project added" in d.page_source)
    table = browser.find_element(By.ID, "projects").text
    assert "proj-c" in table and "Brand C" in table and "key-c" in table
    _shot(browser, "projects-added")
    assert KEY_SECRET not in browser.page_source and CALLBACK_SECRET not in browser.page_source

    body = b'{"eventId": "console-c-1", "resourceId": "reg-c", "status": "IN_PROGRESS"}'
    _until_answered(stack, body, 200)

    rename = browser.find_element(By.CSS_SELECTOR, "form[action='/console/projects/proj-c/rename']")
    field = rename.find_element(By.NAME, "name")
    field.clear()
    field.send_keys("Brand C, renamed")
    _submit(browser, "/console/projects/proj-c/rename")
    _until(browser, lambda d: "Project renamed" in d.page_source)
    assert "Brand C, renamed" in browser.find_element(By.ID, "projects").text

    # It has data (the callback kept): removal without its data is refused, nothing changed.
    _submit(browser, "/console/projects/proj-c/remove")
    _until(browser, lambda d: "still has data" in d.page_source)
    _shot(browser, "projects-remove-refused")
    browser.get(f"{base}/console/projects")
    _until(browser, lambda d: d.find_elements(By.ID, "projects"))
    remove = browser.find_element(By.CSS_SELECTOR, "form[action='/console/projects/proj-c/remove']")
    remove.find_element(By.NAME, "with_data").click()
    _submit(browser, "/console/projects/proj-c/remove")
    _until(browser, lambda d: "Project removed" in d.page_source)
    assert "proj-c" not in browser.find_element(By.ID, "projects").text
    _shot(browser, "projects-removed")
    _until_answered(stack, body, 404)
