"""Delivering recorded callback events as Sinch might: late, twice, out of order, or not at all."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from devtools.simulator.signing import SIGNATURE_HEADER, sign

DeliveryOrder = Literal["in_order", "shuffled", "reversed"]


class DeliveryResult(TypedDict):
    """What happened to one POST: the receiver's HTTP status, or None and the error's name."""

    eventId: str
    url: str
    status: int | None
    error: str | None


def plan_delivery(
    events: Sequence[dict[str, Any]],
    *,
    order: DeliveryOrder,
    duplicates: int,
    omit: Sequence[str],
    rng: random.Random,
) -> list[dict[str, Any]]:
    """The events to POST, in POST order. Pure apart from `rng`.

    Omitted ids are dropped first. Each of the `duplicates` extra copies is of an event picked at
    random and lands at a random position after that event's first copy, so "in_order" still means
    that first deliveries come in recorded order.
    """
    left_out = set(omit)
    chosen = [e for e in events if e["eventId"] not in left_out]
    if order == "shuffled":
        rng.shuffle(chosen)
    elif order == "reversed":
        chosen.reverse()
    if not chosen:
        return []
    for _ in range(max(0, duplicates)):
        index = rng.randrange(len(chosen))
        chosen.insert(rng.randint(index + 1, len(chosen)), chosen[index])
    return chosen


async def deliver(
    events: Sequence[dict[str, Any]],
    *,
    url_for: dict[str, str],
    hmac_secret: str,
    concurrency: int = 1,
    delay_seconds: float = 0.0,
    timeout_seconds: float = 10.0,
) -> list[DeliveryResult]:
    """POST each event as compact JSON, signed, to `url_for[eventId]`; answers one result each.

    `concurrency` POSTs may be in flight at once (1: one after the other, in order). A receiver
    that fails or does not answer is reported, never raised.
    """
    if delay_seconds > 0:
        await asyncio.sleep(delay_seconds)
    gate = asyncio.Semaphore(max(1, concurrency))
    async with httpx.AsyncClient(timeout=timeout_seconds) as http:

        async def post(event: dict[str, Any]) -> DeliveryResult:
            event_id = str(event["eventId"])
            url = url_for[event_id]
            body = json.dumps(event, separators=(",", ":")).encode("utf-8")
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(body, hmac_secret),
            }
            async with gate:
                try:
                    response = await http.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    return DeliveryResult(
                        eventId=event_id, url=url, status=None, error=type(exc).__name__
                    )
            return DeliveryResult(
                eventId=event_id, url=url, status=response.status_code, error=None
            )

        if concurrency <= 1:
            return [await post(event) for event in events]
        return list(await asyncio.gather(*(post(event) for event in events)))
