"""The console's registration forms in a real browser (issue 27): "New registration" (pick a
policy from the catalog, a form generated from it, checked on the server like
`?validateOnly=true`, submitted through the API's path) and, on a PENDING registration, the form
that answers Sinch (prefilled from its document, sent as an update); the registration's page shows
what changed between the versions of Sinch's document.

One stack (API process, simulator as Sinch, PostgreSQL, a private Redis; no worker: nothing here
waits on a callback) serves the whole module, so the browser tests stay cheap. Screenshots land in
`var/screenshots/console/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from app.tokens.principal import Scope
from devtools.simulator import SimulatorControl
from tests.support import processes
from tests.support.stack import API_TOKEN, Stack, running_stack
from tests.support.tokens import make_token
from tests.test_console_browser import (
    AUTH,
    _shot,
    _sign_in,
    _signed_in_client,
    _until,
    chromium,
)

pytestmark = pytest.mark.slow

GB = "sim-policy-gb-alphanumeric"
ASKED = "Describe the use case in more detail"


@contextmanager
def catalog_stack(folder: Path, name: str, **env: str) -> Iterator[Stack]:
    """A stack with its API running (no worker) and its catalog refreshed from the simulator."""
    with running_stack(folder, name, **env) as started:
        started.start_api()
        refreshed = processes.run_cli(started.env, "catalog", "refresh", cwd=folder)
        assert refreshed.returncode == 0, refreshed.stderr
        yield started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console-forms")
    with catalog_stack(
        folder, "console_forms", PUBLIC_BASE_URL="https://registrations.example.com"
    ) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _signed_in(driver: WebDriver, base: str) -> None:
    """The module's browser signed in with the write token (once: the session outlives a test)."""
    driver.get(f"{base}/console")
    if driver.find_elements(By.ID, "token"):
        _sign_in(driver, base, API_TOKEN)
    _until(driver, lambda d: d.find_elements(By.ID, "events-by-state"))


async def _pending_under(policy_id: str, stack: Stack) -> str:
    """A registration the simulator holds PENDING under `policy_id`; answers its id."""
    async with SimulatorControl(stack.sim.base_url) as sim:
        created = await sim.create_registration(policy_id=policy_id, lifecycle=["PENDING"])
    return str(created["id"])


def _fill(driver: WebDriver, values: dict[str, str]) -> None:
    """Type each value into the input named by its path (a choice is selected)."""
    for name, value in values.items():
        element = driver.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


def _errors(driver: WebDriver) -> dict[str, str]:
    return {
        e.get_attribute("data-path") or "": e.text
        for e in driver.find_elements(By.CSS_SELECTOR, ".field-error")
    }


COMPANY_AND_CONTACT = {
    "$.companyDetails.companyName": "Acme Ltd",
    "$.companyDetails.companyNumber": "AB123456",
    "$.contactPerson.firstName": "Ada",
    "$.contactPerson.lastName": "Lovelace",
    "$.contactPerson.email": "ada@example.com",
}


def test_a_new_registration_is_checked_beside_each_field_then_submitted_and_answered(
    stack: Stack, browser: WebDriver
) -> None:
    base = stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    _signed_in(browser, base)

    # Registrations → New registration → the catalog's policies → the GB policy's form.
    browser.get(f"{base}/console/registrations")
    browser.find_element(By.ID, "new-registration").click()
    _until(browser, lambda d: d.find_elements(By.ID, "policies"))
    _shot(browser, "new-registration-pick")
    browser.find_element(By.LINK_TEXT, GB).click()
    _until(browser, lambda d: d.find_elements(By.ID, "registration-form"))
    assert browser.find_element(By.ID, "policy-price").text.startswith("EUR")
    names = [
        e.get_attribute("name")
        for e in browser.find_elements(By.CSS_SELECTOR, "#registration-form [name^='$.']")
    ]
    assert names == [
        "$.companyDetails.companyName",
        "$.companyDetails.companyNumber",
        "$.companyDetails.website",
        "$.contactPerson.firstName",
        "$.contactPerson.lastName",
        "$.contactPerson.email",
        "$.contactPerson.phoneNumber",
        "$.senderIds[0].senderId",
        "$.senderIds[0].useCase",
        "$.senderIds[0].useCaseDescription",
    ]
    assert Select(browser.find_element(By.NAME, "$.senderIds[0].useCase")).options[1].text == "OTP"
    _shot(browser, "new-registration-form")

    # Wrong values: each error beside its field, the same the API's check answers; nothing sent.
    wrong = {
        **COMPANY_AND_CONTACT,
        "$.contactPerson.phoneNumber": "0",
        "$.senderIds[0].senderId": "A!",
        "$.senderIds[0].useCase": "OTHER",
    }
    _fill(browser, wrong)
    browser.find_element(By.ID, "submit-registration").click()
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".field-error"))
    checked = api.post(
        "/v1/registrations?validateOnly=true",
        json={
            "policyId": GB,
            "registrationType": "ALPHANUMERIC_SENDER_ID",
            "companyDetails": {"companyName": "Acme Ltd", "companyNumber": "AB123456"},
            "contactPerson": {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "email": "ada@example.com",
                "phoneNumber": "0",
            },
            "senderIds": [{"senderId": "A!", "useCase": "OTHER"}],
        },
    ).json()
    assert _errors(browser) == {e["path"]: e["message"] for e in checked["errors"]}
    assert _errors(browser)["$.contactPerson.phoneNumber"] == (
        "The number needs to start with country code. For example +1"
    )
    # What was typed stays in the form.
    assert browser.find_element(By.NAME, "$.companyDetails.companyName").get_attribute("value") == (
        "Acme Ltd"
    )
    _shot(browser, "new-registration-errors")
    assert api.get("/v1/registrations").json()["items"] == []

    # Fixed: submitted, kept from Sinch's answer, audited as the console's user.
    _fill(
        browser,
        {
            "$.contactPerson.phoneNumber": "+442012345678",
            "$.senderIds[0].senderId": "ACME",
            "$.senderIds[0].useCase": "OTP",
            "tags": "#console",
        },
    )
    browser.find_element(By.ID, "submit-registration").click()
    _until(browser, lambda d: d.find_elements(By.ID, "done"))
    [kept] = api.get("/v1/registrations").json()["items"]
    registration_id = kept["id"]
    assert registration_id in browser.current_url
    assert (kept["status"], kept["senderIds"], kept["tags"]) == ("IN_QUEUE", ["ACME"], ["#console"])
    assert browser.find_element(By.ID, "status").text == "IN_QUEUE"
    audit = api.get("/v1/audit", params={"action": "registration.submit"}).json()["items"]
    assert [(e["actor"], e["target"]) for e in audit] == [("env:1", registration_id)]
    assert "first document kept" in browser.find_element(By.ID, "versions").text
    _shot(browser, "new-registration-submitted")

    # Sinch asks for a change: the page offers the form, prefilled from Sinch's document.
    async def ask() -> None:
        async with SimulatorControl(stack.sim.base_url) as sim:
            await sim.transition(registration_id, "PENDING", comment=ASKED)

    asyncio.run(ask())
    assert api.post(f"/v1/registrations/{registration_id}/refresh").json()["status"] == "PENDING"
    browser.get(f"{base}/console/registrations/{registration_id}")
    _until(browser, lambda d: d.find_elements(By.ID, "fix-form"))
    assert browser.find_element(By.ID, "fix-asked").text == ASKED
    prefilled = {"$.senderIds[0].senderId": "ACME", **COMPANY_AND_CONTACT}
    for name, value in prefilled.items():
        assert browser.find_element(By.NAME, name).get_attribute("value") == value, name
    assert (
        Select(browser.find_element(By.NAME, "$.senderIds[0].useCase")).first_selected_option.text
        == "OTP"
    )
    _shot(browser, "registration-pending-form")

    # Sinch refuses the first try: its refusal stands above the form, what was typed stays.
    async def refuse_once() -> None:
        async with SimulatorControl(stack.sim.base_url) as sim:
            await sim.inject_fault("status", status=400, count=1)

    asyncio.run(refuse_once())
    _fill(browser, {"$.senderIds[0].useCase": "TRANSACTIONAL"})
    browser.find_element(By.ID, "send-update").click()
    problem = _until(browser, lambda d: d.find_element(By.ID, "form-problem")).text
    assert problem.startswith("Sinch refused it (400")
    use_case = Select(browser.find_element(By.NAME, "$.senderIds[0].useCase"))
    assert use_case.first_selected_option.text == "TRANSACTIONAL"
    assert browser.find_element(By.ID, "status").text == "PENDING"
    _shot(browser, "registration-update-refused")

    # Sent again: the checked update goes to Sinch, which puts it back in the queue; the page
    # shows the versions' differences.
    browser.find_element(By.ID, "send-update").click()
    _until(browser, lambda d: d.find_elements(By.ID, "done"))
    assert browser.find_element(By.ID, "status").text == "IN_QUEUE"
    newest = browser.find_element(By.ID, "version-3")
    assert "by submitted" in newest.text
    rows = {
        r.find_element(By.TAG_NAME, "code").text: r.text
        for r in newest.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert '"OTP" "TRANSACTIONAL"' in rows["$.requestDetails[0].senderIdDetails[0].useCase"]
    assert '"PENDING" "IN_QUEUE"' in rows["$.status"]
    versions = api.get(f"/v1/registrations/{registration_id}/versions").json()["items"]
    assert [v["source"] for v in versions] == ["submitted", "refetch", "submitted"]
    audit = api.get("/v1/audit", params={"action": "registration.update"}).json()["items"]
    assert [(e["actor"], e["target"]) for e in audit] == [("env:1", registration_id)]
    _shot(browser, "registration-versions")


def test_a_read_token_gets_no_form_and_a_forged_post_sends_nothing(stack: Stack) -> None:
    base = stack.api_url
    token = asyncio.run(make_token(stack.settings, "forms-reader", Scope.READ))
    client = _signed_in_client(base, token)
    try:
        assert 'id="new-registration"' not in client.get("/console/registrations").text
        refused = client.get("/console/new-registration", params={"policy": GB})
        assert refused.status_code == 403
        csrf = client.get("/console").text.split('name="csrf" value="')[1].split('"')[0]
        posted = client.post(
            "/console/new-registration",
            data={"csrf": csrf, "policy": GB, "$.senderIds[0].senderId": "READER"},
        )
        assert posted.status_code == 403 and "may look, not act" in posted.text
    finally:
        client.close()
    # A writer's session without the CSRF token is refused too.
    writer = _signed_in_client(base, API_TOKEN)
    try:
        forged = writer.post("/console/new-registration", data={"policy": GB})
        assert forged.status_code == 403 and "CSRF" in forged.text
        # A PENDING registration whose policy the catalog lacks: no form, and an answer posted
        # anyway is refused before Sinch sees it.
        unlisted = asyncio.run(_pending_under("sim-policy-unlisted", stack))
        api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
        assert api.post(f"/v1/registrations/{unlisted}/refresh").json()["status"] == "PENDING"
        shown = writer.get(f"/console/registrations/{unlisted}").text
        assert 'id="fix-no-policy"' in shown and 'id="fix-form"' not in shown
        csrf = shown.split('name="csrf" value="')[1].split('"')[0]
        answered = writer.post(
            f"/console/registrations/{unlisted}/update",
            data={"csrf": csrf, "$.senderIds[0].senderId": "OTHER"},
        )
        assert answered.status_code == 404 and "Nothing was sent" in answered.text
    finally:
        writer.close()
    assert all(r["senderIds"] != ["READER"] for r in api.get("/v1/registrations").json()["items"])


def test_a_disabled_policy_is_refused_above_the_form_with_sinchs_disclaimer(
    stack: Stack, browser: WebDriver
) -> None:
    base = stack.api_url
    _signed_in(browser, base)
    browser.get(f"{base}/console/new-registration?policy=sim-policy-fr-alphanumeric")
    disclaimer = _until(browser, lambda d: d.find_element(By.ID, "disclaimer")).text
    assert disclaimer

    browser.find_element(By.ID, "submit-registration").click()

    errors = _until(browser, lambda d: d.find_element(By.ID, "form-errors")).text
    assert f"$.policyId: {disclaimer}" in errors
    assert "$.senderIds[0].senderId" in _errors(browser)  # the fields are still checked
    _shot(browser, "new-registration-disabled-policy")
