"""List cursors from anyone: every cursor the OpenAPI document allows names a page (200), anything
else is a 422 problem, and no cursor, however forged, makes a 5xx or a traceback in the log.

Over real HTTP. The allowed shape is read from the served /openapi.json, so
these tests hold the service to what its document promises.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from tests.api.conftest import AUTH, PROBLEM, assert_problem, put_registration, served_in_thread
from tests.support.servers import serve

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
ODD_IDS = ["01H?x=1&y#z é", "a:b", "100:200", "reg-%41", "x" * 255]
EXAMPLES = 60


def forged(payload: object) -> str:
    """A cursor as this service used to make them: base64url of JSON, unpadded."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def seed(settings: Settings, ids: list[str]) -> None:
    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        for number, registration_id in enumerate(ids):
            await put_registration(sessionmaker, registration_id, at=T0 + timedelta(number))
    finally:
        await engine.dispose()


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with served_in_thread(create_app(settings)) as url:
        yield url


def cursor_schema(base_url: str, path: str) -> dict[str, Any]:
    """The served document's schema of `cursor` (its string branch) on the listing at `path`."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    [cursor] = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "cursor"]
    schemas = cursor["schema"].get("anyOf", [cursor["schema"]])
    [string] = [schema for schema in schemas if schema["type"] == "string"]
    return cast(dict[str, Any], string)


def cursor_strings(base_url: str, path: str) -> st.SearchStrategy[str]:
    """The strings the served document allows as `cursor` of the listing at `path`."""
    schema = cursor_schema(base_url, path)
    longest = schema.get("maxLength", 1000)
    if "pattern" not in schema:
        return st.text(min_size=schema.get("minLength", 0), max_size=longest)
    return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= longest)


class ServerLog(logging.Handler):
    """Every record logged in this process while it is attached (the service logs through the
    root logger; attached after start-up, as the lifespan replaces the root's handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def assert_no_error(self) -> None:
        errors = [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.exc_info or r.levelno >= logging.ERROR
        ]
        assert errors == [], errors


@contextmanager
def server_log() -> Iterator[ServerLog]:
    handler = ServerLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


OUT_OF_RANGE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("at", OUT_OF_RANGE)
async def test_a_forged_cursor_with_a_time_out_of_range_is_a_problem_not_a_traceback(
    settings: Settings, at: str
) -> None:
    await seed(settings, ["reg-1", "reg-2"])
    by_time = {"updatedSince": "2026-01-01T00:00:00Z"}
    forgeries = [
        ("/v1/registrations", by_time, forged({"id": "reg-1", "at": at})),
        ("/v1/registrations", by_time, forged({"at": at, "id": "reg-1"})),
        ("/v1/registrations", by_time, "9" * 18 + ":reg-1"),  # today's shape; read as the end
        ("/v1/registrations", {}, forged({"at": at})),
        ("/v1/events", {}, forged({"id": 1, "at": at})),
        ("/v1/events", {}, f":1{at}"),
    ]
    async with (
        serve(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as v1,
    ):
        with server_log() as log:
            answers = [
                await v1.get(path, params={**params, "cursor": cursor})
                for path, params, cursor in forgeries
            ]
    for answer in answers:
        if answer.status_code == 200:  # a well-formed cursor names a page
            assert answer.json()["items"] == []
            continue
        body = assert_problem(answer, 422)
        assert [error["loc"] for error in body["errors"]] == [["query", "cursor"]]
        assert at not in answer.text  # input is never echoed
    assert [answer.status_code for answer in answers] == [422, 422, 200, 422, 422, 422]
    log.assert_no_error()


def test_every_cursor_the_document_allows_names_a_page(base_url: str, settings: Settings) -> None:
    """Whatever matches the declared pattern is answered 200, on every ordering: a cursor names a
    position, whoever made it (ends of the time range included)."""
    asyncio.run(seed(settings, ["reg-1", "reg-2", *ODD_IDS]))
    registrations = cursor_strings(base_url, "/v1/registrations")
    events = cursor_strings(base_url, "/v1/events")
    listings = st.sampled_from(
        [
            ("/v1/registrations", registrations, {}),
            ("/v1/registrations", registrations, {"updatedSince": "0001-01-01T00:00:00Z"}),
            ("/v1/registrations", registrations, {"status": "IN_QUEUE"}),
            ("/v1/events", events, {}),
        ]
    )

    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as v1, server_log() as log:

        @given(data=st.data(), listing=listings)
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answered(
            data: st.DataObject, listing: tuple[str, st.SearchStrategy[str], dict[str, str]]
        ) -> None:
            path, cursors, params = listing
            cursor = data.draw(cursors, label="cursor")
            answer = v1.get(path, params={**params, "cursor": cursor})
            assert answer.status_code == 200, answer.text
            assert isinstance(answer.json()["items"], list)

        answered()
    log.assert_no_error()


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/registrations", "!!not base64!!"),
        ("/v1/registrations", forged({"id": "reg-1"})),  # the former format
        ("/v1/registrations", ":"),
        ("/v1/registrations", "1.5:reg-1"),
        ("/v1/registrations", "-1:reg-1"),
        ("/v1/registrations", "1" * 19 + ":reg-1"),  # more digits than any time has
        ("/v1/registrations", "٣:reg-1"),  # a digit, but not an ASCII one
        ("/v1/registrations", ":reg\x00"),
        ("/v1/registrations", ":" + "x" * 256),
        ("/v1/events", "%%%"),
        ("/v1/events", forged({"id": 7})),
        ("/v1/events", ":0"),
        ("/v1/events", ":" + "9" * 19),
        ("/v1/events", "5:7"),
        ("/v1/events", ":reg-1"),
    ],
)
def test_anything_else_is_refused_like_any_invalid_parameter(
    base_url: str, path: str, cursor: str
) -> None:
    answer = httpx.get(f"{base_url}{path}", params={"cursor": cursor}, headers=AUTH, timeout=30)
    body = assert_problem(answer, 422)
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert [error["loc"] for error in body["errors"]] == [["query", "cursor"]]


def test_cursors_of_odd_ids_and_the_ends_of_time(base_url: str, settings: Settings) -> None:
    asyncio.run(seed(settings, ODD_IDS))
    pattern = cursor_schema(base_url, "/v1/registrations").get("pattern", "")
    since = "2000-01-01T00:00:00Z"
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as v1:

        def ids(**params: str) -> list[str]:
            answer = v1.get("/v1/registrations", params=params)
            assert answer.status_code == 200, answer.text
            return [item["id"] for item in answer.json()["items"]]

        by_id = ids(limit="500")  # in the database's collation
        assert sorted(by_id) == sorted(ODD_IDS)
        for params, expected in (({"limit": "1"}, by_id), ({"updatedSince": since}, ODD_IDS)):
            seen: list[str] = []
            cursor: str | None = None
            for _ in range(len(ODD_IDS) + 1):  # bounded: one page per row, and the last
                query = {**params, "limit": "1", **({"cursor": cursor} if cursor else {})}
                body = v1.get("/v1/registrations", params=query).json()
                seen += [item["id"] for item in body["items"]]
                cursor = body["nextCursor"]
                if cursor is None:
                    break
                assert re.fullmatch(pattern, cursor), cursor
            assert seen == expected

        # A date-time past either end once in UTC is valid (RFC 3339) and read as that end.
        assert ids(updatedSince="9999-12-31T23:59:59-14:00") == []
        assert ids(updatedSince="0001-01-01T00:00:00+14:00") == ODD_IDS
        # Past the last representable time: nothing after it. No time: from the beginning.
        assert ids(updatedSince=since, cursor="9" * 18 + ":a") == []
        assert ids(updatedSince=since, cursor=":" + ODD_IDS[0]) == ODD_IDS
        # A cursor of the listing by time, read by the listing by id: the rows after its id.
        assert ids(cursor="0:a:b") == by_id[by_id.index("a:b") + 1 :]
