"""A webhook receiver over real HTTP on loopback whose answers a test scripts, the settings that
let the service deliver to it, and the worker's own sending loop run once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_network

from fastapi import FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.signal import ChangeSignal
from app.core.jobs import create_redis
from app.core.settings import Settings
from app.subscriptions.sender import Sending, deliver_subscription
from tests.conftest import make_settings
from tests.support.servers import serve

LOOPBACK = [ip_network("127.0.0.0/8")]


def receiving_settings(database_url: str, redis_url: str) -> Settings:
    """The service allowed to deliver to loopback (`127.0.0.1`), retrying after 0.01 s."""
    return make_settings(
        database_url,
        redis_url,
        subscription_allowed_hosts=["127.0.0.1"],
        subscription_allowed_networks=LOOPBACK,
        delivery_timeout_seconds=5,
        delivery_retry_seconds=[0.01],
    )


@dataclass
class Receiver:
    """Answers each request with the next of `answers` (then 200 "ok"), and keeps each request's
    headers and body."""

    answers: list[tuple[int, str]]
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        self.got.append((dict(request.headers), await request.body()))
        status, text = self.answers.pop(0) if self.answers else (200, "ok")
        return Response(status_code=status, content=text.encode(), media_type="text/plain")


@contextlib.asynccontextmanager
async def receiving(answers: list[tuple[int, str]] | None = None) -> AsyncIterator[Receiver]:
    found = Receiver(answers=list(answers or []))
    app = FastAPI()
    app.add_api_route("/hook", found.hook, methods=["POST"])
    async with serve(app) as base_url:
        found.url = f"{base_url}/hook"
        yield found


async def send_all(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], subscription_id: str
) -> None:
    """Run the `deliver` job's loop for one subscription until nothing is due (bounded)."""
    redis = create_redis(settings)
    try:
        sending = Sending(sessionmaker, settings, ChangeSignal(redis))
        await deliver_subscription(sending, subscription_id, budget_seconds=10)
    finally:
        await redis.aclose()
