"""`python -m devtools`: the tools for working on the service without a Sinch account.

`simulator` runs a fake Sinch, `sandbox play` drives a registration through the sandbox that
`make run` starts, `demo` plays shuffled lifecycles against a service of its own, `run` is what
`make run` calls to check, prepare and describe its processes. None of this is installed in the
production image; the service itself never imports it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from app.cli import (
    CommandError,
    HelpFormatter,
    command_parsers,
    load_settings,
    non_negative,
    port,
    run,
    sync,
    token_command,
)


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
    )
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    from devtools.simulator import server as sim

    formatter = HelpFormatter
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
        "--state-file",
        type=Path,
        default=None,
        help="a JSON file it loads its registrations and events from at start and saves them to "
        "when it stops (make run: var/simulator.json); none: it starts empty, keeps nothing",
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

    sandbox = commands.add_parser(
        "sandbox",
        help="play against the sandbox `make run` starts without Sinch credentials",
        description="Play against the sandbox `make run` starts without Sinch credentials: the "
        "built-in simulator as Sinch.",
        formatter_class=formatter,
    )
    sandbox_commands = sandbox.add_subparsers(
        dest="sandbox_command", required=True, metavar="COMMAND"
    )
    play_help = (
        "create a registration at the simulator, deliver its lifecycle's callbacks to the API one "
        "by one and wait until the API's copy shows each state; then print the curl commands "
        "that show it"
    )
    play = sandbox_commands.add_parser(
        "play", help=play_help, description=play_help, formatter_class=formatter
    )
    play.set_defaults(func=sync(_sandbox_play))
    play.add_argument("--api-url", default="http://127.0.0.1:8000", help="the API's base URL")
    play.add_argument(
        "--simulator-url", default="http://127.0.0.1:8010", help="the simulator's base URL"
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)
