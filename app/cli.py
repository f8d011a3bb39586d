"""The command line: `python -m app <command>` (also installed as `sinch-registrations`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets as secrets_module
import shlex
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from app.callbacks.signature import SIGNATURE_HEADER, sign
from app.db import create_engine, create_sessionmaker, utcnow
from app.events import processing
from app.events import repository as events_repository
from app.jobs import create_redis, enqueue_event
from app.models import EventState
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers)
    return 0


def _cmd_worker(_args: argparse.Namespace) -> int:
    from arq.worker import run_worker

    from app.worker import use_uvloop
    from app.worker.settings import build_worker_settings

    use_uvloop()
    run_worker(build_worker_settings(Settings()))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    command.upgrade(config, args.revision)
    return 0


def _cmd_simulator(args: argparse.Namespace) -> int:
    from app.simulator import run_simulator

    run_simulator(
        args.host,
        args.port,
        project_id=args.project_id,
        key_id=args.key_id,
        key_secret=args.key_secret,
        hmac_secret=args.hmac_secret,
    )
    return 0


async def _reconcile(full: bool) -> int:
    from app.registrations.reconcile import reconcile
    from app.sinch.client import SinchClient, create_http_client

    settings = Settings()
    if not settings.sinch_credentials_configured:
        print(
            "Sinch credentials are not configured (SINCH_PROJECT_ID, SINCH_KEY_ID, "
            "SINCH_KEY_SECRET)",
            file=sys.stderr,
        )
        return 2
    engine = create_engine(settings)
    try:
        async with create_http_client(settings) as http:
            report = await reconcile(
                create_sessionmaker(engine), SinchClient.from_settings(settings, http), full=full
            )
    finally:
        await engine.dispose()
    print(
        f"reconciled: {report.seen} registrations seen, {report.changed} changed "
        f"(since {report.since.isoformat() if report.since else 'the start'})"
    )
    return 0


async def _replay(event_ids: Sequence[int], failed: bool) -> int:
    settings = Settings()
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    redis = create_redis(settings)
    try:
        ids = list(event_ids)
        if failed:
            async with sessionmaker() as session:
                ids = await events_repository.ids_in_state(session, EventState.FAILED)
        missing = []
        for done, row_id in enumerate(ids, start=1):
            async with sessionmaker.begin() as session:
                found = await processing.reset_for_replay(session, row_id)
            if not found:
                missing.append(row_id)
                continue
            await enqueue_event(redis, row_id)
            if len(ids) > 1:
                _progress(done, len(ids))
        if len(ids) > 1:
            print(file=sys.stderr)
        print(f"replaying {len(ids) - len(missing)} events")
        if missing:
            print(f"unknown event ids: {', '.join(map(str, missing))}", file=sys.stderr)
            return 1
        return 0
    finally:
        await redis.aclose()
        await engine.dispose()


def _progress(done: int, total: int, width: int = 40) -> None:
    filled = width * done // total
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr)


async def _prune(days: int | None, states: Sequence[str]) -> int:
    settings = Settings()
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    cutoff = utcnow() - timedelta(days=days if days is not None else settings.event_retention_days)
    total = 0
    try:
        while True:
            async with sessionmaker.begin() as session:
                deleted = await events_repository.prune(
                    session,
                    processed_before=cutoff,
                    states=tuple(EventState(state) for state in states),
                    limit=5000,
                )
            total += deleted
            if deleted < 5000:
                break
    finally:
        await engine.dispose()
    print(f"pruned {total} events ({', '.join(states)}) processed before {cutoff.isoformat()}")
    return 0


def sample_callback(registration_id: str, status: str) -> bytes:
    """A callback body shaped like Sinch's (SINCH.md)."""
    body = {
        "eventId": str(uuid.uuid4()),
        "eventType": "REGISTRATION_STATUS_UPDATE",
        "projectId": "sample-project",
        "resourceId": registration_id,
        "resourceType": "REGISTRATION",
        "status": status,
        "createTime": utcnow().strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _cmd_sign(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.sinch_callback_secrets:
        print("SINCH_CALLBACK_SECRETS is not set: there is no secret to sign with", file=sys.stderr)
        return 2
    body = sample_callback(args.registration_id or str(uuid.uuid4()), args.status)
    signature = sign(body, settings.sinch_callback_secrets[0].get_secret_value())
    url = args.url.rstrip("/") + "/callbacks/sinch/registrations"
    print(
        "curl -sS -i -X POST "
        f"-H 'Content-Type: application/json' -H '{SIGNATURE_HEADER}: {signature}' "
        f"--data-binary {shlex.quote(body.decode())} {shlex.quote(url)}"
    )
    return 0


async def _secret(action: str, value: str | None, *, confirmed: bool) -> int:
    from app.sinch.client import SinchClient, create_http_client

    settings = Settings()
    if not settings.sinch_credentials_configured:
        print("Sinch credentials are not configured", file=sys.stderr)
        return 2
    async with create_http_client(settings) as http:
        client = SinchClient.from_settings(settings, http)
        if action == "show":
            configuration = await client.get_callback_configuration()
            print(configuration.hmac_secret.get_secret_value())
            return 0
        new_secret = value or secrets_module.token_urlsafe(32)
        current = [s.get_secret_value() for s in settings.sinch_callback_secrets]
        print("Safe rotation, one step at a time:", file=sys.stderr)
        print(
            "  1. accept both secrets on every API process and restart them:\n"
            "     SINCH_CALLBACK_SECRETS=<new secret>" + (",<current secret>" if current else ""),
            file=sys.stderr,
        )
        if not confirmed:
            print("Not changed. Re-run with --yes once step 1 is deployed.", file=sys.stderr)
            return 1
        await client.put_callback_configuration(SecretStr(new_secret))
        print("  2. done: Sinch now signs with the new secret", file=sys.stderr)
        print(
            '  3. once sinch_callback_secret_matches{secret="1"} stops growing, drop the old '
            "secret from SINCH_CALLBACK_SECRETS",
            file=sys.stderr,
        )
        print(new_secret)
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Track Sinch sender ID registrations: callbacks in, a converged copy out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    commands.add_parser("worker", help="run one arq worker")

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("revision", nargs="?", default="head")

    simulator = commands.add_parser("simulator", help="run the Sinch simulator (a fake Sinch)")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8010)
    simulator.add_argument("--project-id", default="sim-project")
    simulator.add_argument("--key-id", default="sim-key")
    simulator.add_argument("--key-secret", default="sim-key-secret")
    simulator.add_argument("--hmac-secret", default="sim-hmac-secret")

    reconcile = commands.add_parser("reconcile", help="apply what changed at Sinch")
    reconcile.add_argument("--full", action="store_true", help="import every registration")

    replay = commands.add_parser("replay", help="process events again")
    replay.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID")
    replay.add_argument("--failed", action="store_true", help="replay every failed event")

    prune = commands.add_parser("prune", help="delete old processed (or failed/invalid) events")
    prune.add_argument("--days", type=int, help="older than this (default EVENT_RETENTION_DAYS)")
    prune.add_argument(
        "--state",
        action="append",
        choices=[EventState.PROCESSED, EventState.FAILED, EventState.INVALID],
        help="which states to prune (repeatable; default processed)",
    )

    demo = commands.add_parser(
        "demo", help="play lifecycles from the simulator against the service"
    )
    demo.add_argument("--registrations", type=int, default=30)

    sign_cmd = commands.add_parser("sign", help="print a curl command posting a signed callback")
    sign_cmd.add_argument("--url", default="http://127.0.0.1:8000")
    sign_cmd.add_argument("--registration-id")
    sign_cmd.add_argument("--status", default="IN_PROGRESS")

    secret = commands.add_parser("secret", help="the Sinch callback HMAC secret")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True)
    secret_commands.add_parser("show", help="print the secret Sinch signs callbacks with")
    secret_set = secret_commands.add_parser("set", help="set a new secret (generated if omitted)")
    secret_set.add_argument("value", nargs="?")
    secret_set.add_argument("--yes", action="store_true", help="step 1 is deployed: change it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    match args.command:
        case "serve":
            return _cmd_serve(args)
        case "worker":
            return _cmd_worker(args)
        case "migrate":
            return _cmd_migrate(args)
        case "simulator":
            return _cmd_simulator(args)
        case "reconcile":
            return asyncio.run(_reconcile(args.full))
        case "replay":
            if not args.event_ids and not args.failed:
                build_parser().error("replay needs EVENT_ID ... or --failed")
            return asyncio.run(_replay(args.event_ids, args.failed))
        case "prune":
            return asyncio.run(_prune(args.days, args.state or [EventState.PROCESSED]))
        case "sign":
            return _cmd_sign(args)
        case "demo":
            from app.demo import run_demo

            return run_demo(args.registrations)
        case "secret":
            return asyncio.run(
                _secret(
                    args.secret_command,
                    getattr(args, "value", None),
                    confirmed=bool(getattr(args, "yes", False)),
                )
            )
    return 2
