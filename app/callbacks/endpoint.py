"""`POST /callbacks/sinch/registrations`: verify, keep, answer. HTTP only: nothing is processed.

The endpoint is the service's hot path (every Sinch callback lands here, possibly in bursts), so it
is a plain ASGI app rather than a FastAPI route: it reads the scope and the body itself and writes
its answer in two `send` calls. FastAPI's per-request machinery (dependency solving, request and
response objects, exception middleware) cost more CPU than verifying and keeping the callback; see
the README's performance section. The route is still described in the OpenAPI document
(`OPENAPI_OPERATION`), and its error answers are the same problem documents as everywhere else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from starlette.types import Message, Receive, Scope, Send

from app.callbacks.inbox import NewCallback
from app.callbacks.parsing import dedup_key, parse_callback
from app.callbacks.signature import SIGNATURE_HEADER, matching_secret
from app.db import utcnow
from app.deps import Resources
from app.problems import PROBLEM_MEDIA_TYPE, problem_body

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/sinch/registrations"
COMMIT_TIMEOUT_SECONDS = 15.0

# Headers that may carry someone's credentials are never kept; the signature header is kept (it is
# a MAC of the body, not a secret) so that a kept event can be re-verified.
_UNKEPT_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_SIGNATURE = SIGNATURE_HEADER.lower().encode("latin-1")


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_capped_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The raw body, read chunk by chunk; `BodyTooLarge` as soon as more than `limit` bytes came.

    A declared `Content-Length` over the limit is refused before reading anything; the bytes
    actually read are counted too, so a chunked or lying body is cut off just past the limit.
    `ClientGone` when the caller disconnects before the body is complete.
    """
    if declared is not None and declared > limit:
        raise BodyTooLarge
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the usual case: the whole body in one message
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        if size > limit:
            raise BodyTooLarge
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge
    return b"".join(chunks)


class Answer(NamedTuple):
    """An answer as its two ASGI messages."""

    start: Message
    body: Message


def problem_answer(status: int, detail: str) -> Answer:
    body = problem_body(status, detail)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    return Answer(
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


OK = Answer(
    {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]},
    {"type": "http.response.body", "body": b""},
)


class CallbackEndpoint:
    """The endpoint, as an ASGI app; the lifespan's `Resources` come from the scope's state."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.handle(scope, receive)
        except Exception as exc:
            # This app runs outside FastAPI's middleware (see app.main.ServiceAPI), so it answers
            # its own unexpected errors the way the rest of the API does: logged, and a problem.
            log.error(
                "unhandled error on the callback endpoint: %s", type(exc).__name__, exc_info=exc
            )
            answer = problem_answer(500, "An unexpected error occurred; it has been logged.")
        if answer is not None:
            await send(answer.start)
            await send(answer.body)

    async def handle(self, scope: Scope, receive: Receive) -> Answer | None:
        """Verify, keep and decide the answer; None when the caller left before its body came."""
        resources: Resources = scope["state"]["resources"]
        settings = resources.settings
        counted = resources.metrics.callback_results
        if not settings.sinch_callback_secrets:
            counted["unavailable"].inc()
            return problem_answer(
                503, "Callbacks cannot be verified: no callback secret is configured."
            )

        headers: dict[str, str] = {}
        signature: str | None = None
        declared: int | None = None
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if raw_name == _SIGNATURE:
                signature = value
            elif raw_name == b"content-length" and value.isdigit():
                declared = int(value)
            if name not in _UNKEPT_HEADERS:
                headers[name] = value

        limit = settings.callback_max_body_bytes
        try:
            body = await read_capped_body(receive, declared, limit)
        except ClientGone:  # the caller left before sending its body: nobody to answer
            return None
        except BodyTooLarge:
            counted["too_large"].inc()
            return problem_answer(413, f"The body exceeds {limit} bytes.")

        secret_index = matching_secret(body, signature, settings.sinch_callback_secrets)
        if secret_index is None:
            counted["bad_signature"].inc()
            return problem_answer(401, "The callback's signature could not be verified.")
        resources.metrics.callback_secret_matches.labels(str(secret_index)).inc()

        fields = parse_callback(body)
        client = scope.get("client")
        callback = NewCallback(
            dedup_key=dedup_key(fields, body),
            event_id=fields.event_id,
            registration_id=fields.registration_id,
            body=body,
            headers=headers,
            peer=client[0] if client else None,
            secret_index=secret_index,
            received_at=utcnow(),
        )
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                stored = await resources.inbox.store(callback)
        except Exception as exc:
            counted["unavailable"].inc()
            log.warning(
                "callback not kept: database unavailable (%s)",
                type(exc).__name__,
                extra={"event_id": fields.event_id, "registration_id": fields.registration_id},
            )
            return problem_answer(503, "The callback could not be stored; retry later.")

        result = "duplicate" if stored.duplicate else "accepted"
        counted[result].inc()
        log.info(
            "callback %s",
            result,
            extra={
                "event_id": fields.event_id,
                "registration_id": fields.registration_id,
                "row_id": stored.row_id,
            },
        )
        return OK


OPENAPI_OPERATION: dict[str, Any] = {
    "tags": ["callbacks"],
    "summary": "Receive a Sinch registration status callback",
    "operationId": "receive_callback",
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
    "responses": {
        "200": {"description": "Kept durably (or already kept)."},
        "401": {"description": "Missing or wrong signature."},
        "413": {"description": "Body larger than CALLBACK_MAX_BODY_BYTES."},
        "503": {"description": "No callback secret configured, or the database cannot commit."},
    },
}
