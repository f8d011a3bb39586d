"""Subscriptions end to end: changes pushed to real HTTP receivers as signed webhooks.

Everything is real, as in tests/changes/test_feed_converges.py: the simulator as Sinch, the API
and the worker as child processes, a private Redis, and PostgreSQL. The receivers are small
HTTP servers on loopback run by the test; each checks every request it gets with the
`standardwebhooks` library (and with an HMAC of its own), and records what it got and answered.

The stack lives for the module: every test starts from no subscription (the `api` fixture deletes
them after each test) and looks only at the registrations it made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.db import create_engine
from app.core.models import CallbackEvent, EventState
from devtools.simulator import SimulatorControl
from tests.support.reads import wait_for_facts
from tests.support.servers import free_port, serve
from tests.support.stack import API_TOKEN, CALLBACK_PATH, Stack, running_stack

# One group for the module: its tests share one stack (a module fixture), built once in one test
# process; the other end-to-end modules run beside it in the others.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e_deliveries")]

TIMEOUT_SECONDS = 2.0
"""DELIVERY_TIMEOUT_SECONDS of the stack."""
PAUSES = (0.2, 0.5, 1.0)
"""DELIVERY_RETRY_SECONDS of the stack (each jittered by up to 10 %)."""
DISABLE_AFTER_HOURS = 0.003
"""SUBSCRIPTION_DISABLE_AFTER_HOURS of the stack: about 11 s of nothing but failures. Longer than
any test lets a receiver fail on purpose, but the one of receivers that are down."""
WAIT_SECONDS = 30.0
"""The bound of every wait for something the service does in the background."""
TEST_SECONDS = 100.0
URL_TOKEN = "url-token-that-must-never-be-logged"
EVENT_TYPE = "registration.changed"
BUSY = ["IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class World:
    stack: Stack
    secrets: list[str] = field(default_factory=list)
    """Every subscription secret handed out: none may reach a log."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("subscriptions")
    with running_stack(
        folder,
        f"subs_{worker_id}",
        SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1",
        # The receivers are on loopback, which a delivery may reach only when allowed.
        SUBSCRIPTION_ALLOWED_NETWORKS="127.0.0.0/8",
        DELIVERY_RETRY_SECONDS=",".join(str(p) for p in PAUSES),
        DELIVERY_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        SUBSCRIPTION_DISABLE_AFTER_HOURS=str(DISABLE_AFTER_HOURS),
        SWEEP_INTERVAL_SECONDS="2",
        SWEEP_GRACE_SECONDS="5",
    ) as stack:
        stack.start_api_and_worker(delivery_worker=True)
        found = World(stack)
        yield found
    logs = stack.logs()
    for secret in [*found.secrets, URL_TOKEN]:
        assert secret not in logs, "a subscription's secret or URL token reached a log"


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The API, once what earlier tests started has settled; no subscription is left after."""
    await wait_for_facts(world.stack.settings)
    async with httpx.AsyncClient(
        base_url=world.stack.api_url,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=httpx.Timeout(10),
    ) as client:
        yield client
        for subscription in (await client.get("/v1/subscriptions")).json()["items"]:
            await client.delete(f"/v1/subscriptions/{subscription['id']}")


@pytest.fixture
async def sim(world: World) -> AsyncIterator[SimulatorControl]:
    async with SimulatorControl(world.stack.sim.base_url) as control:
        yield control


# --- receivers ---------------------------------------------------------------------------------


@dataclass
class Arrival:
    """One request a receiver got."""

    at: float
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: dict[str, bool]
    """Per secret the receiver trusts: whether `standardwebhooks` verified the request with it."""
    own_check: dict[str, bool]
    """The same, by an HMAC-SHA256 of the test's own (Standard Webhooks' scheme)."""
    attempt: int
    """This request is the n-th with its webhook-id."""
    status: int | None = None
    """What the receiver answered; None while it holds the request."""
    answered_at: float | None = None
    late: bool = False
    """Answered after the service had given up waiting (held past the timeout, or killed)."""

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.event["data"]
        return data

    @property
    def seq(self) -> int:
        seq: int = self.data["seq"]
        return seq

    @property
    def rid(self) -> str:
        rid: str = self.data["registrationId"]
        return rid

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.late


Answer = tuple[int, dict[str, str]]
Behaviour = Callable[[Arrival], Awaitable[Answer]]


async def always_ok(arrival: Arrival) -> Answer:
    return 200, {}


def own_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' signature checked without the library: any `v1,` entry of the header
    equal to base64(HMAC-SHA256(key, "id.timestamp.body")), the key being the secret's base64."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [p.removeprefix("v1,") for p in headers["webhook-signature"].split(" ")]
    return any(hmac.compare_digest(expected, g) for g in given)


class Receiver:
    """A webhook receiver over real HTTP: verifies and records every request, and answers as
    `behaviour` says."""

    def __init__(self, behaviour: Behaviour = always_ok) -> None:
        self.behaviour = behaviour
        self.arrivals: list[Arrival] = []
        self.secrets: list[str] = []
        self.url = ""
        self.came = asyncio.Event()
        self.released = asyncio.Event()
        """Ends every request held (`hold`)."""
        self._trusted = asyncio.Event()
        self.app = FastAPI()
        self.app.add_api_route("/hook", self._hook, methods=["POST"])

    def trust(self, secret: str) -> None:
        self.secrets.append(secret)
        self._trusted.set()

    async def _hook(self, request: Request) -> Response:
        arrived = time.monotonic()
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        # A delivery may come before the test read the subscription's secret from its answer.
        await asyncio.wait_for(self._trusted.wait(), 10)
        verified: dict[str, bool] = {}
        own: dict[str, bool] = {}
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified[secret] = True
            except WebhookVerificationError:
                verified[secret] = False
            try:
                own[secret] = own_signature(secret, headers, body)
            except (KeyError, ValueError):
                own[secret] = False
        webhook_id = headers.get("webhook-id", "")
        attempt = 1 + sum(a.webhook_id == webhook_id for a in self.arrivals)
        arrival = Arrival(arrived, webhook_id, headers, body, verified, own, attempt)
        self.arrivals.append(arrival)
        self.came.set()
        status, extra = await self.behaviour(arrival)
        arrival.status, arrival.answered_at = status, time.monotonic()
        return Response(status_code=status, headers=extra)

    async def hold(self, arrival: Arrival) -> Answer:
        """Hold the request open until released (bounded), then answer 200 to nobody."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), 60)
        arrival.late = True
        return 200, {}

    def of(self, rids: set[str] | list[str]) -> list[Arrival]:
        return [a for a in self.arrivals if a.rid in rids]

    async def next_arrival(
        self, predicate: Callable[[Arrival], bool], *, seconds: float = WAIT_SECONDS
    ) -> Arrival:
        """Wait (bounded) for a request matching `predicate`."""
        async with asyncio.timeout(seconds):
            while True:
                for arrival in self.arrivals:
                    if predicate(arrival):
                        return arrival
                self.came.clear()
                await self.came.wait()


@contextlib.asynccontextmanager
async def receiving(behaviour: Behaviour = always_ok) -> AsyncIterator[Receiver]:
    receiver = Receiver(behaviour)
    async with serve(receiver.app) as base_url:
        receiver.url = f"{base_url}/hook"
        try:
            yield receiver
        finally:
            receiver.released.set()


@contextlib.asynccontextmanager
async def hanging() -> AsyncIterator[str]:
    """A receiver that takes each request and never answers; yields its URL."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        for writer in connections:
            writer.close()


# --- the API and the stack ---------------------------------------------------------------------


async def subscribe(
    api: httpx.AsyncClient, world: World, receiver: Receiver | None, **fields: Any
) -> dict[str, Any]:
    """POST /v1/subscriptions for `receiver` (or `fields["url"]`); its secret to the receiver."""
    body = {"url": receiver.url if receiver else fields.pop("url"), **fields}
    response = await api.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    world.secrets.append(secret)
    assert created["enabled"] is True and created["disabledReason"] is None
    if receiver is not None:
        receiver.trust(secret)
    return created


async def subscription(api: httpx.AsyncClient, subscription_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/subscriptions/{subscription_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    assert "secret" not in found
    return found


async def deliveries(api: httpx.AsyncClient, subscription_id: str) -> list[dict[str, Any]]:
    """A subscription's whole delivery log (every page), newest first."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get(f"/v1/subscriptions/{subscription_id}/deliveries", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            ids = [d["id"] for d in found]
            assert ids == sorted(ids, reverse=True), "the log is not newest first"
            return found
    raise AssertionError("the delivery log never ended")


async def latest(api: httpx.AsyncClient) -> int:
    response = await api.get("/v1/changes", params={"cursor": "latest"})
    assert response.status_code == 200, response.text
    return int(response.json()["nextCursor"])


async def feed(api: httpx.AsyncClient, after: int, rids: set[str]) -> dict[int, dict[str, Any]]:
    """The changes of `rids` on the feed after seq `after`, by seq."""
    items: dict[int, dict[str, Any]] = {}
    cursor = str(after)
    for _ in range(1000):
        response = await api.get("/v1/changes", params={"cursor": cursor, "limit": 500})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["items"]:
            return items
        items.update({i["seq"]: i for i in page["items"] if i["registrationId"] in rids})
        cursor = page["nextCursor"]
    raise AssertionError("the feed never ended")


async def drain(world: World, rids: list[str], *, facts: bool = True) -> None:
    """Wait (bounded) until every callback kept for these registrations is processed, and (with
    `facts`) no registration waits for its facts."""
    engine = create_engine(world.stack.settings)
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                async with engine.connect() as connection:
                    waiting = await connection.scalar(
                        select(func.count()).where(
                            CallbackEvent.registration_id.in_(rids),
                            CallbackEvent.state == EventState.RECEIVED,
                        )
                    )
                if not waiting:
                    break
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    if facts:
        await wait_for_facts(world.stack.settings)


async def play(
    world: World,
    sim: SimulatorControl,
    lifecycles: list[list[str]],
    *,
    types: list[str | None] | None = None,
    shuffled: bool = False,
    seed: int = 7,
) -> list[str]:
    """New registrations at Sinch, learnt by their first callback, then moved a step at a time
    through `lifecycles`: each step's callbacks delivered (shuffled and duplicated if asked) and
    processed before the next step, so that each move is a change. Answers their ids."""
    kinds = types or [None] * len(lifecycles)
    rids = [(await sim.create_registration(registration_type=kind))["id"] for kind in kinds]
    await callbacks(world, sim, [e["eventId"] for rid in rids for e in await sim.events(rid)])
    await drain(world, rids, facts=False)
    for step in range(max(map(len, lifecycles))):
        moved = [
            (await sim.transition(rid, path[step]))["eventId"]
            for rid, path in zip(rids, lifecycles, strict=True)
            if step < len(path)
        ]
        await callbacks(world, sim, moved, shuffled=shuffled, seed=seed + step)
        await drain(world, rids, facts=False)
    await drain(world, rids)
    return rids


async def callbacks(
    world: World,
    sim: SimulatorControl,
    event_ids: list[str],
    *,
    shuffled: bool = False,
    seed: int = 7,
) -> None:
    results = await sim.deliver(
        world.stack.api_url + CALLBACK_PATH,
        event_ids=event_ids,
        order="shuffled" if shuffled else "in_order",
        duplicates=len(event_ids) // 2 if shuffled else 0,
        seed=seed,
        concurrency=4 if shuffled else 1,
    )
    assert {r["status"] for r in results} == {200}, results


async def move(world: World, sim: SimulatorControl, rid: str, status: str) -> None:
    """Move a registration at Sinch and deliver that callback; wait until it is processed."""
    event = await sim.transition(rid, status)
    await callbacks(world, sim, [event["eventId"]])
    await drain(world, [rid])


async def all_delivered(
    api: httpx.AsyncClient,
    receiver: Receiver,
    subscription_id: str,
    rids: list[str],
    after: int,
    *,
    wanted: Callable[[dict[str, Any]], bool] = lambda item: True,
    seconds: float = WAIT_SECONDS,
) -> dict[int, dict[str, Any]]:
    """Wait (bounded) until the subscription's log holds a delivery of each `wanted` change of
    `rids` on the feed (after `after`) and of no other, each succeeded, and the receiver took
    each. Answers the feed's changes of `rids` by seq (wanted or not)."""
    ours = set(rids)
    deadline = time.monotonic() + seconds
    while True:
        items = await feed(api, after, ours)
        expected = {seq for seq, item in items.items() if wanted(item)}
        log = [
            d
            for d in await deliveries(api, subscription_id)
            if d["registrationId"] in ours and (d["seq"] is None or d["seq"] > after)
        ]
        logged = [d["seq"] for d in log]
        taken = {a.seq for a in receiver.of(ours) if a.accepted}
        if (
            None not in logged  # a change not numbered yet: not ready to compare
            and sorted(logged) == sorted(expected)  # one delivery each
            and all(d["state"] == "succeeded" for d in log)
            and expected <= taken
        ):
            return items
        if time.monotonic() > deadline:
            states = {d["seq"]: (d["state"], d["attempts"], d["lastError"]) for d in log}
            raise AssertionError(
                f"not delivered within {seconds}s: expected {sorted(expected)}, logged "
                f"{states}, taken {sorted(taken)}"
            )
        await asyncio.sleep(0.1)


def assert_genuine(receiver: Receiver, items: dict[int, dict[str, Any]], rids: list[str]) -> None:
    """Every request about `rids` verified with every secret the receiver trusts, by the library
    and by hand, and carries the feed's change for its seq as `data`; one webhook-id per change,
    the same on every attempt."""
    ids_by_seq: dict[int, set[str]] = {}
    for arrival in receiver.of(set(rids)):
        assert arrival.verified and all(arrival.verified.values()), arrival.verified
        assert all(arrival.own_check.values()), "the signature is not Standard Webhooks'"
        headers = arrival.headers
        assert headers["content-type"] == "application/json"
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
        event = arrival.event
        assert set(event) == {"type", "timestamp", "data"}
        assert event["type"] == EVENT_TYPE
        assert event["timestamp"] == arrival.data["recordedAt"]
        assert arrival.data == items[arrival.seq], f"seq {arrival.seq}: data is not the feed's"
        ids_by_seq.setdefault(arrival.seq, set()).add(arrival.webhook_id)
    assert all(len(ids) == 1 for ids in ids_by_seq.values()), "a webhook-id changed on retry"
    every_id = [next(iter(ids)) for ids in ids_by_seq.values()]
    assert len(set(every_id)) == len(every_id), "two changes share a webhook-id"


def by_seq(log: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {d["seq"]: d for d in log}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- (1) every change, verified, as the feed says -----------------------------------------------


async def test_every_change_is_delivered_signed_and_as_the_feed_says(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    async with asyncio.timeout(TEST_SECONDS), receiving() as one, receiving() as two:
        after = await latest(api)
        first = await subscribe(api, world, one, description="first")
        second = await subscribe(api, world, two)
        assert first["secret"] != second["secret"]
        assert first["statuses"] is None and first["registrationTypes"] is None

        rids = await play(world, sim, [BUSY, ["REJECTED"], [], BUSY[:2]], shuffled=True)
        # A refresh is a change too (here of a registration the service did not know).
        fetched = (await sim.create_registration(lifecycle=["IN_PROGRESS"]))["id"]
        refreshed = await api.post(f"/v1/registrations/{fetched}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        rids.append(fetched)
        await drain(world, rids)

        for receiver, created in ((one, first), (two, second)):
            items = await all_delivered(api, receiver, created["id"], rids, after)
            assert {i["registrationId"] for i in items.values()} == set(rids)
            assert any(i["source"] == "refetch" for i in items.values()), "no refresh change"
            assert_genuine(receiver, items, rids)
            log = by_seq(await deliveries(api, created["id"]))
            for arrival in receiver.of(set(rids)):
                delivery = log[arrival.seq]
                assert arrival.webhook_id == f"msg_{delivery['id']}"
                assert delivery["attempts"] == 1 and delivery["lastStatusCode"] == 200
                assert delivery["lastError"] is None and delivery["nextAttemptAt"] is None
            assert len(receiver.of(set(rids))) == len(items), "a change was delivered twice"

        # The log pages, newest first.
        page = await api.get(f"/v1/subscriptions/{first['id']}/deliveries", params={"limit": 2})
        assert page.status_code == 200 and len(page.json()["items"]) == 2
        rest = await api.get(
            f"/v1/subscriptions/{first['id']}/deliveries",
            params={"limit": 2, "cursor": page.json()["nextCursor"]},
        )
        assert rest.json()["items"][0]["id"] < page.json()["items"][-1]["id"]

        # The rest of the API.
        listed = (await api.get("/v1/subscriptions")).json()["items"]
        assert {s["id"] for s in listed} == {first["id"], second["id"]}
        assert all("secret" not in s for s in listed)
        assert (await subscription(api, first["id"]))["description"] == "first"
        anonymous = await api.get("/v1/subscriptions", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        assert (await api.get("/v1/subscriptions/sub_nothing")).status_code == 404
        assert (await api.post("/v1/deliveries/987654321/retry")).status_code == 404
        assert (await api.delete(f"/v1/subscriptions/{second['id']}")).status_code == 204
        assert (await api.get(f"/v1/subscriptions/{second['id']}")).status_code == 404
        gone = await api.get(f"/v1/subscriptions/{second['id']}/deliveries")
        assert gone.status_code == 404


# --- (2) retries --------------------------------------------------------------------------------


async def test_failed_attempts_are_retried_on_schedule_until_they_succeed(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    modes: dict[str, str] = {}
    healed = asyncio.Event()
    other: list[Arrival] = []

    async def behaviour(arrival: Arrival) -> Answer:
        mode = modes.get(arrival.rid)
        first = arrival.data["fromStatus"] is None  # only the registration's first change fails
        if mode == "500" and first and not healed.is_set():
            return 500, {}
        if mode == "429" and first and arrival.attempt == 1:
            return 429, {"Retry-After": "2"}
        if mode == "date" and first and arrival.attempt == 1:
            later = datetime.now(UTC) + timedelta(seconds=3)
            return 503, {"Retry-After": format_datetime(later, usegmt=True)}
        if mode == "redirect" and first and arrival.attempt == 1:
            return 307, {"Location": elsewhere.url}
        if mode == "timeout" and first and arrival.attempt == 1:
            await asyncio.sleep(TIMEOUT_SECONDS + 1)
            arrival.late = True
            return 200, {}
        return 200, {}

    async def record(arrival: Arrival) -> Answer:
        other.append(arrival)
        return 200, {}

    async with (
        asyncio.timeout(TEST_SECONDS),
        receiving(behaviour) as receiver,
        receiving(record) as elsewhere,
    ):
        after = await latest(api)
        created = await subscribe(api, world, receiver)
        elsewhere.trust(created["secret"])
        names = ["500", "429", "date", "redirect", "timeout"]
        rids = [(await sim.create_registration())["id"] for _ in names]
        modes.update(zip(rids, names, strict=True))
        by_mode = dict(zip(names, rids, strict=True))
        await callbacks(world, sim, [e["eventId"] for rid in rids for e in await sim.events(rid)])
        await drain(world, rids)

        # While the receiver answers 500, the log says so, and the attempts follow the schedule.
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                log = [
                    d
                    for d in await deliveries(api, created["id"])
                    if d["registrationId"] == by_mode["500"]
                ]
                if log and log[-1]["attempts"] >= 3:
                    break
                await asyncio.sleep(0.05)
        failing = log[-1]
        assert failing["state"] == "pending"
        assert failing["lastStatusCode"] == 500 and failing["lastError"] == "answered 500"
        assert failing["nextAttemptAt"] is not None
        assert when(failing["nextAttemptAt"]) >= when(failing["updatedAt"])
        healed.set()

        items = await all_delivered(api, receiver, created["id"], rids, after)
        assert_genuine(receiver, items, rids)
        final = by_seq(await deliveries(api, created["id"]))

        def attempts(mode: str) -> tuple[dict[str, Any], list[Arrival]]:
            rid = by_mode[mode]
            seq = min(s for s, i in items.items() if i["registrationId"] == rid)
            return final[seq], [a for a in receiver.arrivals if a.rid == rid and a.seq == seq]

        delivery, tries = attempts("500")
        assert delivery["attempts"] == len(tries) >= 4
        assert [t.status for t in tries] == [500] * (len(tries) - 1) + [200]
        gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
        for gap, pause in zip(gaps, PAUSES, strict=False):
            assert gap >= pause * 0.9, f"retried after {gap:.2f}s, the schedule says {pause}s"

        delivery, tries = attempts("429")
        assert [t.status for t in tries] == [429, 200] and delivery["attempts"] == 2
        assert tries[1].at - tries[0].at >= 1.95, "Retry-After (seconds) not honoured"

        delivery, tries = attempts("date")
        assert [t.status for t in tries] == [503, 200] and delivery["attempts"] == 2
        assert tries[1].at - tries[0].at >= 1.5, "Retry-After (an HTTP date) not honoured"

        delivery, tries = attempts("redirect")
        assert [t.status for t in tries] == [307, 200] and delivery["attempts"] == 2
        assert not other, "a redirect was followed"

        delivery, tries = attempts("timeout")
        # The first is not accepted (its answer comes too late, or is still being slept on).
        assert len(tries) == 2 and not tries[0].accepted and tries[1].accepted
        assert delivery["attempts"] == 2
        assert tries[1].at - tries[0].at >= TIMEOUT_SECONDS * 0.95
        for done in final.values():
            assert done["state"] == "succeeded" and done["lastStatusCode"] == 200
            assert done["lastError"] is None and done["nextAttemptAt"] is None

        # Asked again: sent again at once, with the same webhook-id.
        delivery, tries = attempts("429")
        retried = await api.post(f"/v1/deliveries/{delivery['id']}/retry")
        assert retried.status_code == 202, retried.text
        again = await receiver.next_arrival(
            lambda a: a.webhook_id == tries[0].webhook_id and a.attempt == 3
        )
        assert again.data == tries[0].data
        async with asyncio.timeout(WAIT_SECONDS):
            while by_seq(await deliveries(api, created["id"]))[again.seq]["attempts"] != 3:
                await asyncio.sleep(0.05)
        assert by_seq(await deliveries(api, created["id"]))[again.seq]["state"] == "succeeded"


# --- (3) 410 Gone ------------------------------------------------------------------------------


async def test_a_410_disables_the_subscription_until_it_is_enabled_again(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    gone = True

    async def behaviour(arrival: Arrival) -> Answer:
        return (410, {}) if gone else (200, {})

    async with asyncio.timeout(TEST_SECONDS), receiving(behaviour) as receiver:
        after = await latest(api)
        created = await subscribe(api, world, receiver)
        rid = (await sim.create_registration())["id"]
        await callbacks(world, sim, [e["eventId"] for e in await sim.events(rid)])
        async with asyncio.timeout(WAIT_SECONDS):
            while (found := await subscription(api, created["id"]))["enabled"]:
                await asyncio.sleep(0.05)
        assert found["disabledReason"] == "the receiver answered 410"
        # More changes of the registration while disabled: nothing goes out.
        for status in ("IN_PROGRESS", "APPROVED"):
            await move(world, sim, rid, status)
        await asyncio.sleep(1.5)  # the dispatcher's interval: anything due would have gone
        assert [a.status for a in receiver.of({rid})] == [410], "sent after a 410"
        log = await deliveries(api, created["id"])
        assert all(d["state"] == "failed" for d in log), log
        refused = by_seq(log)[receiver.arrivals[0].seq]
        assert refused["attempts"] == 1 and refused["lastStatusCode"] == 410
        assert refused["nextAttemptAt"] is None
        for other in log:
            if other is not refused:
                assert other["attempts"] == 0 and other["lastError"].startswith("not sent")

        # Enabled again: later changes go out; what failed stays failed.
        gone = False
        patched = await api.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": True})
        assert patched.status_code == 200, patched.text
        assert patched.json()["enabled"] is True and patched.json()["disabledReason"] is None
        newest = await latest(api)
        await move(world, sim, rid, "REJECTED")
        items = await all_delivered(api, receiver, created["id"], [rid], newest)
        assert items, "no change after enabling"
        assert_genuine(receiver, await feed(api, after, {rid}), [rid])
        states = [d["state"] for d in await deliveries(api, created["id"])]
        assert states.count("succeeded") == len(items) and "pending" not in states


# --- (4) rotation ------------------------------------------------------------------------------


async def test_after_a_rotation_both_secrets_verify_for_a_day(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    async with asyncio.timeout(TEST_SECONDS), receiving() as receiver:
        after = await latest(api)
        created = await subscribe(api, world, receiver)
        old = created["secret"]
        [rid] = await play(world, sim, [[]])
        await all_delivered(api, receiver, created["id"], [rid], after)
        [before] = receiver.of({rid})
        assert before.headers["webhook-signature"].count("v1,") == 1
        assert before.verified == {old: True}

        rotated_at = datetime.now(UTC)
        response = await api.post(f"/v1/subscriptions/{created['id']}/rotate-secret")
        assert response.status_code == 200, response.text
        rotated = response.json()
        new = rotated["secret"]
        world.secrets.append(new)
        assert new.startswith("whsec_") and new != old
        overlap = when(rotated["previousSecretUntil"]) - rotated_at
        assert timedelta(hours=23, minutes=59) < overlap < timedelta(hours=24, minutes=1)
        receiver.trust(new)

        await move(world, sim, rid, "IN_PROGRESS")
        items = await all_delivered(api, receiver, created["id"], [rid], after)
        after_rotation = [a for a in receiver.of({rid}) if a is not before]
        assert after_rotation
        for arrival in after_rotation:
            signatures = arrival.headers["webhook-signature"].split(" ")
            assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
            assert arrival.verified == {old: True, new: True}, "a secret does not verify"
            assert arrival.own_check == {old: True, new: True}
            stranger = "whsec_" + base64.b64encode(b"s" * 32).decode()
            with pytest.raises(WebhookVerificationError):
                Webhook(stranger).verify(arrival.body, arrival.headers)
        assert_genuine(receiver, items, [rid])

        # A second rotation: the first secret signs no more.
        response = await api.post(f"/v1/subscriptions/{created['id']}/rotate-secret")
        assert response.status_code == 200, response.text
        newest = response.json()["secret"]
        world.secrets.append(newest)
        receiver.trust(newest)
        await move(world, sim, rid, "APPROVED")
        await all_delivered(api, receiver, created["id"], [rid], after)
        last = receiver.of({rid})[-1]
        assert last.headers["webhook-signature"].count("v1,") == 2
        assert last.verified == {old: False, new: True, newest: True}
        missing = await api.post("/v1/subscriptions/sub_nothing/rotate-secret")
        assert missing.status_code == 404


# --- (5) order per registration ------------------------------------------------------------------


async def test_a_registrations_changes_arrive_in_order_despite_failures(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    async def behaviour(arrival: Arrival) -> Answer:
        number = int(arrival.webhook_id.removeprefix("msg_"))
        if arrival.attempt <= 2 and number % 3 == 0:
            return 503, {}
        if arrival.attempt == 1 and number % 3 == 1:
            await asyncio.sleep(0.3)  # answered late: later ones would overtake it
        return 200, {}

    async with asyncio.timeout(TEST_SECONDS), receiving(behaviour) as receiver:
        after = await latest(api)
        created = await subscribe(api, world, receiver)
        lifecycles = [BUSY, BUSY, ["PENDING", "IN_PROGRESS", "REJECTED"], BUSY, BUSY[:3]]
        rids = await play(world, sim, lifecycles, shuffled=True, seed=5)
        items = await all_delivered(api, receiver, created["id"], rids, after)
        assert_genuine(receiver, items, rids)
        assert any(a.status == 503 for a in receiver.arrivals), "no failure was tried"
        seqs = {
            rid: sorted(s for s, i in items.items() if i["registrationId"] == rid) for rid in rids
        }
        assert all(len(s) >= 3 for s in seqs.values()), seqs
        for arrival in receiver.of(set(rids)):
            earlier = [s for s in seqs[arrival.rid] if s < arrival.seq]
            taken_before = {
                a.seq
                for a in receiver.of({arrival.rid})
                if a.accepted and a.answered_at is not None and a.answered_at <= arrival.at
            }
            assert set(earlier) <= taken_before, (
                f"{arrival.rid}: seq {arrival.seq} came before "
                f"{sorted(set(earlier) - taken_before)} was taken"
            )
        # The test made later changes wait: one was written while an earlier one was failing.
        log = sorted(await deliveries(api, created["id"]), key=lambda d: d["seq"])
        held_back = [
            (earlier["seq"], later["seq"])
            for earlier, later in itertools.combinations(log, 2)
            if earlier["registrationId"] == later["registrationId"]
            and earlier["attempts"] > 1
            and when(later["createdAt"]) < when(earlier["updatedAt"])
        ]
        assert held_back, "no change had to wait for an earlier one"


# --- (6) a receiver that is down -----------------------------------------------------------------


async def tried_ones(api: httpx.AsyncClient, subscription_id: str) -> list[dict[str, Any]]:
    """The deliveries tried and still pending (their error is the last attempt's)."""
    log = await deliveries(api, subscription_id)
    return [d for d in log if d["attempts"] and d["state"] == "pending"]


async def test_a_receiver_that_is_down_holds_back_nobody(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook?token={URL_TOKEN}"
    async with asyncio.timeout(TEST_SECONDS), receiving() as good, hanging() as silent:
        after = await latest(api)
        down = await subscribe(api, world, None, url=closed)
        hung = await subscribe(api, world, None, url=silent)
        created = await subscribe(api, world, good)
        started = time.monotonic()
        rids = await play(world, sim, [BUSY] * 4)
        await all_delivered(api, good, created["id"], rids, after, seconds=15)
        # Callbacks keep being processed, and delivered to the one that is up.
        more = await play(world, sim, [BUSY[:2]] * 4, shuffled=True)
        items = await all_delivered(api, good, created["id"], rids + more, after, seconds=15)
        assert_genuine(good, items, rids + more)

        # Both were tried meanwhile, and the log says how each attempt went.
        tried: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(WAIT_SECONDS):
            for failing in (down, hung):
                while not (some := await tried_ones(api, failing["id"])):
                    await asyncio.sleep(0.1)
                tried[failing["id"]] = some
        assert all(
            d["lastError"] == "could not connect" and d["lastStatusCode"] is None
            for d in tried[down["id"]]
        ), tried[down["id"]]
        silence = f"no answer within {TIMEOUT_SECONDS:g} s"
        assert all(d["lastError"] == silence for d in tried[hung["id"]]), tried[hung["id"]]
        assert len(await deliveries(api, down["id"])) == len(await deliveries(api, hung["id"]))

        # Failing for SUBSCRIPTION_DISABLE_AFTER_HOURS: disabled, their deliveries given up.
        async with asyncio.timeout(WAIT_SECONDS):
            for failing in (down, hung):
                while (found := await subscription(api, failing["id"]))["enabled"]:
                    await asyncio.sleep(0.2)
                assert found["disabledReason"] == "every delivery failed for too long"
        assert time.monotonic() - started >= DISABLE_AFTER_HOURS * 3600 * 0.9
        for failing in (down, hung):
            log = await deliveries(api, failing["id"])
            assert {d["state"] for d in log} == {"failed"}
            assert {d["seq"] for d in log if d["registrationId"] in rids + more} == set(items)
        assert (await subscription(api, created["id"]))["enabled"] is True
        # No delivery job broke on the way (several of them disabled the subscription at once).
        crashed = [line for line in world.stack.logs().splitlines() if ":deliver failed" in line]
        assert not crashed, crashed[0]


# --- webhook-ids ---------------------------------------------------------------------------------


async def test_a_webhook_id_is_never_given_to_another_message(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    """Receivers deduplicate by webhook-id: a new message must never carry an old one's, even
    after the subscription that had it was deleted (and the same receiver subscribed again)."""
    async with asyncio.timeout(TEST_SECONDS), receiving() as receiver:
        after = await latest(api)
        first = await subscribe(api, world, receiver)
        rids = await play(world, sim, [["IN_PROGRESS"]] * 2)
        await all_delivered(api, receiver, first["id"], rids, after)
        seen = {a.webhook_id for a in receiver.arrivals}
        assert (await api.delete(f"/v1/subscriptions/{first['id']}")).status_code == 204
        again = await subscribe(api, world, receiver)
        newest = await latest(api)
        more = await play(world, sim, [["IN_PROGRESS"]] * 2)
        await all_delivered(api, receiver, again["id"], more, newest)
        reused = seen & {a.webhook_id for a in receiver.of(set(more))}
        assert not reused, f"webhook-ids given again to new messages: {sorted(reused)}"


# --- (7) a worker killed mid-delivery ------------------------------------------------------------


async def test_a_delivery_cut_short_by_a_dead_worker_is_sent_again(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    stack = world.stack
    receiver: Receiver

    async def behaviour(arrival: Arrival) -> Answer:
        if arrival.attempt == 1 and arrival.data["fromStatus"] is None:
            return await receiver.hold(arrival)
        return 200, {}

    async with asyncio.timeout(TEST_SECONDS), receiving(behaviour) as receiver:
        after = await latest(api)
        created = await subscribe(api, world, receiver)
        rid = (await sim.create_registration(lifecycle=["IN_PROGRESS"]))["id"]
        await callbacks(world, sim, [e["eventId"] for e in await sim.events(rid)])
        held = await receiver.next_arrival(lambda a: a.rid == rid)
        [worker] = stack.delivery_workers
        assert worker.process is not None
        worker.signal(signal.SIGKILL)  # while the request is held open
        killed_at = time.monotonic()
        worker.kill()
        stack.delivery_workers.remove(worker)
        receiver.released.set()
        stack.start_delivery_worker()
        await drain(world, [rid])

        again = await receiver.next_arrival(
            lambda a: a.webhook_id == held.webhook_id and a.attempt == 2, seconds=60
        )
        waited = time.monotonic() - killed_at
        assert again.accepted and again.data == held.data
        items = await all_delivered(api, receiver, created["id"], [rid], after, seconds=60)
        assert_genuine(receiver, items, [rid])
        delivery = by_seq(await deliveries(api, created["id"]))[held.seq]
        assert delivery["state"] == "succeeded" and delivery["attempts"] == 1
        print(f"sent again {waited:.1f}s after the worker died")


# --- (8) filters -------------------------------------------------------------------------------


async def test_filters_deliver_only_the_matching_changes(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    filters: dict[str, dict[str, Any]] = {
        "everything": {},
        "approved": {"statuses": ["APPROVED"]},
        "long numbers": {"registrationTypes": ["LONG_NUMBER"]},
        "decided alphanumeric": {
            "statuses": ["APPROVED", "REJECTED"],
            "registrationTypes": ["ALPHANUMERIC_SENDER_ID"],
        },
        "look-alikes": {"statuses": ["INXQUEUE", "IN%PROGRESS", "PENDINGX"]},
    }

    def wants(name: str) -> Callable[[dict[str, Any]], bool]:
        statuses = filters[name].get("statuses")
        types = filters[name].get("registrationTypes")

        def wanted(item: dict[str, Any]) -> bool:
            return (statuses is None or item["toStatus"] in statuses) and (
                types is None or item["registration"]["registrationType"] in types
            )

        return wanted

    async with contextlib.AsyncExitStack() as exits:
        await exits.enter_async_context(asyncio.timeout(TEST_SECONDS))
        receivers = {name: await exits.enter_async_context(receiving()) for name in filters}
        after = await latest(api)
        created = {
            name: await subscribe(api, world, receivers[name], **fields)
            for name, fields in filters.items()
        }
        assert created["approved"]["statuses"] == ["APPROVED"]
        assert created["long numbers"]["registrationTypes"] == ["LONG_NUMBER"]
        rids = await play(
            world,
            sim,
            [["IN_PROGRESS", "APPROVED"], ["IN_PROGRESS", "REJECTED"], ["PENDING", "APPROVED"], []],
            types=["ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "LONG_NUMBER", None],
        )
        # Everything first: then every delivery of every subscription is written.
        items = await all_delivered(
            api, receivers["everything"], created["everything"]["id"], rids, after
        )
        for name in filters:
            await all_delivered(
                api, receivers[name], created[name]["id"], rids, after, wanted=wants(name)
            )
            got = sorted(a.seq for a in receivers[name].of(set(rids)))
            assert got == sorted(s for s, i in items.items() if wants(name)(i)), name
            assert_genuine(receivers[name], items, rids)
        assert receivers["approved"].of(set(rids)) and receivers["long numbers"].of(set(rids))
        assert not receivers["look-alikes"].of(set(rids))

        # A filter changed: from then on, every status.
        patched = await api.patch(
            f"/v1/subscriptions/{created['approved']['id']}", json={"statuses": None}
        )
        assert patched.status_code == 200 and patched.json()["statuses"] is None
        newest = await latest(api)
        await move(world, sim, rids[3], "IN_PROGRESS")
        moved = await all_delivered(
            api, receivers["approved"], created["approved"]["id"], [rids[3]], newest
        )
        assert {i["toStatus"] for i in moved.values()} == {"IN_PROGRESS"}


async def test_filters_match_values_exactly(
    world: World, api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    """A status filter is the status's exact name: `approved` is not `APPROVED`."""
    async with asyncio.timeout(TEST_SECONDS), receiving() as everything, receiving() as lower:
        after = await latest(api)
        plain = await subscribe(api, world, everything)
        cased = await subscribe(api, world, lower, statuses=["approved"])
        rids = await play(world, sim, [["APPROVED"]])
        await all_delivered(api, everything, plain["id"], rids, after)
        # A change's deliveries are written as it is numbered (the outbox), all of them: with the
        # changes delivered to `plain`, `cased` has every delivery it will ever have for them.
        # None, so none can be sent (no wait for the dispatcher needed).
        assert not await deliveries(api, cased["id"])
        leaked = lower.of(set(rids))
        assert not leaked, "status `approved` took APPROVED changes"


# --- (9) URLs refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "http://user:password-never-echoed@127.0.0.1/hook",
        "http://127.0.0.1@example.com/hook",
        "http://example.com/hook",
        "http://localhost/hook",
        "http://127.0.0.1.example.com/hook",
        "http://127.0.0.2/hook",
        "http://[::1]/hook",
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1/hook#fragment",
        "127.0.0.1/hook",
        "http:///hook",
    ],
)
async def test_urls_the_service_must_not_call_are_refused(
    world: World, api: httpx.AsyncClient, url: str
) -> None:
    response = await api.post("/v1/subscriptions", json={"url": url})
    assert response.status_code == 422, response.text
    assert "password-never-echoed" not in response.text
    assert not (await api.get("/v1/subscriptions")).json()["items"]
    # Nor may a subscription be changed to it.
    created = await subscribe(api, world, None, url="http://127.0.0.1:9/hook")
    patched = await api.patch(f"/v1/subscriptions/{created['id']}", json={"url": url})
    assert patched.status_code == 422, patched.text
    assert (await subscription(api, created["id"]))["url"] == "http://127.0.0.1:9/hook"
