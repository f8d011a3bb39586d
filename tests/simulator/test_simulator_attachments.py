"""The simulator's attachment upload and download, over HTTP as Sinch's: Sinch's error body for
a refused upload, a registration held in PENDING_ATTACHMENTS until its policy's mandatory
attachments are there, and the file given back as uploaded."""

from __future__ import annotations

import httpx

from devtools.simulator import SimulatorControl

PDF = b"%PDF-1.4\n% a trade register extract\n"


def de_body() -> dict[str, object]:
    return {
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "policyId": "sim-policy-de-alphanumeric",
        "requestDetails": [{"senderIdDetails": [{"senderId": "ACME", "useCase": "OTP"}]}],
    }


async def test_mandatory_attachments_hold_a_registration_until_uploaded(
    api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    created = (await api.post("/registrations", json=de_body())).json()
    assert created["status"] == "PENDING_ATTACHMENTS"
    path = f"/registrations/{created['id']}/attachments"

    optional = await api.post(
        f"{path}/letter-of-authorisation", files={"file": ("loa.pdf", PDF, "application/pdf")}
    )
    assert optional.status_code == 200, optional.text
    assert (await sim.registration(created["id"]))["status"] == "PENDING_ATTACHMENTS"

    answer = await api.post(
        f"{path}/trade-register-extract", files={"file": ("extract.pdf", PDF, "application/pdf")}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["uploadStatus"] == "COMPLETED"
    document = await sim.registration(created["id"])
    assert document["status"] == "IN_QUEUE"
    assert document["logs"][-1]["message"] == "Attachments received"
    assert [(a["attachmentId"], a["fileName"], a["mimeType"]) for a in document["attachments"]] == [
        ("letter-of-authorisation", "loa.pdf", "application/pdf"),
        ("trade-register-extract", "extract.pdf", "application/pdf"),
    ]
    download = await api.get(f"{path}/trade-register-extract")
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert 'filename="extract.pdf"' in download.headers["content-disposition"]


async def test_a_bad_upload_answers_sinchs_error_body_and_keeps_nothing(
    api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    created = (await api.post("/registrations", json=de_body())).json()
    path = f"/registrations/{created['id']}/attachments"
    bad = {
        "unknown definition": (f"{path}/passport", {"file": ("a.pdf", PDF, "application/pdf")}),
        "wrong type": (
            f"{path}/trade-register-extract",
            {"file": ("a.txt", b"text", "text/plain")},
        ),
        "empty": (f"{path}/trade-register-extract", {"file": ("a.pdf", b"", "application/pdf")}),
        "no file part": (f"{path}/trade-register-extract", {"other": ("a.pdf", PDF, "a/b")}),
    }
    for case, (url, files) in bad.items():
        answer = await api.post(url, files=files)
        assert answer.status_code == 400, case
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT"), case
        [detail] = error["details"]
        assert detail["fieldViolations"][0]["field"] in ("attachmentId", "file"), case

    assert (await sim.registration(created["id"]))["attachments"] == []
    missing = await api.get(f"{path}/trade-register-extract")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    unknown = await api.post(
        "/registrations/nope/attachments/x", files={"file": ("a.pdf", PDF, "application/pdf")}
    )
    assert unknown.status_code == 404
