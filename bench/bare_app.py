"""The ceiling for bench/callbacks.py: FastAPI with one POST route that reads the body, answers 200.

Served exactly like the real service (`uvicorn bench.bare_app:app`), on the callback's
path, so the same wrk script drives both.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/callbacks/sinch/registrations")
async def receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)
