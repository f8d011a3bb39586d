"""schemathesis against /openapi.json, with the token, over real HTTP on loopback.

Run from outside as a client would (`schemathesis run`, every check and phase, a fixed seed and
a bounded number of cases per operation) over the internal API and the callback endpoint, valid
and invalid requests. No answer may be a 5xx; every answer must be one the document describes (its
status, content type, headers and body schema); whatever the document allows must be accepted
(2xx, or 404 for an id no one has) and whatever it does not allow refused (4xx). Known rows are
seeded (through the service's own code paths) so the happy answers are checked too, not only 404s.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import schemathesis

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.api.conftest import (
    AUTH,
    PROBLEM,
    api_settings,
    post_callback,
    put_registration,
    served_in_thread,
)
from tests.api.test_events import callback
from tests.conftest import API_TOKEN
from tests.support.reads import events

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES_PER_OPERATION = 10
"""Generated cases per operation in the fuzzing phase; the coverage phase adds its own (each
parameter's bounds and each kind of invalid value: about 650 cases in all)."""
SEED = 18
RUN_TIMEOUT_SECONDS = 180  # 40 operations; 105 s of phases measured on a busy 2-core machine
# Stateful links inferred from field names only from `Location` headers: dependency analysis takes
# a history item's `eventId` (Sinch's event id: text, often null) for the `{id}` of /v1/events (our
# row number), requests /v1/events/None, and calls the 422 a refusal of valid data.
#
# A subscription's URL must name a host SUBSCRIPTION_ALLOWED_HOSTS allows, which no schema can say:
# a URL the schema allows may still be refused (422), so "valid data is accepted" cannot hold for
# creating one (its refusals are tested in tests/api/test_subscriptions.py). Likewise a
# registration's body is Sinch's, checked by Sinch (the simulator here) against its policy, and a
# request meets its policy only as the stored policy says: a body the schema allows may be refused
# (422; tests/api/test_submissions.py, tests/api/test_catalog.py). So may an attachment (its
# registration's policy decides; tests/api/test_attachments.py).
CONFIG = """
checks.enabled = true

[phases.stateful.inference]
algorithms = ["location-headers"]

[[operations]]
include-operation-id = "createSubscription"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "changeSubscription"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "submitRegistration"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "updateRegistration"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "uploadAttachment"
checks.positive_data_acceptance.enabled = false
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(settings: Settings, base_url: str) -> tuple[str, int]:
    """A registration with history and a kept event; answers their ids."""
    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        await put_registration(sessionmaker, "reg-known", "IN_QUEUE", at=T0)
        await put_registration(sessionmaker, "reg-known", "IN_PROGRESS", at=T0 + timedelta(1))
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=base_url) as client:
        await post_callback(
            client, callback("e-known", "reg-known", "APPROVED", "2026-01-02T10:00:00")
        )
    [event] = await events(settings)
    return "reg-known", event.id


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    """The API's settings, with PUBLIC_BASE_URL: submissions reach the simulator (unset, every
    submission would be the 503 that says so)."""
    return api_settings(
        sim_server, database_url, redis_url, public_base_url="https://registrations.example.com"
    )


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with served_in_thread(create_app(settings)) as url:
        yield url


# The document's paths in three parts, each run by a test of its own so that `make test`'s processes
# share the run (one run of every path took two minutes, most of it generating cases, and could
# be the last test left running; `make test` as a whole is bound by the cores either way). Together
# they are every path of the internal API and the callback endpoint but the change feed's (left
# out below); `test_the_parts_cover_every_path` holds them to that.
PARTS = {
    "registrations": r"^/v1/registrations",
    "subscriptions": r"^/v1/(subscriptions|deliveries)",
    "the-rest": r"^/(callbacks/|v1/(?!registrations|subscriptions|deliveries|changes))",
}


@pytest.mark.slow  # the schemathesis command, run from outside: half a minute or more a part
@pytest.mark.parametrize("part", PARTS)
def test_the_api_keeps_its_openapi_promises(
    part: str, base_url: str, settings: Settings, sim: SimulatorControl, tmp_path: Path
) -> None:
    registration_id, event_id = asyncio.run(seed(settings, base_url))
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if re.search(PARTS[part], result.ok().path)
        # The feed's answers, in no part of the run below, are checked here with the rest's.
        or (part == "the-rest" and result.ok().path == "/v1/changes")
    ]
    assert operations
    for operation in operations:
        if operation.path == "/v1/changes":
            # The feed's answers are checked here, without waiting (below, it is left out).
            for query in ({}, {"limit": 1, "cursor": "0"}, {"cursor": "latest", "wait": 0.1}):
                operation.Case(query=query).call_and_validate(
                    base_url=base_url, headers=AUTH, timeout=30
                )
        if "{id}" in operation.path:
            # The seeded rows: their answers (200/202) are checked against the schema too, with
            # every check schemathesis has (no `checks=`: all that its configuration enables).
            known = {"id": event_id if "/events/" in operation.path else registration_id}
            if "{attachmentId}" in operation.path:
                known["attachmentId"] = "trade-register-extract"
            operation.Case(path_parameters=known).call_and_validate(
                base_url=base_url, headers=AUTH, timeout=30
            )

    # From outside, as a client would run it: every phase (examples, coverage, fuzzing,
    # stateful) and every check, generated from the document the service serves.
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/openapi.json",
        f"--header=Authorization: Bearer {API_TOKEN}",
        f"--include-path-regex={PARTS[part]}",
        # The change feed holds a request open (`wait`, up to 30 s) and streams without end: a
        # generator cannot tell those from a hang. Its answers are checked above and by
        # tests/changes/.
        "--exclude-path-regex=^/v1/changes",
        f"--max-examples={EXAMPLES_PER_OPERATION}",
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",
        "--request-timeout=30",
        "--no-color",
        "--output-truncate=false",
    ]
    try:
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"schemathesis ran over {RUN_TIMEOUT_SECONDS} s") from exc
    assert run.returncode == 0, run.stdout + run.stderr


# Every answer each operation gives, errors as problem documents: a client generated from the
# document knows them all (and no status is declared that the route never answers).
DECLARED = {
    ("get", "/v1/registrations"): {"200", "401", "422"},
    ("get", "/v1/registrations/{id}"): {"200", "401", "404", "422"},
    ("get", "/v1/registrations/{id}/history"): {"200", "401", "404", "422"},
    ("get", "/v1/registrations/{id}/versions"): {"200", "401", "404", "422"},
    # 200: `validateOnly=true` and the request meets its policy (nothing created)
    ("post", "/v1/registrations"): {
        "200",
        "201",
        "401",
        "403",
        "404",
        "409",
        "422",
        "502",
        "503",
        "504",
    },
    ("put", "/v1/registrations/{id}"): {"200", "401", "403", "404", "422", "502", "503", "504"},
    ("delete", "/v1/registrations/{id}"): {"200", "401", "403", "404", "422", "502", "503", "504"},
    ("post", "/v1/registrations/{id}/refresh"): {"200", "401", "403", "404", "422", "502", "503"},
    ("post", "/v1/registrations/{id}/attachments/{attachmentId}"): {
        "200",
        "401",
        "403",
        "404",
        "413",
        "422",
        "502",
        "503",
        "504",
    },
    ("get", "/v1/registrations/{id}/attachments/{attachmentId}"): {
        "200",
        "401",
        "404",
        "422",
        "502",
        "503",
        "504",
    },
    ("get", "/v1/events"): {"200", "401", "422"},
    ("get", "/v1/counts"): {"200", "401", "422"},
    ("get", "/v1/stats/time-in-state"): {"200", "401", "422"},
    ("get", "/v1/projects"): {"200", "401", "422"},
    ("get", "/v1/projects/{projectId}"): {"200", "401", "404", "422"},
    ("get", "/v1/events/{id}"): {"200", "401", "404", "422"},
    ("post", "/v1/events/{id}/replay"): {"202", "401", "403", "404", "422"},
    ("get", "/v1/changes"): {"200", "401", "410", "422"},
    ("get", "/v1/changes/stream"): {"200", "401", "410", "422"},
    ("post", "/v1/subscriptions"): {"201", "401", "403", "422"},
    ("get", "/v1/subscriptions"): {"200", "401", "422"},
    ("get", "/v1/subscriptions/{id}"): {"200", "401", "404", "422"},
    ("patch", "/v1/subscriptions/{id}"): {"200", "401", "403", "404", "422"},
    ("delete", "/v1/subscriptions/{id}"): {"204", "401", "403", "404", "422"},
    ("post", "/v1/subscriptions/{id}/rotate-secret"): {"200", "401", "403", "404", "422"},
    ("get", "/v1/subscriptions/{id}/deliveries"): {"200", "401", "404", "422"},
    ("post", "/v1/deliveries/{id}/retry"): {"202", "401", "403", "404", "422"},
    ("get", "/v1/subscriptions/{id}/attempts"): {"200", "401", "404", "422"},
    ("get", "/v1/deliveries/{id}/attempts"): {"200", "401", "404", "422"},
    ("post", "/v1/subscriptions/{id}/test"): {"200", "401", "403", "404", "422"},
    ("post", "/v1/subscriptions/{id}/retry-failed"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/subscriptions/{id}/enable"): {"200", "401", "403", "404", "409", "422"},
    ("get", "/v1/subscriptions/{id}/health"): {"200", "401", "404", "422"},
    ("get", "/v1/event-types"): {"200", "401", "422"},
    ("get", "/v1/audit"): {"200", "401", "403", "422"},
    ("get", "/v1/markets"): {"200", "401", "422"},
    ("get", "/v1/markets/{marketCode}"): {"200", "401", "404", "422"},
    ("get", "/v1/policies/{policyId}"): {"200", "401", "404", "422"},
}


def test_the_parts_cover_every_path(base_url: str) -> None:
    """Each path of the internal API and the callback endpoint is in exactly one part, but the
    change feed's, which is in none (its answers are checked above and by tests/changes/)."""
    paths = httpx.get(f"{base_url}/openapi.json", timeout=30).json()["paths"]
    served = [path for path in paths if path.startswith(("/v1/", "/callbacks/"))]
    assert any(path.startswith("/callbacks/") for path in served)
    for path in served:
        parts = [part for part, pattern in PARTS.items() if re.search(pattern, path)]
        assert len(parts) == (0 if path.startswith("/v1/changes") else 1), (path, parts)


def test_the_document_declares_every_answer_of_the_internal_api(base_url: str) -> None:
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    declared = {
        (method, path): set(operation["responses"])
        for path, operations in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in operations.items()
    }
    assert declared == DECLARED
    for (method, path), statuses in DECLARED.items():
        responses = document["paths"][path][method]["responses"]
        for status in statuses - {"200", "201", "202", "204"}:
            assert list(responses[status]["content"]) == [PROBLEM], (method, path, status)
    refresh = document["paths"]["/v1/registrations/{id}/refresh"]["post"]["responses"]
    assert "Retry-After" in refresh["503"]["headers"]
    for path in ("/v1/registrations", "/v1/events"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        [string] = [s for s in parameters["cursor"]["schema"]["anyOf"] if s["type"] == "string"]
        assert string["pattern"] and string["maxLength"]  # what a generator may send is bounded
        limit = parameters["limit"]
        assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
