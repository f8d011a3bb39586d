"""`python -m devtools`: the tools for working on the service without a Sinch account.

`simulator` runs a fake Sinch, `sandbox play` drives a registration through the sandbox that
`make run` starts, `demo` plays shuffled lifecycles against a service of its own, `run` is what
`make run` calls to check, prepare and describe its processes. None of this is installed in the
production image; the service itself never imports it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from app.cli import (
    CommandError,
    command_group,
    command_parsers,
    load_settings,
    non_negative,
    port,
    run,
    sync,
    token_command,
)

if TYPE_CHECKING:
    from devtools.simulator.projects import ProjectKeys


def _cmd_simulator(args: argparse.Namespace) -> int:
    from devtools.simulator import run_simulator
    from devtools.simulator import server as sim

    # Secrets come from the environment, never the command line (which `ps` shows anyone).
    run_simulator(
        args.host,
        args.port,
        project_id=args.project_id,
        key_id=args.key_id,
        key_secret=os.environ.get("SIMULATOR_KEY_SECRET") or sim.DEFAULT_KEY_SECRET,
        hmac_secret=os.environ.get("SIMULATOR_HMAC_SECRET") or sim.DEFAULT_HMAC_SECRET,
        state_file=args.state_file,
        other_projects=other_project_keys(
            args.other_project or [], first=(args.project_id, args.key_id), environ=os.environ
        ),
    )
    return 0


def project_and_key(text: str) -> tuple[str, str]:
    """`--other-project`'s value: `PROJECT_ID:KEY_ID`, neither empty."""
    project_id, colon, key_id = text.partition(":")
    if not colon or not project_id.strip() or not key_id.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not PROJECT_ID:KEY_ID (e.g. brand-b:key-b)")
    return project_id.strip(), key_id.strip()


def secrets_suffix(project_id: str) -> str:
    """The suffix of a project's secrets' variables: its id in capitals, every character but a
    letter or digit as `_` (brand-b: SIMULATOR_KEY_SECRET_BRAND_B)."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in project_id.upper())


def other_project_keys(
    given: Sequence[tuple[str, str]], *, first: tuple[str, str], environ: Mapping[str, str]
) -> list[tuple[ProjectKeys, str]]:
    """Each `--other-project` with its secrets from the environment (`SIMULATOR_KEY_SECRET_<S>`,
    `SIMULATOR_HMAC_SECRET_<S>`, S its `secrets_suffix`; the published `default_secrets` when
    unset), and S. CommandError (status 2) when two projects share an id, a key id (a token is
    fetched by key id) or a suffix (they would read the same secrets)."""
    from devtools.simulator.projects import ProjectKeys
    from devtools.simulator.server import default_secrets

    projects, keys = {first[0]}, {first[1]}
    suffixes = {secrets_suffix(first[0])}
    found: list[tuple[ProjectKeys, str]] = []
    for project_id, key_id in given:
        suffix = secrets_suffix(project_id)
        clash = (
            f"project {project_id}"
            if project_id in projects
            else f"key id {key_id}"
            if key_id in keys
            else f"secrets suffix {suffix}"
            if suffix in suffixes
            else None
        )
        if clash is not None:
            raise CommandError(f"--other-project: the {clash} is served already", status=2)
        projects.add(project_id)
        keys.add(key_id)
        suffixes.add(suffix)
        key_default, hmac_default = default_secrets(project_id)
        keys_of = ProjectKeys(
            project_id,
            key_id,
            environ.get(f"SIMULATOR_KEY_SECRET_{suffix}") or key_default,
            environ.get(f"SIMULATOR_HMAC_SECRET_{suffix}") or hmac_default,
        )
        found.append((keys_of, suffix))
    return found


def _cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(args.registrations, redis_db=args.redis_db)


async def _sandbox_play(args: argparse.Namespace) -> int:
    from devtools.sandbox import SandboxError, curl_commands, play

    settings = load_settings()
    if not settings.internal_api_tokens:
        raise CommandError(
            "INTERNAL_API_TOKENS is not set: run this in the folder where `make run` runs "
            "(it reads ./.env)",
            status=2,
        )
    lifecycle = lifecycle_states(args.lifecycle)
    try:
        registration_id = await play(
            api_url=args.api_url,
            simulator_url=args.simulator_url,
            token=settings.internal_api_tokens[0].get_secret_value(),
            lifecycle=lifecycle,
            step_timeout=args.timeout,
        )
    except SandboxError as exc:
        raise CommandError(str(exc)) from None
    print("\nSee it through the API (the first line sets TOKEN without printing it):")
    for line in [token_command(), *curl_commands(args.api_url.rstrip("/"), registration_id)]:
        print(f"  {line}")
    return 0


async def _sandbox_history(args: argparse.Namespace) -> int:
    import random

    from app.core.db import utcnow
    from devtools.history import HISTORY_DAYS, plan, play
    from devtools.simulator import SimulatorControl

    lifecycles = plan(random.Random(args.seed), args.registrations, utcnow())
    try:
        async with SimulatorControl(args.simulator_url) as simulator:
            ids = await play(simulator, args.api_url, lifecycles)
    except httpx.HTTPError as exc:
        raise CommandError(
            f"the simulator at {args.simulator_url} or the API at {args.api_url} did not answer "
            f"({type(exc).__name__}): is `make run` running in the sandbox?"
        ) from None
    open_count = sum(1 for lifecycle in lifecycles if not lifecycle.decided)
    print(
        f"{len(ids)} registrations over the last {HISTORY_DAYS} days played into the sandbox "
        f"({open_count} still waiting); the delivery worker derives the figures at its next "
        f"forecasts run (FORECAST_INTERVAL_SECONDS; 30 s in the sandbox). Then see "
        f"{args.api_url.rstrip('/')}/console/aging and /v1/stats/time-in-state."
    )
    return 0


def lifecycle_states(text: str) -> list[str]:
    """`--lifecycle`'s states, each one of Sinch's (docs/sinch.md); CommandError names any other."""
    from app.registrations.states import State

    states = [state.strip().upper() for state in text.split(",") if state.strip()]
    unknown = [state for state in states if state not in State.__members__]
    if unknown:
        raise CommandError(
            f"--lifecycle: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a "
            f"registration state; the states are {', '.join(State.__members__)}",
            status=2,
        )
    return states


def _sandbox_urls(command: argparse.ArgumentParser) -> None:
    """The options every `sandbox` command has: where the API and the simulator answer."""
    command.add_argument("--api-url", default="http://127.0.0.1:8000", help="the API's base URL")
    command.add_argument(
        "--simulator-url", default="http://127.0.0.1:8010", help="the simulator's base URL"
    )


def build_parser() -> argparse.ArgumentParser:
    from devtools.simulator import server as sim

    parser, commands, command = command_parsers(
        "python -m devtools",
        "Work on the service without a Sinch account: the simulator, the sandbox, the demo.",
    )

    simulator = command(
        "simulator",
        "run the Sinch simulator: a fake Sinch. Its access key secret and callback signing "
        "secret come from the environment (SIMULATOR_KEY_SECRET, SIMULATOR_HMAC_SECRET; "
        f"defaults {sim.DEFAULT_KEY_SECRET!r} and {sim.DEFAULT_HMAC_SECRET!r}), never options",
        _cmd_simulator,
    )
    simulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    simulator.add_argument("--port", type=port, default=8010, help="port to listen on")
    simulator.add_argument("--project-id", default=sim.DEFAULT_PROJECT_ID, help="its project id")
    simulator.add_argument("--key-id", default=sim.DEFAULT_KEY_ID, help="its access key id")
    simulator.add_argument(
        "--other-project",
        action="append",
        type=project_and_key,
        metavar="PROJECT_ID:KEY_ID",
        help="serve this project too, with its own state (repeat for several); its secrets come "
        "from SIMULATOR_KEY_SECRET_<ID> and SIMULATOR_HMAC_SECRET_<ID>, <ID> the project id in "
        "capitals with '_' for any other character than a letter or digit (defaults "
        f"'{sim.DEFAULT_KEY_SECRET}-<project id>' and '{sim.DEFAULT_HMAC_SECRET}-<project id>')",
    )
    simulator.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="a JSON file it loads its registrations and events from at start and saves them to "
        "when it stops (make run: var/simulator.json; each --other-project's beside it, as "
        "simulator.<project id>.json); none: it starts empty, keeps nothing",
    )

    demo = command(
        "demo", "play shuffled lifecycles from the simulator against the service", _cmd_demo
    )
    demo.add_argument(
        "--registrations",
        type=int,
        default=30,
        help="how many lifecycles, delivered shuffled and duplicated; as many (10 at the most) "
        "are then played in order, one callback at a time",
    )
    demo.add_argument(
        "--redis-db",
        type=non_negative,
        default=14,
        help="Redis database (of REDIS_URL's server) the demo's worker alone uses; emptied first",
    )

    sandbox = command_group(
        commands,
        "sandbox",
        "play against the sandbox `make run` starts without Sinch credentials",
        description="Play against the sandbox `make run` starts without Sinch credentials: the "
        "built-in simulator as Sinch.",
        metavar="COMMAND",
    )
    play = sandbox(
        "play",
        "create a registration at the simulator, deliver its lifecycle's callbacks to the API one "
        "by one and wait until the API's copy shows each state; then print the curl commands "
        "that show it",
        sync(_sandbox_play),
    )
    _sandbox_urls(play)
    play.add_argument(
        "--lifecycle",
        default="IN_PROGRESS,APPROVED",
        help="comma-separated states the registration moves through after IN_QUEUE",
    )
    play.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the API's copy to show each state",
    )
    history = sandbox(
        "history",
        "play months of registration history into the sandbox (markets of different speeds, "
        "rejections, customers slow to answer): the console's Aging page and "
        "/v1/stats/time-in-state then have figures",
        sync(_sandbox_history),
    )
    _sandbox_urls(history)
    history.add_argument(
        "--registrations", type=int, default=300, help="how many registrations to play"
    )
    history.add_argument("--seed", type=int, default=7, help="the random seed (repeatable runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)
