"""The command line: `python -m app <command>` (also installed as `sinch-registrations`).

A door to the same functions the API and the worker use (reconciliation, replay, pruning), never a
second implementation. Each command is a function taking the parsed arguments and answering the
exit status; a failure the user can act on is one line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets as secrets_module
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only for annotations: a command imports what it uses when it runs, so that `--help` and
    # the simple commands start without SQLAlchemy, FastAPI, arq (tests/test_cli_startup.py).
    from arq import ArqRedis
    from pydantic import SecretStr
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.core.settings import Settings
    from app.sinch.client import SinchClient

ROOT = Path(__file__).resolve().parents[1]
CALLBACK_PATH = "/callbacks/sinch/registrations"


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1 (or `status`)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def load_settings() -> Settings:
    from pydantic import ValidationError

    from app.core.settings import Settings, describe_refusal

    try:
        return Settings()
    except ValidationError as exc:
        raise CommandError(f"configuration refused: {describe_refusal(exc)}", status=2) from None


def _require_sinch(settings: Settings) -> None:
    if not settings.sinch_credentials_configured:
        raise CommandError(
            "Sinch credentials are not configured (SINCH_PROJECT_ID, SINCH_KEY_ID, "
            "SINCH_KEY_SECRET)",
            status=2,
        )


class Setup:
    """What a command works with, built by `opened` from the settings: the database's sessions,
    Redis, the Sinch client. Asking for a piece the command did not open is a programming error."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        redis: ArqRedis | None,
        sinch: SinchClient | None,
    ) -> None:
        self.settings = settings
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._sinch = sinch

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        assert self._sessionmaker is not None, "opened without database=True"
        return self._sessionmaker

    @property
    def redis(self) -> ArqRedis:
        assert self._redis is not None, "opened without redis=True"
        return self._redis

    @property
    def sinch(self) -> SinchClient:
        assert self._sinch is not None, "opened without sinch=True"
        return self._sinch


@contextlib.asynccontextmanager
async def opened(
    settings: Settings,
    *,
    database: bool = True,
    redis: bool = False,
    sinch: bool = False,
    project: bool = False,
    project_id: str | None = None,
) -> AsyncIterator[Setup]:
    """The one setup of every command that touches the data: an engine (lazy: nothing connects
    before the first query), a Redis client (lazy too), a Sinch client (refused with status 2
    when the credentials are not configured), each only when asked for; all closed when the
    block ends, in reverse order. `project`: the command writes rows of the settings' project,
    so it makes sure of that project first, as a starting API or worker does
    (app/projects/service.py). `project_id` (`--project`): the Sinch client is that project's,
    with its own credentials (refused with status 2 when it has none); the settings' when None."""
    from app.core.db import create_engine, create_sessionmaker
    from app.core.jobs import create_redis

    other_project = project_id not in (None, settings.settings_project_id)
    if sinch and not other_project:
        _require_sinch(settings)
    async with contextlib.AsyncExitStack() as stack:
        sessionmaker = None
        if database:
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            sessionmaker = create_sessionmaker(engine)
            if project:
                from app.core.db import utcnow
                from app.projects.service import ensure_settings_project

                async with sessionmaker.begin() as session:
                    await ensure_settings_project(session, settings, utcnow())
        redis_client = None
        if redis:
            redis_client = create_redis(settings)
            stack.push_async_callback(redis_client.aclose)
        sinch_client = None
        if sinch:
            from app.sinch.client import SinchClient, create_http_client

            http = await stack.enter_async_context(create_http_client(settings))
            if project_id is not None and other_project and sessionmaker is not None:
                from app.projects.clients import ProjectClients

                sinch_client = await ProjectClients(settings, http, sessionmaker).client(project_id)
                if sinch_client is None:
                    raise CommandError(
                        f"project {project_id} does not exist or has no usable Sinch key"
                        " (see `project show`; PROJECT_SECRETS_KEY opens the stored keys)",
                        status=2,
                    )
            else:
                sinch_client = SinchClient.from_settings(settings, http)
        yield Setup(settings, sessionmaker, redis_client, sinch_client)


# --- processes ------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.web.edge import PROTOCOL

    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers, http=PROTOCOL)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    """`worker` and `delivery-worker` (`args.deliveries`): one arq worker, as `arq
    app.worker.WorkerSettings` (or `DeliveryWorkerSettings`) runs it."""
    from arq.worker import run_worker

    from app.core.logs import configure_logging
    from app.worker import use_uvloop
    from app.worker.settings import build_delivery_worker_settings, build_worker_settings

    settings = load_settings()
    # As arq's command does with our settings: the service's log format from arq's first line on.
    use_uvloop(lambda: configure_logging(settings))
    build = build_delivery_worker_settings if args.deliveries else build_worker_settings
    run_worker(build(settings))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    settings = load_settings()
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    try:
        command.upgrade(config, args.revision)
    except Exception as exc:
        from alembic.util import CommandError as AlembicCommandError

        if isinstance(exc, AlembicCommandError):
            raise CommandError(f"migrate: {_first_line(exc)}", status=2) from None
        raise CommandError(
            f"the database at {settings.safe_database_url()} (DATABASE_URL) cannot be upgraded: "
            f"{type(exc).__name__}: {_first_line(exc)}; start it or fix DATABASE_URL"
        ) from None
    return 0


def token_command() -> str:
    """A shell line that sets TOKEN to the first internal API token, without printing it: from
    the environment when it holds one, else from ./.env (as `make run` wrote it)."""
    if os.environ.get("INTERNAL_API_TOKENS", "").strip():
        return 'TOKEN="${INTERNAL_API_TOKENS%%,*}"'
    return "TOKEN=$(sed -n 's/^INTERNAL_API_TOKENS=\\([^,]*\\).*/\\1/p' .env)"


# --- operations on the data -----------------------------------------------------------------------


async def _reconcile(args: argparse.Namespace) -> int:
    from app.changes.sequencer import number_and_publish
    from app.registrations.reconcile import reconcile

    async with opened(
        load_settings(), redis=True, sinch=True, project=True, project_id=args.project
    ) as setup:
        report = await reconcile(setup.sessionmaker, setup.sinch, full=args.full)
        # The changes it recorded go on the feed now (a worker's sequencer would, within 2 s).
        await number_and_publish(setup.sessionmaker, setup.redis)
    since = report.since.isoformat() if report.since else "the start"
    print(f"reconciled: {report.seen} registrations seen, {report.changed} changed (since {since})")
    return 0


async def _catalog_refresh(args: argparse.Namespace) -> int:
    from app.catalog import service as catalog
    from app.changes.sequencer import number_and_publish
    from app.core.db import utcnow
    from app.projects.clients import ProjectClients
    from app.sinch.client import create_http_client
    from app.sinch.errors import SinchError

    settings = load_settings()
    failed = 0
    async with (
        opened(settings, redis=True, project=True) as setup,
        create_http_client(settings) as http,
    ):
        clients = ProjectClients(settings, http, setup.sessionmaker)
        if args.project is not None:
            one = await clients.client(args.project)
            if one is None:
                raise CommandError(
                    f"project {args.project} does not exist or has no usable Sinch key"
                    " (see `project show`)",
                    status=2,
                )
            chosen = [one]
        else:
            chosen = await clients.every()
            if not chosen:
                raise CommandError("no project has Sinch credentials (see `project list`)", 2)
        for sinch in chosen:
            try:
                report = await catalog.refresh(setup.sessionmaker, sinch, now=utcnow())
            except SinchError as exc:
                print(f"{sinch.project_id}: not refreshed, kept as it was: {exc}", file=sys.stderr)
                failed += 1
                continue
            changed = f" ({', '.join(report.changed)})" if report.changed else ""
            print(
                f"{sinch.project_id}: {report.markets} markets, {report.policies} policies, "
                f"{len(report.changed)} changed{changed}, {report.announced} changes on the feed"
            )
        # The changes it recorded go on the feed now (a worker's sequencer would, within 2 s).
        await number_and_publish(setup.sessionmaker, setup.redis)
    return 1 if failed else 0


def change_line(change: Any) -> str:
    """One change of the feed for a person: seq, when, which, what moved, and why."""
    registration = change.registration
    moved = f"{change.from_status or '(new)'} -> {change.to_status}"
    facts = [
        f"market {registration.market_code}" if registration.market_code else "",
        f"sender {','.join(registration.sender_ids)}" if registration.sender_ids else "",
        f"reason {registration.reason.message!r}" if registration.reason else "",
    ]
    return "  ".join(
        [
            f"{change.seq:>8}",
            change.recorded_at.isoformat(timespec="seconds"),
            change.registration_id,
            f"{moved:<32}",
            f"{change.kind.value}/{change.source.value}",
            *[fact for fact in facts if fact],
        ]
    )


async def _changes(args: argparse.Namespace) -> int:
    from app.changes import queries
    from app.changes import service as changes_service
    from app.changes.schemas import ChangeOut
    from app.changes.signal import ChangeSignal

    async with opened(load_settings(), redis=True) as setup:
        sessions = setup.sessionmaker
        signal = ChangeSignal(setup.redis)
        try:
            async with sessions() as session:
                bounds = await queries.bounds(session)
            if args.all:
                after = (bounds.oldest or 1) - 1
            else:  # the last few, then (with --follow) what comes
                after = max((bounds.newest or 0) - args.last, (bounds.oldest or 1) - 1)
            if not args.follow:
                while rows := await changes_service.read(sessions, after=after, limit=1000):
                    changes_service.check_contiguous(after, rows)
                    for row in rows:
                        print(change_line(ChangeOut.of(row)), flush=True)
                    after = rows[-1].seq or after
                return 0
            signal.start()
            feed = changes_service.FeedReader(sessions)
            async for _, _, item in changes_service.follow(feed, signal, after=after):
                print(change_line(ChangeOut.model_validate_json(item)), flush=True)
        except changes_service.FeedGone:
            raise CommandError(
                "the changes after this position were pruned (CHANGE_RETENTION_DAYS): start again"
            ) from None
        finally:
            await signal.stop()
    return 0


async def _deliveries_list(args: argparse.Namespace) -> int:
    from app.core.models import DeliveryState
    from app.subscriptions import repository as subscriptions_repository
    from app.subscriptions import service as subscriptions_service

    state = DeliveryState(args.state) if args.state else None
    async with opened(load_settings()) as setup, setup.sessionmaker() as session:
        named = (
            [args.subscription]
            if args.subscription
            else [known.id for known in await subscriptions_repository.every(session)]
        )
        # Each subscription's newest, through the API's own listing; then the newest of all.
        listed = [
            (subscription_id, delivery)
            for subscription_id in named
            for delivery in await subscriptions_service.deliveries(
                session, subscription_id, before=None, limit=args.limit, state=state
            )
        ]
    listed.sort(key=lambda pair: pair[1].id, reverse=True)
    for subscription_id, delivery in listed[: args.limit]:
        when = (
            delivery.next_attempt_at.isoformat(timespec="seconds")
            if delivery.next_attempt_at
            else "-"
        )
        print(
            f"{delivery.id:>8}  {subscription_id}  seq {delivery.seq or '-':>6}  "
            f"{delivery.state.value:<9}  attempts {delivery.attempts:<3}  "
            f"last {delivery.last_status_code or '-'}  next {when}  {delivery.last_error or ''}"
        )
    return 0


async def _deliveries_retry(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.subscriptions import service as subscriptions_service

    async with opened(load_settings(), redis=True) as setup:
        unknown = await subscriptions_service.retry_deliveries(
            setup.sessionmaker, setup.redis, args.delivery_ids, actor=Actor.command_line()
        )
    done = len(args.delivery_ids) - len(unknown)
    print(f"{done} deliveries will be sent again now")
    if unknown:
        raise CommandError(f"no such delivery: {', '.join(map(str, unknown))}")
    return 0


async def _replay(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.events import service as events_service

    if not args.event_ids and not args.failed:
        raise CommandError("replay needs EVENT_ID ... or --failed", status=2)
    settings = load_settings()
    if not settings.sinch_credentials_configured:
        print(
            "warning: Sinch credentials are not configured: events that need a GET will fail "
            "again (failed:not_configured)",
            file=sys.stderr,
        )
    async with opened(settings, redis=True) as setup:
        report = await events_service.replay(
            setup.sessionmaker, setup.redis, list(args.event_ids), actor=Actor.command_line()
        )
        if args.failed:
            failed = await events_service.replay_failed(
                setup.sessionmaker, setup.redis, actor=Actor.command_line()
            )
            report = events_service.Replayed(
                replayed=report.replayed + failed.replayed,
                unknown=report.unknown + failed.unknown,
                not_enqueued=report.not_enqueued + failed.not_enqueued,
            )
    print(f"replaying {len(report.replayed)} events")
    if report.not_enqueued:
        print(
            f"warning: Redis refused {report.not_enqueued} of them; the worker's sweep enqueues "
            "them once Redis answers",
            file=sys.stderr,
        )
    if report.unknown:
        raise CommandError(f"unknown event ids: {', '.join(map(str, report.unknown))}")
    return 0


async def _prune(args: argparse.Namespace) -> int:
    from app.core.db import utcnow
    from app.core.models import EventState
    from app.events import service as events_service

    settings = load_settings()
    days = args.days if args.days is not None else settings.event_retention_days
    states = [EventState(state) for state in (args.state or [EventState.PROCESSED])]
    cutoff = utcnow() - timedelta(days=days)
    async with opened(settings) as setup:
        total, _ = await events_service.prune(
            setup.sessionmaker, processed_before=cutoff, states=states
        )
    names = ", ".join(state.value for state in states)
    print(f"pruned {total} events ({names}) processed before {cutoff.isoformat()}")
    return 0


# --- registrations written at Sinch ---------------------------------------------------------------


def _json_file(path: str) -> dict[str, Any]:
    """The JSON object in file `path` (`-`: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", status=2) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{path} is not JSON: {exc}", status=2) from None
    if not isinstance(body, dict):
        raise CommandError(f"{path} holds no JSON object", status=2)
    return body


@contextlib.contextmanager
def _as_command_errors() -> Iterator[None]:
    """A refusal of the service (`ProblemError`) as one line: its detail, and Sinch's own error
    when Sinch refused (what to fix)."""
    from app.core.problems import ProblemError

    try:
        yield
    except ProblemError as exc:
        sinch = (exc.extra or {}).get("sinch")
        said = f" Sinch said: {json.dumps(sinch)}" if sinch else ""
        fields = [
            f"{e.get('field')}: {e.get('message')}"
            for e in (exc.extra or {}).get("errors") or []
            if isinstance(e, dict)
        ]
        listed = "".join(f"\n  {line}" for line in fields)
        raise CommandError(f"{exc.detail or exc.title} ({exc.status}){said}{listed}") from None


async def _registration_project(settings: Settings, registration_id: str) -> tuple[str, str | None]:
    """(its project, its policy) of a registration known here; CommandError else."""
    from app.registrations import queries

    async with opened(settings) as setup, setup.sessionmaker() as session:
        registration = await queries.get_registration(session, registration_id)
    if registration is None:
        raise CommandError(f"no registration {registration_id} is known here")
    return registration.project_id, registration.policy_id


def _print_registration(registration: Any) -> None:
    from app.registrations.schemas import RegistrationOut

    print(RegistrationOut.of(registration, None).model_dump_json(by_alias=True, indent=2))


async def _registration_submit(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.changes.sequencer import number_and_publish
    from app.submissions import service

    body = _json_file(args.file)
    settings = load_settings()
    named = body.pop("projectId", None)
    project_id = args.project or named or settings.settings_project_id
    with _as_command_errors():
        service.callback_url(settings, project_id)  # refused before anything is opened
        async with opened(
            settings, redis=True, sinch=True, project=True, project_id=project_id
        ) as setup:
            async with setup.sessionmaker() as session:
                checked = await service.check_policy(session, project_id, body)
            document = service.with_callback(checked.document, settings, project_id)
            registration = await service.submit(
                setup.sessionmaker, setup.sinch, document, actor=Actor.command_line()
            )
            await number_and_publish(setup.sessionmaker, setup.redis)
    _print_registration(registration)
    return 0


@contextlib.asynccontextmanager
async def _writing(settings: Settings, registration_id: str) -> AsyncIterator[tuple[Setup, Any]]:
    """For a write of a registration known here: an opened setup (Redis, the Sinch client of the
    registration's project) and the registration's row; the changes the write made are numbered
    and published when the block ends. CommandError for a registration not known here."""
    from app.changes.sequencer import number_and_publish
    from app.registrations import queries

    project_id, _ = await _registration_project(settings, registration_id)
    async with opened(settings, redis=True, sinch=True, project_id=project_id) as setup:
        async with setup.sessionmaker() as session:
            known = await queries.get_registration(session, registration_id)
        if known is None:  # removed since it was read just above
            raise CommandError(f"no registration {registration_id} is known here")
        yield setup, known
        await number_and_publish(setup.sessionmaker, setup.redis)


async def _registration_update(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.submissions import service

    body = _json_file(args.file)
    settings = load_settings()
    with _as_command_errors():
        async with _writing(settings, args.registration_id) as (setup, known):
            registration = await service.update_checked(
                setup.sessionmaker, setup.sinch, known, body, settings, actor=Actor.command_line()
            )
    _print_registration(registration)
    return 0


async def _registration_delete(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.submissions import service

    settings = load_settings()
    with _as_command_errors():
        async with _writing(settings, args.registration_id) as (setup, known):
            registration = await service.delete(
                setup.sessionmaker, setup.sinch, known, actor=Actor.command_line()
            )
    _print_registration(registration)
    return 0


async def _registration_attach(args: argparse.Namespace) -> int:
    import mimetypes

    from app.audit.repository import Actor
    from app.submissions import service

    path = Path(args.file)
    try:
        content = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    mime_type = args.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    upload = service.Upload(file_name=path.name, mime_type=mime_type, content=content)
    settings = load_settings()
    with _as_command_errors():
        async with _writing(settings, args.registration_id) as (setup, known):
            registration = await service.attach_checked(
                setup.sessionmaker,
                setup.sinch,
                known,
                args.attachment_id,
                upload,
                max_bytes=settings.attachment_max_bytes,
                actor=Actor.command_line(),
            )
    _print_registration(registration)
    return 0


async def _registration_attachment(args: argparse.Namespace) -> int:
    from app.submissions import service

    settings = load_settings()
    project_id, _ = await _registration_project(settings, args.registration_id)
    out = Path(args.out)
    written = 0
    with _as_command_errors():
        async with (
            opened(settings, sinch=True, project_id=project_id) as setup,
            service.open_attachment(
                setup.sinch, args.registration_id, args.attachment_id
            ) as answer,
        ):
            try:
                sink = await asyncio.to_thread(out.open, "wb")
                with sink:
                    async for chunk in answer.aiter_bytes():
                        await asyncio.to_thread(sink.write, chunk)
                        written += len(chunk)
            except OSError as exc:
                raise CommandError(f"cannot write {out}: {exc.strerror}") from None
    print(f"{written} bytes written to {out} ({answer.headers.get('content-type', 'no type')})")
    return 0


# --- callbacks and the secret ---------------------------------------------------------------------


def sample_callback(registration_id: str, status: str) -> bytes:
    """A callback body shaped like Sinch's (docs/sinch.md)."""
    body = {
        "eventId": str(uuid.uuid4()),
        "eventType": "REGISTRATION_STATUS_UPDATE",
        "projectId": "sample-project",
        "resourceId": registration_id,
        "resourceType": "REGISTRATION",
        "status": status,
        "createTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _cmd_sign(args: argparse.Namespace) -> int:
    from app.callbacks.signature import SIGNATURE_HEADER, sign

    settings = load_settings()
    if not settings.sinch_callback_secrets:
        raise CommandError(
            "SINCH_CALLBACK_SECRETS is not set: there is no secret to sign with", status=2
        )
    registration_id = args.registration_id or str(uuid.uuid4())
    body = sample_callback(registration_id, args.status)
    signature = sign(body, settings.sinch_callback_secrets[0].get_secret_value())
    base = args.url.rstrip("/")
    print(
        "curl -sS -i -X POST "
        f"-H 'Content-Type: application/json' -H '{SIGNATURE_HEADER}: {signature}' "
        f"--data-binary {shlex.quote(body.decode())} {shlex.quote(base + CALLBACK_PATH)}"
    )
    # On stderr, so that `eval "$(python -m app sign)"` runs the curl alone.
    print(
        f"registration id: {registration_id}\n"
        "its result once the worker has processed it (the first line sets TOKEN, one of "
        "INTERNAL_API_TOKENS, without printing it):\n"
        f"  {token_command()}\n"
        f'  curl -sS -H "Authorization: Bearer $TOKEN" '
        f"{shlex.quote(f'{base}/v1/events?registrationId={registration_id}')}",
        file=sys.stderr,
    )
    return 0


async def _secret_show(args: argparse.Namespace) -> int:
    async with opened(
        load_settings(), database=args.project is not None, sinch=True, project_id=args.project
    ) as setup:
        configuration = await setup.sinch.get_callback_configuration()
    print(configuration.hmac_secret.get_secret_value())
    return 0


async def _secret_set(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from app.audit.actions import Action
    from app.audit.repository import Actor, record
    from app.core.db import utcnow

    settings = load_settings()
    async with opened(settings, sinch=True, project=True) as setup:
        new_secret = args.value or secrets_module.token_urlsafe(32)
        current = [s.get_secret_value() for s in settings.sinch_callback_secrets]
        print("Safe rotation, one step at a time:", file=sys.stderr)
        print(
            "  1. accept both secrets on every API process and restart them:\n"
            "     SINCH_CALLBACK_SECRETS=<new secret>" + (",<current secret>" if current else ""),
            file=sys.stderr,
        )
        if not args.yes:
            print("Not changed. Re-run with --yes once step 1 is deployed.", file=sys.stderr)
            return 1
        await setup.sinch.put_callback_configuration(SecretStr(new_secret))
        async with setup.sessionmaker.begin() as session:
            record(
                session,
                Actor.command_line(),
                Action.CALLBACK_SECRET_SET,
                None,
                now=utcnow(),
                project_id=settings.settings_project_id,
            )
    print("  2. done: Sinch now signs with the new secret", file=sys.stderr)
    print(
        '  3. once sinch_callback_secret_matches{secret="1"} stops growing, drop the old '
        "secret from SINCH_CALLBACK_SECRETS",
        file=sys.stderr,
    )
    print(new_secret)
    return 0


async def _secret_rotate(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.callbacks.rotation import RotationRefused, rotate

    settings = load_settings()
    project_id = args.project or settings.settings_project_id
    async with opened(
        settings, redis=True, sinch=True, project=True, project_id=project_id
    ) as setup:
        try:
            rotation = await rotate(
                setup.sessionmaker,
                setup.redis,
                setup.sinch,
                args.api_url or ["http://127.0.0.1:8000"],
                project_id=project_id,
                actor=Actor.command_line(),
                within=args.timeout,
            )
        except RotationRefused as exc:
            raise CommandError(
                f"rotation refused, Sinch not changed: {exc}; the new secret was withdrawn"
            ) from None
        accepted = ", ".join(sorted(rotation.probe.accepted))
        print(f"probe: every running API process accepts the new secret ({accepted})")
        print("Sinch now signs callbacks with the new secret (the previous one stays accepted)")
        await _print_matches(
            setup.sessionmaker,
            project_id,
            {"the new secret": rotation.new, "the previous secret": rotation.previous},
            minutes=args.minutes,
        )
    return 0


async def _secret_status(args: argparse.Namespace) -> int:
    from app.callbacks.secrets import read_accepted

    settings = load_settings()
    project_id = args.project or settings.settings_project_id
    environment = (
        settings.sinch_callback_secrets if project_id == settings.settings_project_id else []
    )
    async with opened(settings, sinch=True, project_id=project_id) as setup:
        at_sinch = (await setup.sinch.get_callback_configuration()).hmac_secret
        async with setup.sessionmaker() as session:
            accepted = await read_accepted(session, project_id, environment)
        labelled: dict[str, SecretStr] = {"the secret Sinch signs with now": at_sinch}
        for position, secret in enumerate(accepted):
            if secret.get_secret_value() != at_sinch.get_secret_value():
                labelled[f"accepted secret #{position}"] = secret
        if all(s.get_secret_value() != at_sinch.get_secret_value() for s in accepted):
            print(
                "warning: the secret Sinch signs with is not accepted here: every callback is "
                "refused (401)",
                file=sys.stderr,
            )
        await _print_matches(setup.sessionmaker, project_id, labelled, minutes=args.minutes)
    return 0


async def _print_matches(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: str,
    labelled: dict[str, SecretStr],
    *,
    minutes: float,
) -> None:
    """Which of `labelled` signed project `project_id`'s callbacks kept in the last `minutes`
    (never the secrets)."""
    from app.callbacks.secrets import REPORT_LIMIT, recent_matches
    from app.core.db import utcnow

    async with sessionmaker() as session:
        counts = await recent_matches(
            session,
            project_id,
            {label: secret.get_secret_value() for label, secret in labelled.items()},
            since=utcnow() - timedelta(minutes=minutes),
        )
    parts = [f"{counts.get(label, 0)} with {label}" for label in labelled]
    parts.append(f"{counts.get('other', 0)} with none of these")
    print(
        f"callbacks kept in the last {minutes:g} minutes (the newest {REPORT_LIMIT} at most): "
        f"{', '.join(parts)}"
    )


# --- tokens ---------------------------------------------------------------------------------------


async def _token_create(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.core.db import utcnow
    from app.tokens import service as tokens
    from app.tokens.principal import Scope

    async with opened(load_settings()) as setup, setup.sessionmaker.begin() as session:
        try:
            token = await tokens.create(
                session,
                args.name,
                Scope(args.scope),
                actor=Actor.command_line(),
                now=utcnow(),
                projects=args.project or (),
            )
        except tokens.TokenError as exc:
            raise CommandError(str(exc), status=2) from None
    print(
        f"token {args.name} (scope {args.scope}"
        + (f", projects {', '.join(sorted(set(args.project)))}" if args.project else "")
        + ") created; it is shown this once and only its hash is kept:",
        file=sys.stderr,
    )
    print(token)
    return 0


async def _token_list(args: argparse.Namespace) -> int:
    from app.tokens import service as tokens

    settings = load_settings()
    async with opened(settings) as setup, setup.sessionmaker() as session:
        rows = await tokens.every(session, revoked=args.all)

    def when(value: Any) -> str:
        return value.isoformat(timespec="seconds") if value else "-"

    print(f"{'NAME':<24} {'SCOPE':<6} {'CREATED':<26} {'LAST USED':<26} {'REVOKED':<26} PROJECTS")
    for row in rows:
        print(
            f"{row.name:<24} {row.scope:<6} {when(row.created_at):<26} "
            f"{when(row.last_used_at):<26} {when(row.revoked_at):<26} "
            f"{','.join(row.project_ids) if row.project_ids else 'all'}"
        )
    count = len(settings.internal_api_tokens)
    if count:
        print(f"(and {count} from INTERNAL_API_TOKENS: env:1 .. env:{count}, scope write)")
    return 0


async def _token_revoke(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.core.db import utcnow
    from app.tokens import service as tokens

    settings = load_settings()
    async with opened(settings) as setup, setup.sessionmaker.begin() as session:
        try:
            await tokens.revoke(session, args.name, actor=Actor.command_line(), now=utcnow())
        except tokens.TokenError as exc:
            raise CommandError(str(exc)) from None
    print(
        f"token {args.name} revoked: every API process refuses it within "
        f"{settings.token_cache_seconds:g} s"
    )
    return 0


# --- projects -------------------------------------------------------------------------------------

KEY_SECRET_VARIABLE = "PROJECT_KEY_SECRET"  # noqa: S105 (a variable's name)
CALLBACK_SECRET_VARIABLE = "PROJECT_CALLBACK_SECRET"  # noqa: S105 (a variable's name)


def secret_input(variable: str, prompt: str) -> SecretStr:
    """A secret from the environment variable `variable`, else asked without echo when stdin is
    a terminal; never from the arguments (they show in `ps` and shell histories)."""
    import getpass

    from pydantic import SecretStr

    given = os.environ.get(variable)
    if not given and sys.stdin.isatty():
        given = getpass.getpass(prompt)
    if not given:
        raise CommandError(f"set {variable} (or run in a terminal to be asked for it)", status=2)
    return SecretStr(given)


async def _project_add(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.core.db import utcnow
    from app.projects.secrets import SecretsKeyMissing, WrongSecretsKey, box_of
    from app.projects.service import ProjectRefused, add_project

    settings = load_settings()
    try:
        box = box_of(settings.project_secrets_key)
    except (SecretsKeyMissing, WrongSecretsKey) as exc:
        raise CommandError(str(exc), status=2) from None
    key_secret = secret_input(KEY_SECRET_VARIABLE, "Sinch key secret: ")
    callback_secret = secret_input(CALLBACK_SECRET_VARIABLE, "Callback HMAC secret: ")
    async with opened(settings) as setup, setup.sessionmaker.begin() as session:
        try:
            await add_project(
                session,
                box,
                project_id=args.project_id,
                name=args.name or args.project_id,
                key_id=args.key_id,
                key_secret=key_secret,
                callback_secret=callback_secret,
                actor=Actor.command_line(),
                now=utcnow(),
            )
        except ProjectRefused as exc:
            raise CommandError(str(exc), status=2) from None
    print(
        f"project {args.project_id} added; running API and worker processes serve it within"
        " seconds. Its callback URL: <API base URL>"
        f"/callbacks/sinch/{args.project_id}/registrations"
    )
    return 0


def project_lines(project: Any) -> list[str]:
    """What `project show` prints of a `ProjectView` (never a secret: there is none in it)."""
    return [
        f"id:               {project.id}",
        f"name:             {project.name}",
        f"key id:           {project.key_id or '-'}",
        f"key secret:       {'set' if project.key_secret_set else 'not set'}",
        f"callback secrets: {project.callback_secrets} stored"
        + (" (and SINCH_CALLBACK_SECRETS)" if project.from_settings else ""),
        f"from settings:    {'yes' if project.from_settings else 'no'}",
        f"callback path:    /callbacks/sinch/{project.id}/registrations",
        f"created:          {project.created_at.isoformat(timespec='seconds')}",
    ]


async def _project_list(_args: argparse.Namespace) -> int:
    from app.projects.queries import list_projects

    settings = load_settings()
    async with opened(settings) as setup, setup.sessionmaker() as session:
        projects = await list_projects(
            session, environment_secret=settings.sinch_key_secret is not None
        )
    print(f"{'ID':<38} {'NAME':<24} {'KEY ID':<38} SETTINGS")
    for project in projects:
        print(
            f"{project.id:<38} {project.name:<24} {project.key_id or '-':<38} "
            f"{'yes' if project.from_settings else 'no'}"
        )
    return 0


async def _project_show(args: argparse.Namespace) -> int:
    from app.projects.queries import get_project

    settings = load_settings()
    async with opened(settings) as setup, setup.sessionmaker() as session:
        project = await get_project(
            session, args.project_id, environment_secret=settings.sinch_key_secret is not None
        )
    if project is None:
        raise CommandError(f"no project {args.project_id}")
    print("\n".join(project_lines(project)))
    return 0


async def _project_remove(args: argparse.Namespace) -> int:
    from app.audit.repository import Actor
    from app.core.db import utcnow
    from app.projects.service import ProjectRefused, remove_project

    settings = load_settings()
    async with opened(settings) as setup, setup.sessionmaker.begin() as session:
        try:
            deleted = await remove_project(
                session,
                args.project_id,
                with_data=args.with_data,
                actor=Actor.command_line(),
                settings_project_id=settings.settings_project_id,
                now=utcnow(),
            )
        except ProjectRefused as exc:
            raise CommandError(str(exc)) from None
    rows = ", ".join(f"{count} {table}" for table, count in deleted.items()) or "no data"
    print(
        f"project {args.project_id} removed ({rows}); running API processes refuse its callbacks"
        " within seconds"
    )
    return 0


# --- the parser -----------------------------------------------------------------------------------


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def port(text: str) -> int:
    value = non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


Command = Callable[[argparse.Namespace], int]


def sync(function: Callable[[argparse.Namespace], Any]) -> Command:
    """A command from an async function of the arguments."""

    def run(args: argparse.Namespace) -> int:
        status: int = asyncio.run(function(args))
        return status

    return run


PRUNABLE_STATES = ("processed", "failed", "invalid")
"""`EventState`'s values but `received`; spelt out so that building the parser imports no model
(tests/test_cli_startup.py checks they are the enum's)."""
DELIVERY_STATES = ("pending", "succeeded", "failed")
"""`DeliveryState`'s values, spelt out for the same reason."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Names each option's default once: argparse's "(default: ...)" is added only when the
    help does not speak of its default already and there is one worth naming (not None, not a
    flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


CommandAdder = Callable[[str, str, Command], argparse.ArgumentParser]
"""`command(name, help, func)`: adds a subcommand that runs `func` and answers its parser."""


def command_parsers(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, Any, CommandAdder]:
    """The shape of both command lines (this one and the dev tools'): a parser with
    `HelpFormatter`, its subcommands (for groups, `command_group`), and `command(name, help,
    func)`, which adds a subcommand that runs `func`."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, commands, _adder(commands)


def command_group(
    commands: Any,
    name: str,
    help_text: str,
    *,
    description: str | None = None,
    metavar: str | None = None,
) -> CommandAdder:
    """A group of subcommands (`token create`, `token list`...) under `commands`; answers the
    group's `command(name, help, func)`. The chosen subcommand's name is `args.<name>_command`."""
    group = commands.add_parser(
        name, help=help_text, description=description, formatter_class=HelpFormatter
    )
    return _adder(group.add_subparsers(dest=f"{name}_command", required=True, metavar=metavar))


def _adder(subcommands: Any) -> CommandAdder:
    """`command(name, help, func)` for `subcommands`: the help is the description too."""

    def command(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = subcommands.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        sub.set_defaults(func=func)
        return sub

    return command


def _acting_on(command: CommandAdder, dest: str, metavar: str) -> CommandAdder:
    """`command` for subcommands that each act on one thing: every one it adds takes that
    thing's id first, as the positional `dest` shown as `metavar` (`registration delete ID`)."""

    def one(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        sub = command(name, help_text, func)
        sub.add_argument(dest, metavar=metavar)
        return sub

    return one


def build_parser() -> argparse.ArgumentParser:
    parser, commands, command = command_parsers(
        "python -m app",
        "Track Sinch sender ID registrations: callbacks in, a converged copy out. "
        "Configuration comes from the environment and ./.env (see the README).",
    )

    serve = command("serve", "run the HTTP API (uvicorn)", _cmd_serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=port, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")

    worker = command(
        "worker", "run one arq worker (as `arq app.worker.WorkerSettings`)", _cmd_worker
    )
    worker.set_defaults(deliveries=False)
    delivery_worker = command(
        "delivery-worker",
        "run one delivery worker: the webhooks and the forecasts (as `arq "
        "app.worker.DeliveryWorkerSettings`; not needed with DELIVERY_WORKER=shared)",
        _cmd_worker,
    )
    delivery_worker.set_defaults(deliveries=True)

    migrate = command("migrate", "upgrade the database schema (alembic)", _cmd_migrate)
    migrate.add_argument("revision", nargs="?", default="head", help="target revision")

    reconcile = command(
        "reconcile", "apply what changed at Sinch since the last reconciliation", sync(_reconcile)
    )
    reconcile.add_argument(
        "--full", action="store_true", help="import every registration, not just recent changes"
    )

    changes = command(
        "changes", "print the change feed, one line per change (Ctrl-C stops)", sync(_changes)
    )
    changes.add_argument(
        "--follow", "-f", action="store_true", help="keep printing changes as they come"
    )
    changes.add_argument(
        "--last", type=non_negative, default=20, help="start with this many of the newest"
    )
    changes.add_argument("--all", action="store_true", help="start at the oldest change kept")

    replay = command("replay", "process kept events again", sync(_replay))
    replay.add_argument(
        "event_ids", nargs="*", type=int, metavar="EVENT_ID", help="ids of kept events"
    )
    replay.add_argument("--failed", action="store_true", help="replay every failed event")

    prune = command("prune", "delete old processed (or failed/invalid) events", sync(_prune))
    prune.add_argument(
        "--days",
        type=non_negative,
        help="processed more than this many days ago (default: EVENT_RETENTION_DAYS)",
    )
    prune.add_argument(
        "--state",
        action="append",
        choices=PRUNABLE_STATES,
        help="which states to prune, repeatable (default: processed)",
    )

    sign_command = command("sign", "print a curl command posting a signed test callback", _cmd_sign)
    sign_command.add_argument("--url", default="http://127.0.0.1:8000", help="the API's base URL")
    sign_command.add_argument(
        "--registration-id", help="registration the callback names (default: a new random id)"
    )
    sign_command.add_argument("--status", default="IN_PROGRESS", help="status it reports")

    delivery = command_group(commands, "deliveries", "the changes pushed to subscriptions")
    listing = delivery("list", "deliveries, newest first, one line each", sync(_deliveries_list))
    listing.add_argument("--subscription", help="only this subscription's (sub_...)")
    listing.add_argument("--state", choices=DELIVERY_STATES, help="only deliveries in this state")
    listing.add_argument("--limit", type=non_negative, default=50, help="at most this many")
    retry = delivery("retry", "deliver again now (failed ones too)", sync(_deliveries_retry))
    retry.add_argument("delivery_ids", nargs="+", type=int, metavar="DELIVERY_ID")

    registration = command_group(
        commands,
        "registration",
        "create, update or delete registrations at Sinch (kept here from Sinch's answer)",
    )
    submit = registration(
        "submit",
        "submit a new registration: FILE holds the request as POST /v1/registrations takes it "
        "(Sinch's create body with requestDetails, or companyDetails, contactPerson, senderIds "
        "at the top level; - reads standard input), checked against its policy first; "
        "callbackUrl is set from PUBLIC_BASE_URL; prints the registration as kept",
        sync(_registration_submit),
    )
    submit.add_argument("file", metavar="FILE.json")
    submit.add_argument(
        "--project",
        metavar="PROJECT_ID",
        help="submit to this project, with its own Sinch credentials (default: the file's "
        "projectId, else the project the settings define)",
    )
    on_registration = _acting_on(registration, "registration_id", "ID")
    update = on_registration(
        "update",
        "send a registration's new content to Sinch (FILE as for submit)",
        sync(_registration_update),
    )
    update.add_argument("file", metavar="FILE.json")
    on_registration(
        "delete",
        "delete a registration at Sinch; kept here with status DELETED",
        sync(_registration_delete),
    )
    attach = on_registration(
        "attach",
        "upload FILE as attachment ATTACHMENT_ID (one the registration's policy defines) to "
        "Sinch, checked against the policy first; prints the registration as kept",
        sync(_registration_attach),
    )
    attach.add_argument("attachment_id", metavar="ATTACHMENT_ID")
    attach.add_argument("file", metavar="FILE")
    attach.add_argument(
        "--mime-type", help="the file's MIME type (default: guessed from its name's extension)"
    )
    attachment = on_registration(
        "attachment",
        "download attachment ATTACHMENT_ID of a registration from Sinch",
        sync(_registration_attachment),
    )
    attachment.add_argument("attachment_id", metavar="ATTACHMENT_ID")
    attachment.add_argument("--out", metavar="FILE", required=True, help="where to write it")

    secret = command_group(commands, "secret", "the Sinch callback HMAC secret")
    show = secret("show", "print the secret Sinch signs callbacks with", sync(_secret_show))
    secret_set = secret("set", "set a new secret (generated when omitted)", sync(_secret_set))
    secret_set.add_argument("value", nargs="?", help="the new secret")
    secret_set.add_argument(
        "--yes", action="store_true", help="step 1 (every API accepts both) is deployed: change it"
    )
    secret_rotate = secret(
        "rotate",
        "generate a new secret, check that every running API process accepts it (signed probes "
        "to each --api-url), then give it to Sinch; refused, Sinch unchanged, when a process "
        "does not accept it",
        sync(_secret_rotate),
    )
    secret_rotate.add_argument(
        "--api-url",
        action="append",
        help="base URL reaching the API processes' callback endpoint (repeatable; "
        "default http://127.0.0.1:8000)",
    )
    secret_rotate.add_argument(
        "--timeout", type=float, default=15.0, help="seconds for every process to accept it"
    )
    secret_rotate.add_argument(
        "--minutes", type=float, default=10.0, help="report on callbacks of the last N minutes"
    )
    secret_status = secret(
        "status",
        "which secret the callbacks of the last minutes were signed with",
        sync(_secret_status),
    )
    secret_status.add_argument(
        "--minutes", type=float, default=10.0, help="callbacks of the last N minutes"
    )

    for one_project in (reconcile, show, secret_rotate, secret_status):
        one_project.add_argument(
            "--project",
            metavar="PROJECT_ID",
            help="act on this project, with its own Sinch credentials (default: the project the"
            " settings define, SINCH_PROJECT_ID)",
        )

    catalog = command_group(commands, "catalog", "the markets and policies read from Sinch")
    catalog_refresh = catalog(
        "refresh",
        "read every project's markets and policies from Sinch now (the worker does daily); "
        "a changed policy is recorded and announced on the change feed",
        sync(_catalog_refresh),
    )
    catalog_refresh.add_argument(
        "--project", metavar="PROJECT_ID", help="only this project (default: every project)"
    )

    project = command_group(commands, "project", "the Sinch projects this deployment serves")
    project_add = project(
        "add",
        f"add a project: its key secret from {KEY_SECRET_VARIABLE}, its first callback secret "
        f"from {CALLBACK_SECRET_VARIABLE} (asked without echo in a terminal), never arguments; "
        "needs PROJECT_SECRETS_KEY",
        sync(_project_add),
    )
    project_add.add_argument("project_id", metavar="PROJECT_ID", help="Sinch's project id")
    project_add.add_argument("--name", help="a name for people (the id when omitted)")
    project_add.add_argument("--key-id", required=True, help="the Sinch access key's id")
    project("list", "every project (no secret)", sync(_project_list))
    on_project = _acting_on(project, "project_id", "PROJECT_ID")
    on_project("show", "one project (no secret)", sync(_project_show))
    project_remove = on_project(
        "remove",
        "remove a project: refused while it has registrations, events, changes or deliveries "
        "unless --with-data (which deletes them); its audit entries stay",
        sync(_project_remove),
    )
    project_remove.add_argument(
        "--with-data", action="store_true", help="delete the project's data with it"
    )

    token = command_group(commands, "token", "tokens of the internal API (scopes read and write)")
    create = token(
        "create", "make a token; printed once, only its hash is kept", sync(_token_create)
    )
    create.add_argument("name", help="its name (letters, digits, '.', '_', '-'), never reused")
    create.add_argument("--scope", choices=["read", "write"], required=True)
    create.add_argument(
        "--project",
        action="append",
        metavar="PROJECT_ID",
        help="limit it to this project (repeat for several); none given: every project",
    )
    token_list = token("list", "name, scope, created and last used of each", sync(_token_list))
    token_list.add_argument("--all", action="store_true", help="revoked ones too")
    revoke = token(
        "revoke", "refused by every API process within TOKEN_CACHE_SECONDS", sync(_token_revoke)
    )
    revoke.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command: a `CommandError` or any other failure is one line
    on stderr (never a traceback, never a secret) and a non-zero status."""
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, not a traceback: name what failed, never a secret
        from app.sinch.errors import SinchError

        if isinstance(exc, SinchError):
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "(no message)"
