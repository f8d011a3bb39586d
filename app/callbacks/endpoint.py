"""`POST /callbacks/sinch/{projectId}/registrations` (and `POST /callbacks/sinch/registrations`,
the settings-defined project's): verify with that project's secrets, keep, answer. HTTP only:
nothing is processed.

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
from typing import Any

from starlette.types import Receive, Scope, Send

from app.callbacks.secrets import PROBE_PREFIX, AcceptedSecrets, probe_answer_body, read_probe
from app.callbacks.signature import SIGNATURE_HEADER, matching_secret
from app.callbacks.writer import InboxWriter
from app.core.db import utcnow
from app.events.parsing import dedup_key, parse_callback
from app.events.repository import NewCallback
from app.web.asgi import (
    Answer,
    BodyTooLarge,
    ClientGone,
    before_body,
    bytes_answer,
    closing,
    declared_length,
    problem_answer,
    read_capped_body,
)
from app.web.deps import Resources

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/sinch/registrations"
"""The settings-defined project's callback URL (as before projects existed)."""
PROJECT_CALLBACK_PATH = "/callbacks/sinch/{projectId}/registrations"
"""Any project's callback URL: the project in the path decides which secrets verify the body."""
_PREFIX = "/callbacks/sinch/"
_SUFFIX = "/registrations"


def callback_project(path: str) -> str | None:
    """The project a callback POSTed to `path` is for: "" for `CALLBACK_PATH` (the
    settings-defined project), the `{projectId}` segment for `PROJECT_CALLBACK_PATH`, None when
    `path` is neither (then it is not the callback endpoint's). Two string tests on the hot
    path; a project id holding "/" is no project's."""
    if path == CALLBACK_PATH:
        return ""
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        project_id = path[len(_PREFIX) : -len(_SUFFIX)]
        if project_id and "/" not in project_id:
            return project_id
    return None


def project_callback_path(project_id: str) -> str:
    """Project `project_id`'s callback path (`PROJECT_CALLBACK_PATH` filled in)."""
    return f"{_PREFIX}{project_id}{_SUFFIX}"


COMMIT_TIMEOUT_SECONDS = 15.0

# Headers that may carry someone's credentials are never kept; the signature header is kept (it is
# a MAC of the body, not a secret) so that a kept event can be re-verified.
_UNKEPT_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_SIGNATURE = SIGNATURE_HEADER.lower().encode("latin-1")


class ReadDeadlines:
    """Cuts off body reads that outlast their deadline, for two dict operations per read.

    uvicorn bounds neither how long headers nor how long a body may take to arrive, so a client
    trickling its body would hold its connection and its request open for ever. `asyncio.timeout`
    per request would bound it, but it arms and disarms a loop timer each time, which costs several
    microseconds on the hot path; instead the reads in progress are kept in a dict, and while any
    is, one timer looks at them every `tick` seconds and cancels the task of each that is overdue.
    A read is so cut off between its deadline and one tick later.

    Use: `begin(task, timeout)` before the read, `end(task)` after it (in a `finally`), and on
    `CancelledError` during the read ask `cut_off(task)`: True means the cancellation was this
    deadline's, and has been taken back; False means it came from elsewhere and must propagate.
    """

    def __init__(self) -> None:
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tick = 1.0

    def begin(self, task: asyncio.Task[Any], timeout: float) -> None:
        loop = task.get_loop()
        self._reads[task] = loop.time() + timeout
        if self._timer is None or self._loop is not loop:
            # First read since the reads ran out (or on a new loop, as in tests): arm the timer.
            self._loop = loop
            self._tick = min(max(timeout / 4, 0.01), 1.0)
            self._timer = loop.call_later(self._tick, self._look)

    def end(self, task: asyncio.Task[Any]) -> None:
        del self._reads[task]

    def cut_off(self, task: asyncio.Task[Any]) -> bool:
        if task not in self._cut:
            return False
        self._cut.discard(task)
        # Another cancellation (a server shutting down) asked meanwhile must still happen.
        return task.uncancel() == 0

    def _look(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, deadline in list(self._reads.items()):
            if deadline <= now and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._timer = self._loop.call_later(self._tick, self._look) if self._reads else None


# Sent when the body did not arrive in time; the connection is closed, as what is left of the body
# may still trickle in and must not be read as a next request.
TOO_SLOW = closing(
    problem_answer(408, "The body did not arrive in time; send it again, whole and faster.")
)

# Sent for a body in an encoding this endpoint does not decode (gzip, br, ...): its bytes are not
# what was signed, and kept they would be garbage. The body is not read: the connection is closed.
UNSUPPORTED_ENCODING = closing(
    problem_answer(
        415,
        "The body has a Content-Encoding this endpoint does not decode; send it unencoded "
        "(identity).",
    )
)


def probe_answer(nonce: str, instance_id: str) -> Answer:
    """The answer to a secret rotation's probe (app/callbacks/secrets.py): who verified it."""
    return bytes_answer(200, "application/json", probe_answer_body(nonce, instance_id))


UNKNOWN_PROJECT = problem_answer(
    404, "No such project here: its callbacks are not accepted (nothing was kept)."
)
"""Sent, body unread (`before_body`: the connection is closed unless the body declared a length
within the cap), for a project this deployment does not serve (never added, or removed): nothing
is kept, nothing is verified with another project's secrets."""

OK = Answer(
    {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]},
    {"type": "http.response.body", "body": b""},
)


class CallbackEndpoint:
    """The endpoint, as an ASGI app; the lifespan's `Resources`, `callback_secrets` and `inbox`
    come from the scope's state.

    A body must arrive whole within `callback_read_timeout_seconds`; one that does not is answered
    408 and the connection closed, and one whose client leaves before it is complete gets no
    answer. A body with a `Content-Encoding` other than `identity` is answered 415 unread. None of
    these is kept. A POST to the callback path of a project this process does not know (within
    `REFRESH_SECONDS` of its adding or removal: app/callbacks/secrets.py) is answered 404 unread.
    A signed secret rotation probe is answered with this process's instance id and
    not kept either.
    """

    def __init__(self) -> None:
        self._deadlines = ReadDeadlines()

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
        state = scope["state"]
        resources: Resources = state["resources"]
        accepted: AcceptedSecrets = state["callback_secrets"]
        inbox: InboxWriter = state["inbox"]
        settings = resources.settings
        counted = resources.metrics.callback_results
        project_id = callback_project(scope["path"]) or accepted.settings_project_id
        # One dict lookup: this project's secrets, and no other project's, verify the body.
        secrets = accepted.by_project.get(project_id)
        if secrets is None:
            counted["unknown_project"].inc()
            limit = settings.callback_max_body_bytes
            return before_body(UNKNOWN_PROJECT, declared_length(scope["headers"]), limit)
        if not secrets:
            counted["unavailable"].inc()
            return problem_answer(
                503, "Callbacks cannot be verified: no callback secret is configured."
            )

        headers: dict[str, str] = {}
        signature: str | None = None
        declared: int | None = None
        encoded = False
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if raw_name == _SIGNATURE:
                signature = value
            elif raw_name == b"content-length" and value.isdigit():
                declared = int(value)
            elif raw_name == b"content-encoding" and value.strip().lower() not in ("", "identity"):
                encoded = True
            if name not in _UNKEPT_HEADERS:
                headers[name] = value
        if encoded:
            counted["unsupported_encoding"].inc()
            return UNSUPPORTED_ENCODING

        limit = settings.callback_max_body_bytes
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.begin(task, settings.callback_read_timeout_seconds)
        try:
            body = await read_capped_body(receive, declared, limit)
        except ClientGone:  # the caller left before sending its body: nobody to answer
            return None
        except BodyTooLarge:
            counted["too_large"].inc()
            return problem_answer(413, f"The body exceeds {limit} bytes.")
        except asyncio.CancelledError:
            if not self._deadlines.cut_off(task):
                raise
            counted["too_slow"].inc()
            return TOO_SLOW
        finally:
            self._deadlines.end(task)

        secret_index = matching_secret(body, signature, secrets)
        if secret_index is None:
            counted["bad_signature"].inc()
            return problem_answer(401, "The callback's signature could not be verified.")
        if body.startswith(PROBE_PREFIX) and (nonce := read_probe(body)) is not None:
            counted["probe"].inc()
            return probe_answer(nonce, accepted.instance_id)
        resources.metrics.secret_matched(secret_index)

        fields = parse_callback(body)
        client = scope.get("client")
        callback = NewCallback(
            project_id=project_id,
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
                stored = await inbox.store(callback)
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
        "408": {"description": "Body not received in full within CALLBACK_READ_TIMEOUT_SECONDS."},
        "404": {"description": "No such project (never added, or removed): nothing kept."},
        "413": {"description": "Body larger than CALLBACK_MAX_BODY_BYTES."},
        "415": {"description": "A Content-Encoding other than identity: not read, not kept."},
        "503": {"description": "No callback secret configured, or the database cannot commit."},
    },
}

PROJECT_OPENAPI_OPERATION: dict[str, Any] = {
    **OPENAPI_OPERATION,
    "summary": "Receive a Sinch registration status callback for one project",
    "operationId": "receive_project_callback",
    "parameters": [
        {
            "name": "projectId",
            "in": "path",
            "required": True,
            "description": "The Sinch project the callback is for: its secrets alone verify it.",
            "schema": {"type": "string"},
        },
        *OPENAPI_OPERATION["parameters"],
    ],
}
