"""The operator console in a real browser (Debian's headless chromium, driven by Selenium) against
real API and worker processes, the simulator as Sinch, PostgreSQL and a private Redis, all on
loopback. Every host but loopback is unreachable to the browser.

Screenshots of each page land in `var/screenshots/console/` (kept after the run, like the /docs
test's; the README's is one of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import insert

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.models import PROJECTS
from app.forecasts import service as forecasts_service
from app.tokens.principal import Scope
from devtools.simulator import SimulatorControl
from tests.api.conftest import put_registration, served_in_thread
from tests.api.test_time_in_state import seeded as seeded_history
from tests.support.projects import settings_project
from tests.support.stack import API_TOKEN, CALLBACK_PATH, Stack, drain_all, running_stack
from tests.support.tokens import make_token

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_SECONDS = 30
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SENDER_ID = "CONSOLEDEMO"

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """Debian's Chromium, headless, resolving no name but loopback; quit at the end."""
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1400",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT_SECONDS)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, "console") as started:
        started.start_api_and_worker()
        yield started


def _until(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def _shot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _sign_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(f"{base}/console")
    _until(driver, lambda d: d.find_elements(By.ID, "token"))
    _shot(driver, "sign-in")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


async def _seed(stack: Stack) -> dict[str, Any]:
    """Three registrations through signed callbacks the simulator delivers (one waits on the
    customer), and one event that fails: Sinch refuses the GET that checks it (403)."""
    callback_url = stack.api_url + CALLBACK_PATH
    async with SimulatorControl(stack.sim.base_url) as sim:
        waiting = await sim.create_registration(
            sender_id=SENDER_ID,
            callback_url=callback_url,
            lifecycle=["IN_PROGRESS", "PENDING"],
        )
        for _ in range(2):
            await sim.create_registration(
                callback_url=callback_url, lifecycle=["IN_PROGRESS", "APPROVED"]
            )
        await sim.deliver()
        await drain_all(stack)
        failing = await sim.create_registration(
            callback_url=callback_url, lifecycle=["IN_PROGRESS"]
        )
        await sim.inject_fault("status", status=403, count=1)
        # Only its newest event: the service does not know the registration, so checks it.
        event = (await sim.events(failing["id"]))[-1]
        await sim.deliver(event_ids=[event["eventId"]])
        await drain_all(stack)
    return {"waiting": waiting["id"], "failing": failing["id"]}


def test_console_shows_the_api_numbers_finds_a_registration_and_replays_a_failed_event(
    stack: Stack, browser: WebDriver
) -> None:
    seeded = asyncio.run(_seed(stack))
    base = stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    [failed] = api.get("/v1/events", params={"state": "failed"}).json()["items"]
    assert failed["registrationId"] == seeded["failing"]

    # Sign in; the overview shows exactly what the API answers.
    _sign_in(browser, base, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.ID, "events-by-state"))
    counts = api.get("/v1/counts").json()
    shown_states = {
        e.get_attribute("data-state"): int(e.text)
        for e in browser.find_elements(By.CSS_SELECTOR, "td[data-state]")
    }
    assert shown_states == counts["eventsByState"]
    assert shown_states["failed"] == 1
    shown_statuses = {
        e.get_attribute("data-status"): int(e.text)
        for e in browser.find_elements(By.CSS_SELECTOR, "td[data-status]")
    }
    assert shown_statuses == counts["registrationsByStatus"] == {"APPROVED": 2, "PENDING": 1}
    received = sum(hour["callbacksKept"] for hour in counts["hours"])
    assert browser.find_element(By.ID, "received-24h").text == str(received)
    waiting_rows = browser.find_elements(By.CSS_SELECTOR, "#waiting tbody tr")
    assert [row.find_element(By.TAG_NAME, "a").text for row in waiting_rows] == [seeded["waiting"]]
    assert browser.find_element(By.CSS_SELECTOR, "#failed tbody tr").text.startswith(
        str(failed["id"])
    )
    # Nothing came from another host: only the console's own stylesheet.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded == [f"{base}/console/static/console.css"], loaded
    _shot(browser, "overview")

    # Find the registration by its sender ID, open it: its timeline is its history.
    browser.find_element(By.LINK_TEXT, "Registrations").click()
    search = _until(browser, lambda d: d.find_element(By.NAME, "q"))
    _shot(browser, "registrations")
    search.send_keys(SENDER_ID)
    search.submit()
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#registrations tbody tr a"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#registrations tbody tr")
    listed = api.get("/v1/registrations", params={"senderId": SENDER_ID}).json()["items"]
    assert (
        [row.find_element(By.TAG_NAME, "a").text for row in rows]
        == [r["id"] for r in listed]
        == [seeded["waiting"]]
    )
    _shot(browser, "registrations-search")
    rows[0].find_element(By.TAG_NAME, "a").click()
    _until(browser, lambda d: d.find_elements(By.ID, "timeline"))
    history = api.get(f"/v1/registrations/{seeded['waiting']}/history").json()["items"]
    steps = browser.find_elements(By.CSS_SELECTOR, "#timeline li")
    assert len(steps) == len(history) >= 1
    for step, item in zip(steps, history, strict=True):
        assert item["toStatus"] in step.text and item["source"] in step.text
    assert browser.find_element(By.CSS_SELECTOR, "details summary")  # Sinch's document, folded
    _shot(browser, "registration")

    # The failed event: open it, replay it by clicking, and see it processed.
    browser.get(f"{base}/console/events?state=failed")
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr a"))
    _shot(browser, "events-failed")
    browser.find_element(By.LINK_TEXT, str(failed["id"])).click()
    _until(browser, lambda d: d.find_elements(By.ID, "replay"))
    assert browser.find_element(By.ID, "event-state").text == "failed"
    assert '"eventId"' in browser.find_element(By.ID, "body").text  # pretty-printed JSON
    _shot(browser, "event-failed")
    browser.find_element(By.ID, "replay").click()

    def processed(driver: WebDriver) -> bool:
        driver.refresh()
        return driver.find_element(By.ID, "event-state").text == "processed"

    _until(browser, processed)
    assert api.get(f"/v1/events/{failed['id']}").json()["state"] == "processed"
    _shot(browser, "event-replayed")
    # The click is in the audit trail, under the token that signed in (env:1), as through the API.
    audit = api.get("/v1/audit", params={"action": "event.replay"}).json()["items"]
    assert [(e["actor"], e["target"]) for e in audit] == [("env:1", str(failed["id"]))]
    browser.get(f"{base}/console/audit")
    _until(browser, lambda d: d.find_elements(By.ID, "audit"))
    row = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr").text
    assert "env:1" in row and "event.replay" in row and str(failed["id"]) in row
    _shot(browser, "audit")

    # Replay all failed asks first, saying how many (none left now).
    browser.get(f"{base}/console/events/replay-failed")
    assert browser.find_element(By.ID, "failed-count").text.startswith("0 events")
    _shot(browser, "replay-failed")
    browser.get(f"{base}/console/subscriptions")
    _until(browser, lambda d: d.find_elements(By.ID, "subscriptions"))
    _shot(browser, "subscriptions")

    # A POST without the session's CSRF token is refused, whoever's cookie it carries.
    cookie = browser.get_cookie("console_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert API_TOKEN not in cookie["value"]
    forged = httpx.post(
        f"{base}/console/events/{failed['id']}/replay",
        cookies={"console_session": cookie["value"]},
        data={},
        timeout=30,
    )
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    assert api.get(f"/v1/events/{failed['id']}").json()["state"] == "processed"
    headers = forged.headers
    assert headers["x-frame-options"] == "DENY"
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]

    # Signing out ends the session: its cookie opens nothing any more.
    browser.get(f"{base}/console")
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()
    _until(browser, lambda d: d.find_elements(By.ID, "token"))
    after = httpx.get(f"{base}/console", cookies={"console_session": cookie["value"]}, timeout=30)
    assert after.status_code == 303 and after.headers["location"] == "/console/sign-in"


def test_an_untouched_filter_form_lists_every_registration(
    stack: Stack, browser: WebDriver
) -> None:
    asyncio.run(_seed(stack))
    api = httpx.Client(base_url=stack.api_url, headers=AUTH, timeout=30)
    every = [r["id"] for r in api.get("/v1/registrations").json()["items"]]
    assert len(every) == 3  # the fourth was refused by Sinch, so never kept
    _sign_in(browser, stack.api_url, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.ID, "events-by-state"))
    browser.get(f"{stack.api_url}/console/registrations")
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.filters"))
    # Every field of the form is empty, as nothing was chosen: no `None` in any.
    for field in browser.find_elements(By.CSS_SELECTOR, "form.filters input"):
        assert field.get_attribute("value") == "", field.get_attribute("name")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    _until(browser, lambda d: "sender_id=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#registrations tbody tr a")
    assert sorted(row.text for row in rows) == sorted(every)
    _shot(browser, "registrations-filtered")


def test_wrong_token_is_refused_and_not_echoed(stack: Stack, browser: WebDriver) -> None:
    _sign_in(browser, stack.api_url, "not-a-token-0123456789")
    error = _until(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".error"))
    assert error.text == "That token is not accepted."
    assert "not-a-token-0123456789" not in browser.page_source
    assert browser.get_cookie("console_session") is None


def test_a_read_token_looks_but_may_not_act(stack: Stack, browser: WebDriver) -> None:
    token = asyncio.run(make_token(stack.settings, "console-reader", Scope.READ))
    seeded = asyncio.run(_seed(stack))
    api = httpx.Client(base_url=stack.api_url, headers=AUTH, timeout=30)
    [failed] = api.get("/v1/events", params={"state": "failed"}).json()["items"]
    _sign_in(browser, stack.api_url, token)
    _until(browser, lambda d: d.find_elements(By.ID, "events-by-state"))
    assert browser.find_element(By.CSS_SELECTOR, ".scope").text == "read"
    browser.get(f"{stack.api_url}/console/events/{failed['id']}")
    _until(browser, lambda d: d.find_elements(By.ID, "event-state"))
    assert not browser.find_elements(By.ID, "replay")  # no button to press
    _shot(browser, "event-read-scope")
    # And the action itself, posted with the session's own CSRF token, is refused.
    cookie = browser.get_cookie("console_session")
    assert cookie is not None
    with httpx.Client(
        base_url=stack.api_url, cookies={"console_session": cookie["value"]}, timeout=30
    ) as client:
        page = client.get(f"/console/registrations/{seeded['waiting']}").text
        assert 'id="refresh"' not in page
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        refused = client.post(f"/console/events/{failed['id']}/replay", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "may look, not act" in refused.text
    assert not browser.find_elements(By.LINK_TEXT, "Audit trail")  # write scope only, as the API
    assert api.get(f"/v1/events/{failed['id']}").json()["state"] == "failed"


def _signed_in_client(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/console/sign-in")
    marker = form.text.split('name="marker" value="')[1].split('"')[0]
    answer = client.post("/console/sign-in", data={"token": token, "marker": marker})
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    return client


def test_a_token_taken_away_ends_its_sessions(tmp_path: Path) -> None:
    """The session names its principal, not its token: once the token is gone (here removed from
    INTERNAL_API_TOKENS and the API restarted; issue 15's `token revoke` goes the same way through
    `principal_named`), the next request of its session is sent to sign in."""
    second = "second-console-token-0123456789"
    with running_stack(
        tmp_path, "console_revoke", INTERNAL_API_TOKENS=f"{API_TOKEN},{second}"
    ) as stack:
        stack.start_api()
        client = _signed_in_client(stack.api_url, second)
        try:
            assert client.get("/console").status_code == 200
            cookie = client.cookies["console_session"]
        finally:
            client.close()
        assert stack.api is not None
        stack.api.stop()
        stack.env["INTERNAL_API_TOKENS"] = API_TOKEN
        stack.start_api()
        gone = httpx.get(
            f"{stack.api_url}/console", cookies={"console_session": cookie}, timeout=30
        )
        assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"
        other = _signed_in_client(stack.api_url, API_TOKEN)  # the other token still works
        try:
            assert other.get("/console").status_code == 200
        finally:
            other.close()


# --- the console as an operator reads it (issue 24, item 12) -------------------------------------

TONE_BACKGROUNDS = {
    "good": "rgba(226, 243, 230, 1)",
    "bad": "rgba(251, 228, 226, 1)",
    "waiting": "rgba(255, 241, 204, 1)",
    "busy": "rgba(227, 237, 255, 1)",
    "neutral": "rgba(236, 239, 243, 1)",
}
EXPECTED_TONES = {
    "APPROVED": "good",
    "REJECTED": "bad",
    "PENDING": "waiting",
    "IN_PROGRESS": "busy",
    "processed": "good",
    "failed": "bad",
}
REJECTION = "Sender ID `ACME` is a registered trademark of another company"
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
CONSOLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@contextlib.contextmanager
def _stack_delivering(folder: Path, name: str, **env: str) -> Iterator[Stack]:
    """A stack whose deliveries may reach loopback, with its delivery worker."""
    with running_stack(
        folder,
        name,
        SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1",
        SUBSCRIPTION_ALLOWED_NETWORKS="127.0.0.0/8",
        **env,
    ) as started:
        started.start_api_and_worker(delivery_worker=True)
        yield started


@pytest.fixture
def busy_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose deliveries may reach loopback, and give up after two quick retries."""
    with _stack_delivering(tmp_path, "console_busy", DELIVERY_RETRY_SECONDS="0.5,0.5") as started:
        yield started


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _subscribe(api: httpx.Client) -> dict[str, str]:
    """A subscription whose receiver is down (its deliveries fail) and one disabled."""
    dead = api.post(
        "/v1/subscriptions",
        json={"url": f"http://127.0.0.1:{_closed_port()}/hook", "description": "billing"},
    )
    assert dead.status_code == 201, dead.text
    off = api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/off"}).json()
    assert api.patch(f"/v1/subscriptions/{off['id']}", json={"enabled": False}).is_success
    return {"failing": dead.json()["id"], "disabled": off["id"]}


async def _seed_busy(stack: Stack) -> dict[str, str]:
    """Registrations in several states: one rejected with a reason in backticks, one waiting on
    the customer, two approved, one in progress."""
    callback_url = stack.api_url + CALLBACK_PATH
    seeded: dict[str, str] = {}
    async with SimulatorControl(stack.sim.base_url) as sim:
        for name, lifecycle in [
            ("approved", ["IN_PROGRESS", "APPROVED"]),
            ("pending", ["IN_PROGRESS", "PENDING"]),
            ("in_progress", ["IN_PROGRESS"]),
            ("approved_2", ["IN_PROGRESS", "APPROVED"]),
        ]:
            made = await sim.create_registration(
                callback_url=callback_url,
                lifecycle=lifecycle,
                policy_id="sim-policy-se-alphanumeric-multi",
            )
            seeded[name] = made["id"]
            await sim.deliver()
            await drain_all(stack)
        rejected = await sim.create_registration(
            callback_url=callback_url, lifecycle=["IN_PROGRESS"]
        )
        await sim.transition(rejected["id"], "REJECTED", comment=REJECTION)
        seeded["rejected"] = rejected["id"]
        await sim.deliver()
        await drain_all(stack)
    return seeded


def _page_text(driver: WebDriver) -> str:
    text: str = driver.find_element(By.TAG_NAME, "main").text
    assert "`" not in text, "raw Markdown backticks on the page"
    assert not ISO_TIME.search(text), "a time not in the console's one format"
    return text


def _badge_tones(driver: WebDriver) -> dict[str, str]:
    """Each badge's text and the tone its colour says (every badge has text: never colour
    alone)."""
    by_colour = {colour: tone for tone, colour in TONE_BACKGROUNDS.items()}
    tones: dict[str, str] = {}
    for badge in driver.find_elements(By.CSS_SELECTOR, "main .status, main .state"):
        assert badge.text.strip(), "a badge without text"
        tones[badge.text] = by_colour[badge.value_of_css_property("background-color")]
    return tones


def test_the_console_reads_as_an_operator_needs(busy_stack: Stack, browser: WebDriver) -> None:
    base = busy_stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    seeded = _subscribe(api) | asyncio.run(_seed_busy(busy_stack))

    def deliveries_failing() -> bool:
        listed = api.get(f"/v1/subscriptions/{seeded['failing']}/deliveries").json()["items"]
        return bool(listed) and all(d["attempts"] > 0 for d in listed)

    WebDriverWait(browser, WAIT_SECONDS).until(lambda _: deliveries_failing())
    _sign_in(browser, base, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.ID, "failing-subscriptions"))

    # The overview lists the failing and the disabled subscription, each a link to its page.
    failing = browser.find_element(By.ID, "failing-subscriptions")
    links = [a.text for a in failing.find_elements(By.CSS_SELECTOR, "tbody a")]
    assert sorted(links) == sorted([seeded["failing"], seeded["disabled"]])
    assert "disabled" in failing.text
    tones = _badge_tones(browser)
    for status in ("APPROVED", "REJECTED", "PENDING", "IN_PROGRESS", "processed"):
        assert tones[status] == EXPECTED_TONES[status], (status, tones)
    _page_text(browser)
    _shot(browser, "overview-operator")
    browser.find_element(By.LINK_TEXT, seeded["failing"]).click()
    _until(browser, lambda d: d.find_elements(By.ID, "deliveries"))
    assert "pending, retrying" in _badge_tones(browser)  # its state, as a badge
    _page_text(browser)
    _shot(browser, "subscription-failing")

    # Registrations: newest change first, by default.
    browser.get(f"{base}/console/registrations")
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#registrations tbody tr a"))
    shown = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#registrations tbody tr a")]
    every = api.get("/v1/registrations").json()["items"]
    newest_first = sorted(every, key=lambda r: (r["statusChangedAt"], r["id"]), reverse=True)
    assert shown == [r["id"] for r in newest_first]
    _page_text(browser)
    _shot(browser, "registrations-newest-first")

    # An approved registration: price as money; no message explains APPROVED, so none is shown
    # (not the submission's "Registration submitted").
    browser.get(f"{base}/console/registrations/{seeded['approved']}")
    _until(browser, lambda d: d.find_elements(By.ID, "price"))
    assert browser.find_element(By.ID, "price").text == "SEK 250.00 one-time, SEK 95.00 monthly"
    reason = browser.find_element(By.ID, "reason-message").text
    assert "Registration submitted" not in reason
    assert reason.startswith("Nothing explains APPROVED yet")
    assert _badge_tones(browser)["APPROVED"] == "good"
    assert CONSOLE_TIME.search(_page_text(browser))
    _shot(browser, "registration-approved")

    # A rejected one: its rejection, without Markdown backticks, in red.
    browser.get(f"{base}/console/registrations/{seeded['rejected']}")
    _until(browser, lambda d: d.find_elements(By.ID, "reason-message"))
    assert browser.find_element(By.ID, "reason-message").text == REJECTION.replace("`", "")
    assert _badge_tones(browser)["REJECTED"] == "bad"
    _page_text(browser)
    _shot(browser, "registration-rejected")

    # The audit trail's times are in the same format as every other page's.
    browser.get(f"{base}/console/audit")
    _until(browser, lambda d: d.find_elements(By.ID, "audit"))
    assert CONSOLE_TIME.search(_page_text(browser))


@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, "aging") as started:
        started.start_api()
        yield started


async def _seed_history(stack: Stack) -> None:
    """The forecasts tests' history (25 decided GB registrations, one overdue, one waiting on the
    customer, markets with too few decisions), then the forecasts cron's work."""
    engine = create_engine(stack.settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        await seeded_history(sessionmaker)
    finally:
        await engine.dispose()


def test_aging_shows_overdue_first_against_the_markets_figures(
    api_only: Stack, browser: WebDriver
) -> None:
    asyncio.run(_seed_history(api_only))
    base = api_only.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    overdue = [
        r["id"] for r in api.get("/v1/registrations", params={"overdue": "true"}).json()["items"]
    ]
    assert overdue == ["gb-late"]

    _sign_in(browser, base, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.ID, "events-by-state"))
    browser.find_element(By.LINK_TEXT, "Aging").click()
    _until(browser, lambda d: d.find_elements(By.ID, "aging-chart"))
    # The history's figures were computed as of months ago: the page says when, and that the
    # cron has stopped running (no delivery worker runs in this stack).
    computed = browser.find_element(By.ID, "figures-computed").text
    assert computed.startswith("Figures computed 2026-06-15 12:00:00 UTC (")
    stale = browser.find_element(By.ID, "figures-stale").text
    assert "Is a delivery worker (arq app.worker.DeliveryWorkerSettings) running?" in stale
    _shot(browser, "aging")
    assert browser.find_element(By.ID, "overdue-count").text == "1 overdue"
    rows = browser.find_elements(By.CSS_SELECTOR, "#open tbody tr")
    # Overdue first, then the longest waiting on Sinch; decided ones are not listed.
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[-1].text == "overdue"
    assert first[1].text == "GB"
    assert first[3].text == "40.0 d"
    assert len(rows) == 4  # gb-late, gb-pending, fr-1, de-1
    assert all(row.find_elements(By.TAG_NAME, "td")[-1].text == "" for row in rows[1:])
    # One bar per open registration, the overdue one in the alarm colour, and the GB ones with
    # their market's p50 and p85 marks (FR and DE have too few decisions: no marks).
    assert len(browser.find_elements(By.CSS_SELECTOR, "#aging-chart rect.bar")) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#aging-chart rect.bar.overdue")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#aging-chart line.mark.p85")) == 2 + 1
    # The time-in-state table shows what the API answers.
    figures = api.get("/v1/stats/time-in-state", params={"marketCode": "GB"}).json()["items"]
    shown = {
        tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:3]): row
        for row in browser.find_elements(By.CSS_SELECTOR, "#time-in-state tbody tr")
    }
    for item in figures:
        row = shown[(item["marketCode"], item["registrationType"], item["status"])]
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        assert cells[6:] == [str(item["samples"]), str(item["open"])]
    decisions = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row
        for row in browser.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")
    }
    assert decisions["GB"].find_elements(By.TAG_NAME, "td")[4].text == "25"
    # The overdue one's page says so, with what its forecast stands on.
    rows[0].find_element(By.TAG_NAME, "a").click()
    forecast = _until(browser, lambda d: d.find_element(By.ID, "forecast"))
    assert forecast.text.startswith("-; history, n=25")
    assert forecast.text.endswith("overdue")
    # Once the cron has run again, the warning is gone.
    asyncio.run(_refresh_forecasts_now(api_only))
    browser.get(f"{base}/console/aging")
    computed = _until(browser, lambda d: d.find_element(By.ID, "figures-computed"))
    assert computed.text.startswith("Figures computed ")
    assert "2026-06-15" not in computed.text  # the new run's time, not the history's
    assert not browser.find_elements(By.ID, "figures-stale")


async def _refresh_forecasts_now(stack: Stack) -> None:
    engine = create_engine(stack.settings)
    try:
        await forecasts_service.refresh(create_sessionmaker(engine), now=utcnow())
    finally:
        await engine.dispose()


@pytest.fixture
def delivering_stack(tmp_path: Path) -> Iterator[Stack]:
    """`busy_stack`'s, and a subscription failing for 0.06 s is flagged
    (SUBSCRIPTION_FAILING_ALERT_MINUTES)."""
    with _stack_delivering(
        tmp_path,
        "console_subs",
        SUBSCRIPTION_FAILING_ALERT_MINUTES="0.001",
        DELIVERY_RETRY_SECONDS="0.2",
        DELIVERY_TIMEOUT_SECONDS="2",
    ) as started:
        yield started


def test_subscriptions_are_managed_from_their_pages(
    delivering_stack: Stack, browser: WebDriver
) -> None:
    stack = delivering_stack
    base = stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    answers = iter([(503, "busy, try later")])

    async def hook(request: Request) -> Response:
        await request.body()
        status, text = next(answers, (200, '{"received": true}'))
        return Response(status_code=status, content=text, media_type="application/json")

    receiver = FastAPI()
    receiver.add_api_route("/hook", hook, methods=["POST"])
    with served_in_thread(receiver) as receiver_url:
        _sign_in(browser, base, API_TOKEN)
        _until(browser, lambda d: d.find_elements(By.ID, "events-by-state"))

        # Create it from the list: the secret is shown once.
        browser.get(f"{base}/console/subscriptions")
        browser.find_element(By.CSS_SELECTOR, "#new-subscription summary").click()
        form = browser.find_element(By.CSS_SELECTOR, "#new-subscription form")
        form.find_element(By.NAME, "url").send_keys(f"{receiver_url}/hook")
        form.find_element(By.NAME, "description").send_keys("billing")
        _shot(browser, "subscription-new")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        secret = _until(browser, lambda d: d.find_element(By.ID, "secret")).text
        assert secret.startswith("whsec_")
        _shot(browser, "subscription-created")
        [made] = api.get("/v1/subscriptions").json()["items"]
        page = f"{base}/console/subscriptions/{made['id']}"

        # A change: its first attempt answered 503, the retry 200; both in the attempts log.
        asyncio.run(_seed(stack))

        def attempts_shown(driver: WebDriver) -> bool:
            driver.get(page)
            rows = driver.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
            return len(rows) >= 2 and "503" in driver.find_element(By.ID, "attempts").text

        _until(browser, attempts_shown)
        first = browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")[-1]
        first.find_element(By.TAG_NAME, "summary").click()
        body = first.find_element(By.CSS_SELECTOR, "pre.response-body").text
        assert body == "busy, try later"
        headers = first.find_element(By.CSS_SELECTOR, "pre.headers").text
        assert "webhook-signature: v1," in headers and secret not in browser.page_source
        assert browser.find_elements(By.CSS_SELECTOR, "#health svg.chart")
        _shot(browser, "subscription")

        # Send a test event: the outcome at once.
        browser.find_element(By.ID, "send-test").click()
        _until(browser, lambda d: d.find_elements(By.ID, "ping"))
        assert browser.find_element(By.ID, "ping-status").text == "200"
        _shot(browser, "subscription-test-event")

        # Edit the description; disable; enable with the backlog.
        browser.get(page)
        browser.find_element(By.CSS_SELECTOR, "#edit summary").click()
        described = browser.find_element(By.CSS_SELECTOR, "#edit input[name=description]")
        described.clear()
        described.send_keys("billing and audit")
        browser.find_element(By.ID, "save").click()
        assert _until(browser, lambda d: d.find_element(By.ID, "done")).text == "Saved."
        assert api.get(f"/v1/subscriptions/{made['id']}").json()["description"] == (
            "billing and audit"
        )
        browser.find_element(By.ID, "disable").click()
        _until(browser, lambda d: d.find_elements(By.ID, "enable"))
        _shot(browser, "subscription-disabled")
        browser.find_element(By.ID, "enable").click()
        _until(browser, lambda d: "Enabled again with its backlog" in d.page_source)
        assert api.get(f"/v1/subscriptions/{made['id']}").json()["enabled"] is True

        # Retry the failed since a time: the count first.
        browser.get(page)
        browser.find_element(By.ID, "retry-failed").click()
        count = _until(browser, lambda d: d.find_element(By.ID, "failed-count")).text
        assert count.startswith("0 deliveries")
        _shot(browser, "subscription-retry-failed")

        # Rotate the secret: a new one, shown once.
        browser.get(page)
        browser.find_element(By.ID, "rotate").click()
        rotated = _until(browser, lambda d: d.find_element(By.ID, "secret")).text
        assert rotated.startswith("whsec_") and rotated != secret
        _shot(browser, "subscription-rotated")

        # A receiver that is down: flagged on the overview once failing long enough.
        dead = api.post(
            "/v1/subscriptions", json={"url": f"http://127.0.0.1:{_closed_port()}/hook"}
        ).json()
        asyncio.run(_seed(stack))

        def flagged(driver: WebDriver) -> bool:
            driver.get(f"{base}/console")
            return bool(driver.find_elements(By.CSS_SELECTOR, "#failing-subscriptions .flagged"))

        _until(browser, flagged)
        assert dead["id"] in browser.find_element(By.ID, "failing-subscriptions").text
        _shot(browser, "overview-failing-subscription")

        # Delete, the id typed to confirm.
        browser.get(page)
        browser.find_element(By.CSS_SELECTOR, "#delete summary").click()
        browser.find_element(By.CSS_SELECTOR, "#delete input[name=confirm]").send_keys(made["id"])
        browser.find_element(By.ID, "confirm-delete").click()
        _until(browser, lambda d: "is deleted" in d.page_source)
        assert api.get(f"/v1/subscriptions/{made['id']}").status_code == 404


PROJECT_B = "brand-b"


async def _seed_two_projects(stack: Stack) -> str:
    """Registrations of the settings' project and of a second one, through the service's writer
    (apply_snapshot with the project); answers the settings' project's id."""
    engine = create_engine(stack.settings)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions.begin() as session:
            project_a = await settings_project(session)
            now = utcnow()
            await session.execute(
                insert(PROJECTS).values(
                    id=PROJECT_B, name="Brand B", created_at=now, updated_at=now
                )
            )
        await put_registration(sessions, "reg-of-a", project_id=project_a)
        await put_registration(sessions, "reg-of-b", "APPROVED", project_id=PROJECT_B)
    finally:
        await engine.dispose()
    return project_a


def _listed(driver: WebDriver) -> list[tuple[str, str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#registrations tbody tr")
    return [
        (cells[0].text, cells[1].text)
        for cells in (row.find_elements(By.TAG_NAME, "td") for row in rows)
        if len(cells) > 1
    ]


def test_the_project_switcher_and_a_token_limited_to_a_project(
    stack: Stack, browser: WebDriver
) -> None:
    project_a = asyncio.run(_seed_two_projects(stack))
    _sign_in(browser, stack.api_url, API_TOKEN)
    _until(browser, lambda d: d.find_elements(By.ID, "project"))
    browser.get(f"{stack.api_url}/console/registrations")
    _until(browser, lambda d: d.find_elements(By.ID, "registrations"))
    assert sorted(_listed(browser)) == [("reg-of-a", project_a), ("reg-of-b", PROJECT_B)]
    # Choose project B in the switcher: the list, and the link it leaves, carry it.
    Select(browser.find_element(By.ID, "project")).select_by_value(PROJECT_B)
    browser.find_element(By.CSS_SELECTOR, ".project-switch button").click()
    _until(browser, lambda d: f"project={PROJECT_B}" in d.current_url)
    assert _listed(browser) == [("reg-of-b", PROJECT_B)]
    _shot(browser, "registrations-project-b")
    events_link = browser.find_element(By.LINK_TEXT, "Events").get_attribute("href")
    assert events_link is not None and events_link.endswith(f"/console/events?project={PROJECT_B}")
    browser.delete_all_cookies()

    # A token limited to the settings' project: its rows only; B's registration is not found.
    token = asyncio.run(make_token(stack.settings, "only-a", Scope.READ, projects=[project_a]))
    _sign_in(browser, stack.api_url, token)
    _until(browser, lambda d: d.find_elements(By.ID, "project"))
    options = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#project option")
    ]
    assert options == ["", project_a]
    browser.get(f"{stack.api_url}/console/registrations")
    _until(browser, lambda d: d.find_elements(By.ID, "registrations"))
    assert _listed(browser) == [("reg-of-a", project_a)]
    _shot(browser, "registrations-limited-token")
    browser.get(f"{stack.api_url}/console/registrations?project={PROJECT_B}")
    _until(browser, lambda d: d.find_elements(By.ID, "registrations"))
    assert _listed(browser) == []
    browser.get(f"{stack.api_url}/console/registrations/reg-of-b")
    _until(browser, lambda d: "No registration with this id is known here." in d.page_source)
