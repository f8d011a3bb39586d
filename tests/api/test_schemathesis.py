"""schemathesis against /openapi.json, with the token, over real HTTP on loopback.

Every operation of the internal API gets generated requests, valid and invalid ones. No answer may
be a 5xx, and every answer must be one the document describes: its status, its content type, its
headers and its body's schema. Known rows are seeded (through the service's own code paths) so the
happy answers are checked against the schema too, not only the 404s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.db import create_engine, create_sessionmaker
from app.main import create_app
from app.settings import Settings
from app.simulator import SimulatorControl
from tests.api.conftest import AUTH, post_callback, put_registration, served_in_thread
from tests.api.test_events import callback
from tests.support.reads import events

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25
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
def base_url(settings: Settings) -> Iterator[str]:
    with served_in_thread(create_app(settings)) as url:
        yield url


def test_the_api_keeps_its_openapi_promises(
    base_url: str, settings: Settings, sim: SimulatorControl
) -> None:
    registration_id, event_id = asyncio.run(seed(settings, base_url))
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [
        result.ok() for result in schema.get_all_operations() if result.ok().path.startswith("/v1/")
    ]
    assert len(operations) >= 7

    for operation in operations:
        known = {"id": event_id if "/events/" in operation.path else registration_id}
        if "{id}" in operation.path:
            # The seeded rows: their answers (200/202) are checked against the schema too.
            operation.Case(path_parameters=known).call_and_validate(
                base_url=base_url, headers=AUTH, checks=CHECKS
            )
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=AUTH, checks=CHECKS, timeout=30)

        exercise()
