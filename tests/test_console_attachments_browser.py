"""A registration's attachments in the console, in a real browser (issue 27): the policy's
attachments beside what Sinch lists as uploaded, an upload form per attachment that goes through
the API's checks and write (`check_attachment`, `attach`), and the download of an uploaded file.

What a user relies on: a registration Sinch holds in PENDING_ATTACHMENTS moves on once the file
is uploaded from its page; a file the policy would refuse is refused beside its form with the
reason, Sinch never asked; the file downloads back as sent; a read token sees and downloads but
gets no form, and a POST it forges is refused.

One stack (API process, simulator as Sinch, PostgreSQL, a private Redis; no worker) serves the
module. Screenshots land in `var/screenshots/console/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.console.session import SESSION_COOKIE
from app.tokens.principal import Scope
from devtools.simulator import SimulatorControl
from tests.support.stack import API_TOKEN, Stack
from tests.support.tokens import make_token
from tests.test_console_browser import AUTH, _shot, _signed_in_client, _until
from tests.test_console_registration_forms_browser import _signed_in, catalog_stack
from tests.test_console_registration_forms_browser import browser as browser  # the module's one

pytestmark = pytest.mark.slow

AU = "sim-policy-au-shortcode"
SAMPLES = "message-samples"
API_MAX_BODY_BYTES = 20_000
ATTACHMENT_MAX_BYTES = 200_000
PDF = b"%PDF-1.4\n% samples of the messages\n" + bytes(range(256)) * 200
"""Above `API_MAX_BODY_BYTES`: the console's upload takes the upload's cap, not every form's."""
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console-attachments")
    with catalog_stack(
        folder,
        "console_attachments",
        API_MAX_BODY_BYTES=str(API_MAX_BODY_BYTES),
        ATTACHMENT_MAX_BYTES=str(ATTACHMENT_MAX_BYTES),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    (folder / "samples.png").write_bytes(PNG)
    (folder / "samples.pdf").write_bytes(PDF)
    return {"png": folder / "samples.png", "pdf": folder / "samples.pdf"}


def _waiting(stack: Stack) -> str:
    """A registration Sinch holds in PENDING_ATTACHMENTS under the AU policy (its mandatory
    attachment: PDF only), kept here; answers its id."""

    async def create() -> str:
        async with SimulatorControl(stack.sim.base_url) as sim:
            created = await sim.create_registration(policy_id=AU, lifecycle=["PENDING_ATTACHMENTS"])
        return str(created["id"])

    registration_id = asyncio.run(create())
    with httpx.Client(base_url=stack.api_url, headers=AUTH, timeout=30) as api:
        kept = api.post(f"/v1/registrations/{registration_id}/refresh").json()
    assert kept["status"] == "PENDING_ATTACHMENTS"
    return registration_id


def _upload(browser: WebDriver, file: Path) -> None:
    row = browser.find_element(By.ID, f"attachment-{SAMPLES}")
    row.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(file))
    row.find_element(By.CSS_SELECTOR, "form.upload button").click()


def _attaches(api: httpx.Client, registration_id: str) -> list[str]:
    """The actors of the registration's audited uploads."""
    audit = api.get("/v1/audit", params={"action": "registration.attach"}).json()["items"]
    return [e["actor"] for e in audit if e["target"] == registration_id]


def test_an_upload_is_checked_then_sent_moves_the_registration_on_and_downloads_back(
    stack: Stack, browser: WebDriver, files: dict[str, Path]
) -> None:
    base = stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    registration_id = _waiting(stack)
    _signed_in(browser, base)
    browser.get(f"{base}/console/registrations/{registration_id}")
    row = _until(browser, lambda d: d.find_element(By.ID, f"attachment-{SAMPLES}"))
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0].startswith("Samples of the messages to be sent")
    assert cells[1:4] == ["yes", "application/pdf", "not uploaded"]
    _shot(browser, "attachments-waiting")

    # A PNG where the policy takes PDF only: refused beside the form, nothing sent.
    _upload(browser, files["png"])
    refusal = _until(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".refusal")).text
    assert refusal == "The file's type must be one of: application/pdf. Nothing was sent."
    assert browser.find_element(By.ID, "status").text == "PENDING_ATTACHMENTS"
    assert _attaches(api, registration_id) == []
    missing = api.get(f"/v1/registrations/{registration_id}/attachments/{SAMPLES}")
    assert missing.status_code == 404  # Sinch has no file
    _shot(browser, "attachments-refused")

    # The PDF (larger than any other form may post): sent, audited as the console's user, and
    # Sinch moves the registration on.
    _upload(browser, files["pdf"])
    _until(browser, lambda d: d.find_elements(By.ID, "done"))
    assert browser.find_element(By.ID, "status").text == "IN_QUEUE"
    assert not browser.find_elements(By.CSS_SELECTOR, ".refusal")
    uploaded = browser.find_element(By.CSS_SELECTOR, f"#attachment-{SAMPLES} .uploaded")
    assert uploaded.text.startswith("samples.pdf\nCOMPLETED")
    assert _attaches(api, registration_id) == ["env:1"]
    assert api.get(f"/v1/registrations/{registration_id}").json()["status"] == "IN_QUEUE"
    _shot(browser, "attachments-uploaded")

    # Downloaded back through the console, with the browser's session: the same bytes.
    link = uploaded.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    assert link is not None
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    with httpx.Client(cookies={SESSION_COOKIE: cookie["value"]}, timeout=30) as session:
        downloaded = session.get(link)
    assert downloaded.status_code == 200
    assert downloaded.content == PDF
    assert downloaded.headers["content-type"] == "application/pdf"
    assert downloaded.headers["content-disposition"].startswith("attachment")


def test_a_read_token_downloads_but_gets_no_form_and_a_forged_upload_sends_nothing(
    stack: Stack, browser: WebDriver
) -> None:
    base = stack.api_url
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    registration_id = _waiting(stack)
    page = f"/console/registrations/{registration_id}"
    upload = f"{page}/attachments/{SAMPLES}"
    token = asyncio.run(make_token(stack.settings, "attachments-reader", Scope.READ))
    reader = _signed_in_client(base, token)
    writer = _signed_in_client(base, API_TOKEN)
    try:
        shown = reader.get(page).text
        assert f'id="attachment-{SAMPLES}"' in shown and 'type="file"' not in shown
        csrf = shown.split('name="csrf" value="')[1].split('"')[0]
        forged = reader.post(
            upload, data={"csrf": csrf}, files={"file": ("a.pdf", PDF, "application/pdf")}
        )
        assert forged.status_code == 403 and "may look, not act" in forged.text
        # A writer's session, without the CSRF token.
        no_csrf = writer.post(upload, files={"file": ("a.pdf", PDF, "application/pdf")})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        # Above ATTACHMENT_MAX_BYTES: refused beside the form, nothing sent.
        csrf = writer.get(page).text.split('name="csrf" value="')[1].split('"')[0]
        big = b"%PDF" + bytes(ATTACHMENT_MAX_BYTES)
        too_big = writer.post(
            upload, data={"csrf": csrf}, files={"file": ("big.pdf", big, "application/pdf")}
        )
        assert too_big.status_code == 413
        assert f"exceeds {ATTACHMENT_MAX_BYTES} bytes" in too_big.text
        # An attachment the policy does not define: the refusal page, nothing sent.
        other = writer.post(
            f"{page}/attachments/not-defined",
            data={"csrf": csrf},
            files={"file": ("a.pdf", PDF, "application/pdf")},
        )
        assert other.status_code == 422 and "Not an attachment of this policy" in other.text
        # Without a session, a body above every form's cap is refused unread.
        with httpx.Client(base_url=base, timeout=30) as anonymous:
            unsigned = anonymous.post(upload, files={"file": ("a.pdf", PDF, "application/pdf")})
        assert unsigned.status_code == 413
        # The writer's upload goes; the reader downloads it.
        sent = writer.post(
            upload, data={"csrf": csrf}, files={"file": ("a.pdf", PDF, "application/pdf")}
        )
        assert sent.status_code == 303
        assert reader.get(f"{upload}").content == PDF
    finally:
        reader.close()
        writer.close()
    assert _attaches(api, registration_id) == ["env:1"]
