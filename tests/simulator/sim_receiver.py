"""A tiny callback receiver for the simulator's delivery tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response


@dataclass
class Received:
    body: bytes
    signature: str | None


@dataclass
class Receiver:
    """Records every POST to `/callbacks`; answers `status` (per event id in `status_for`)."""

    status: int = 200
    status_for: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(body, request.headers.get("X-Sinch-Signature")))
        for event_id, status in self.status_for.items():
            if event_id.encode() in body:
                return Response(status_code=status)
        return Response(status_code=self.status)
