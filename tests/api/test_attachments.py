"""Attachments through the API (issue 27), with the simulator as Sinch over HTTP: an upload is
checked against the registration's policy before anything is sent, reaches Sinch, and shows in
the registration kept here; a download gives back Sinch's file; the command line does the same.

What a user relies on: a registration held in PENDING_ATTACHMENTS moves on once its mandatory
attachments are uploaded through the service; a file the policy would refuse is refused here
with the field at fault, Sinch never asked; Sinch's refusals and outages come back as for the
other writes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.settings import Settings
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.api.conftest import assert_problem, refresh_catalog
from tests.api.test_submissions import PUBLIC_BASE_URL, new_registration, submitting_settings
from tests.support import processes
from tests.support.tokens import bearer, make_token
from tests.worker.test_cli import cli_env

PDF = b"%PDF-1.4\n% an extract from the trade register\n" + bytes(range(256))
EXTRACT = "trade-register-extract"
ATTACHMENT_MAX_BYTES = 200_000
API_MAX_BODY_BYTES = 20_000


def de_registration() -> dict[str, Any]:
    """A request meeting the simulator's DE policy, which has a mandatory attachment."""
    return new_registration(
        policyId="sim-policy-de-alphanumeric",
        company={"companyName": "Acme GmbH", "vatNumber": "DE123456789"},
    )


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return submitting_settings(
        sim_server,
        database_url,
        redis_url,
        attachment_max_bytes=ATTACHMENT_MAX_BYTES,
        api_max_body_bytes=API_MAX_BODY_BYTES,
    )


@pytest.fixture(autouse=True)
async def catalog(
    sim_server: SimulatorServer, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> str:
    return await refresh_catalog(settings, sessionmaker)


@pytest.fixture
async def waiting(v1: httpx.AsyncClient) -> str:
    """A DE registration submitted through the service: Sinch holds it for its attachment."""
    created = await v1.post("/v1/registrations", json=de_registration())
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "PENDING_ATTACHMENTS"
    return str(created.json()["id"])


def pdf(name: str = "extract.pdf", content: bytes = PDF, mime: str = "application/pdf") -> Any:
    return {"file": (name, content, mime)}


async def test_an_upload_reaches_sinch_and_the_registration_moves_on(
    v1: httpx.AsyncClient, sim: SimulatorControl, waiting: str
) -> None:
    registration = (await v1.get(f"/v1/registrations/{waiting}")).json()
    assert registration["needsAction"]["action"] == "upload_attachments"

    answer = await v1.post(f"/v1/registrations/{waiting}/attachments/{EXTRACT}", files=pdf())

    assert answer.status_code == 200, answer.text
    kept = answer.json()
    assert kept["status"] == "IN_QUEUE"
    assert kept["needsAction"] is None
    [listed] = kept["sinch"]["attachments"]
    assert (listed["attachmentId"], listed["fileName"], listed["mimeType"]) == (
        EXTRACT,
        "extract.pdf",
        "application/pdf",
    )
    history = (await v1.get(f"/v1/registrations/{waiting}/history")).json()["items"]
    assert [(h["toStatus"], h["source"]) for h in history] == [
        ("PENDING_ATTACHMENTS", "submitted"),
        ("IN_QUEUE", "submitted"),
    ]
    audit = (await v1.get("/v1/audit", params={"action": "registration.attach"})).json()
    [entry] = audit["items"]
    assert entry["target"] == waiting
    # The file as Sinch keeps it, streamed back.
    download = await v1.get(f"/v1/registrations/{waiting}/attachments/{EXTRACT}")
    headers = download.headers
    assert (download.status_code, download.content, headers["content-type"]) == (
        200,
        PDF,
        "application/pdf",
    )
    assert headers["content-disposition"] == 'attachment; filename="extract.pdf"'


async def test_a_file_above_the_api_body_cap_is_taken_up_to_the_attachment_cap(
    v1: httpx.AsyncClient, sim: SimulatorControl, waiting: str
) -> None:
    url = f"/v1/registrations/{waiting}/attachments/{EXTRACT}"
    big = b"%PDF" + b"x" * (API_MAX_BODY_BYTES * 5)  # five times API_MAX_BODY_BYTES

    taken = await v1.post(url, files=pdf(content=big))

    assert taken.status_code == 200, taken.text
    assert (await v1.get(url)).content == big
    # Above ATTACHMENT_MAX_BYTES: 413, and Sinch is not asked.
    uploads = (await sim.stats())["uploadAttachment"]
    too_big = await v1.post(url, files=pdf(content=b"x" * (ATTACHMENT_MAX_BYTES + 1)))
    assert_problem(too_big, 413)
    assert (await sim.stats())["uploadAttachment"] == uploads
    # Another route keeps API_MAX_BODY_BYTES.
    other = await v1.post("/v1/registrations", content=b"{" + b" " * API_MAX_BODY_BYTES + b"}")
    assert_problem(other, 413)


@pytest.mark.parametrize(
    ("attachment_id", "files", "path"),
    [
        ("passport", pdf(), "$.attachmentId"),
        (EXTRACT, pdf("notes.txt", b"hello", "text/plain"), "$.file"),
        (EXTRACT, pdf(content=b""), "$.file"),
    ],
)
async def test_an_upload_the_policy_refuses_is_422_and_sinch_is_not_asked(
    v1: httpx.AsyncClient,
    sim: SimulatorControl,
    waiting: str,
    attachment_id: str,
    files: Any,
    path: str,
) -> None:
    answer = await v1.post(f"/v1/registrations/{waiting}/attachments/{attachment_id}", files=files)

    [error] = assert_problem(answer, 422)["errors"]
    assert error["field"] == error["path"] == path
    assert (await sim.stats()).get("uploadAttachment", 0) == 0
    assert (await sim.registration(waiting))["attachments"] == []


async def test_sinchs_refusal_is_422_its_outage_502_and_an_unknown_file_404(
    v1: httpx.AsyncClient, sim: SimulatorControl, waiting: str
) -> None:
    url = f"/v1/registrations/{waiting}/attachments/{EXTRACT}"
    missing = await v1.get(url)
    assert_problem(missing, 404)

    await sim.inject_fault("status", status=503, count=20)
    unavailable = await v1.post(url, files=pdf())
    assert_problem(unavailable, 502)
    await sim.clear_faults()

    await sim.transition(waiting, "REJECTED")
    refused = await v1.post(url, files=pdf())
    assert assert_problem(refused, 422)["sinch"]["status"] == "FAILED_PRECONDITION"
    assert (await sim.registration(waiting))["attachments"] == []
    assert_problem(await v1.post("/v1/registrations/nope/attachments/x", files=pdf()), 404)


async def test_a_read_token_downloads_and_may_not_upload(
    v1: httpx.AsyncClient, settings: Settings, sim: SimulatorControl, waiting: str
) -> None:
    url = f"/v1/registrations/{waiting}/attachments/{EXTRACT}"
    assert (await v1.post(url, files=pdf())).status_code == 200
    reader = bearer(await make_token(settings, "reader", "read"))

    assert (await v1.get(url, headers=reader)).content == PDF
    assert_problem(await v1.post(url, files=pdf(), headers=reader), 403)


async def test_the_cli_attaches_and_downloads(
    settings: Settings, sim: SimulatorControl, tmp_path: Path, v1: httpx.AsyncClient, waiting: str
) -> None:
    env = {**cli_env(settings), "PUBLIC_BASE_URL": PUBLIC_BASE_URL}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(processes.run_cli, env, *args, cwd=tmp_path)

    extract = tmp_path / "extract.pdf"
    extract.write_bytes(PDF)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a PDF")

    refused = await cli("registration", "attach", waiting, EXTRACT, str(notes))
    assert refused.returncode == 1
    assert "$.file" in refused.stderr
    assert (await sim.stats()).get("uploadAttachment", 0) == 0

    attached = await cli("registration", "attach", waiting, EXTRACT, str(extract))
    assert attached.returncode == 0, attached.stderr
    assert json.loads(attached.stdout)["status"] == "IN_QUEUE"
    audit = (await v1.get("/v1/audit", params={"action": "registration.attach"})).json()
    assert [(e["actor"][:4], e["target"]) for e in audit["items"]] == [("cli:", waiting)]

    out = tmp_path / "back.pdf"
    downloaded = await cli("registration", "attachment", waiting, EXTRACT, "--out", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    assert out.read_bytes() == PDF
    absent = await cli(
        "registration", "attachment", waiting, "letter-of-authorisation", "--out", str(out)
    )
    assert absent.returncode == 1
    assert "(404)" in absent.stderr
