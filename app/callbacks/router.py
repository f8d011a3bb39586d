"""`POST /callbacks/sinch/registrations`: verify, keep, answer. HTTP only: nothing is processed."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from app.callbacks.inbox import NewCallback
from app.callbacks.parsing import dedup_key, parse_callback
from app.callbacks.signature import SIGNATURE_HEADER, matching_secret
from app.db import utcnow
from app.deps import Resources
from app.problems import ProblemError

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])

# Headers that may carry someone's credentials are never kept; the signature header is kept (it is
# a MAC of the body, not a secret) so that a kept event can be re-verified.
_UNKEPT_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
COMMIT_TIMEOUT_SECONDS = 15.0


class BodyTooLarge(Exception):
    pass


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The raw body, read chunk by chunk; `BodyTooLarge` as soon as more than `limit` bytes came.

    A declared `Content-Length` over the limit is refused before reading anything; the bytes
    actually read are counted too, so a chunked or lying body is cut off just past the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/callbacks/sinch/registrations",
    summary="Receive a Sinch registration status callback",
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "Hex HMAC-SHA1 of the raw body, keyed with the callback secret.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": "Sinch's event, kept byte for byte (any body is kept once signed).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
    responses={
        200: {"description": "Kept durably (or already kept)."},
        400: {"description": "The caller went away before sending its body."},
        401: {"description": "Missing or wrong signature."},
        413: {"description": "Body larger than CALLBACK_MAX_BODY_BYTES."},
        503: {"description": "No callback secret configured, or the database cannot commit."},
    },
)
async def receive_callback(request: Request) -> Response:
    # The hot path of the service: it reads its resources and header straight off the request
    # instead of through FastAPI parameters, whose per-request solving costs more than the rest.
    resources: Resources = request.state.resources
    signature = request.headers.get(SIGNATURE_HEADER)
    settings = resources.settings
    metrics = resources.metrics
    if not settings.sinch_callback_secrets:
        metrics.callbacks.labels("unavailable").inc()
        raise ProblemError(503, "Callbacks cannot be verified: no callback secret is configured.")
    try:
        body = await read_capped_body(request, settings.callback_max_body_bytes)
    except ClientDisconnect:  # the caller left before sending its body: nobody to answer
        return Response(status_code=400)
    except BodyTooLarge:
        metrics.callbacks.labels("too_large").inc()
        raise ProblemError(
            413, f"The body exceeds {settings.callback_max_body_bytes} bytes."
        ) from None

    secret_index = matching_secret(body, signature, settings.sinch_callback_secrets)
    if secret_index is None:
        metrics.callbacks.labels("bad_signature").inc()
        raise ProblemError(401, "The callback's signature could not be verified.")
    metrics.callback_secret_matches.labels(str(secret_index)).inc()

    fields = parse_callback(body)
    callback = NewCallback(
        dedup_key=dedup_key(fields, body),
        event_id=fields.event_id,
        registration_id=fields.registration_id,
        body=body,
        headers={
            name: value for name, value in request.headers.items() if name not in _UNKEPT_HEADERS
        },
        peer=request.client.host if request.client else None,
        secret_index=secret_index,
        received_at=utcnow(),
    )
    try:
        async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
            stored = await resources.inbox.store(callback)
    except Exception as exc:
        metrics.callbacks.labels("unavailable").inc()
        log.warning(
            "callback not kept: database unavailable (%s)",
            type(exc).__name__,
            extra={"event_id": fields.event_id, "registration_id": fields.registration_id},
        )
        raise ProblemError(503, "The callback could not be stored; retry later.") from None

    result = "duplicate" if stored.duplicate else "accepted"
    metrics.callbacks.labels(result).inc()
    log.info(
        "callback %s",
        result,
        extra={
            "event_id": fields.event_id,
            "registration_id": fields.registration_id,
            "row_id": stored.row_id,
        },
    )
    return Response(status_code=200)
