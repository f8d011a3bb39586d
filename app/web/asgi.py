"""Plain ASGI pieces for the endpoints that read their own body and write their own answer (the
callback endpoint, `BodyGuard`): a body read up to a cap, an answer as its two messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from starlette.types import Message, Receive

from app.core.problems import PROBLEM_MEDIA_TYPE, problem_body


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


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's `Content-Length` (None when it declares none, or no valid one)."""
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


class Answer(NamedTuple):
    """An answer as its two ASGI messages."""

    start: Message
    body: Message


def bytes_answer(status: int, media_type: str, body: bytes) -> Answer:
    """`body` as an answer of `media_type`, with its length."""
    headers = [
        (b"content-type", media_type.encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    return Answer(
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def problem_answer(status: int, detail: str) -> Answer:
    return bytes_answer(status, PROBLEM_MEDIA_TYPE, problem_body(status, detail))


def closing(answer: Answer) -> Answer:
    """`answer`, closing the connection after it (the rest of the request is not read)."""
    headers = [*answer.start["headers"], (b"connection", b"close")]
    return Answer({**answer.start, "headers": headers}, answer.body)


def before_body(answer: Answer, declared: int | None, limit: int) -> Answer:
    """`answer`, sent before the request's body was read: kept alive when the body declares a
    length within `limit`, else `closing`.

    Closing a connection whose client is still sending makes the kernel reset it, and a reset can
    destroy the answer before the client reads it: the caller would see a broken connection
    instead of, say, its 401. A body of a declared length within the limit is cheap to let
    through: uvicorn reads and drops what is left of it once the answer is complete (the read
    deadlines of app/web/edge.py still apply). A larger or streamed body is not read: closed.
    """
    return answer if declared is not None and declared <= limit else closing(answer)
