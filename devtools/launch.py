"""What `make run` (scripts/run) checks and decides before it starts a process.

`python -m devtools.launch --port PORT [--sim-port SIM_PORT]` reads the configuration as the service
will (environment, then ./.env), and either prints bash assignments for scripts/run to `eval`, or
prints one line per problem (`run: ...`, naming the variable or port and how to fix it) on stderr
and exits non-zero. The checks: the settings load; Sinch credentials are all set (real Sinch) or
none is (sandbox: the built-in simulator plays Sinch); the secrets the processes need are not
empty; the ports are free; Redis answers.

In the sandbox the simulator's values reach the API and the worker as environment variables of
those two processes only; nothing is written to .env.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from app.core.settings import Settings, describe_refusal

DEFAULT_SIM_PORT = 8010
SIM_PROJECT_ID = "sandbox-project"
SIM_KEY_ID = "sandbox-key"
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


class LaunchError(Exception):
    """One line for the user: what is wrong and how to fix it."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `host:port` can be bound as uvicorn binds it (SO_REUSEADDR: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _where(name: str, env_file: Path) -> str:
    """Where a variable that came out empty was set: the environment, .env, or nowhere."""
    if name in os.environ:
        return "is empty in the environment"
    if env_file.is_file():
        from dotenv import dotenv_values

        if name in dotenv_values(env_file):
            return f"is empty in {env_file}"
    return "is not set"


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise LaunchError(
            f"configuration refused ({describe_refusal(exc)}): fix it in .env or the environment",
            2,
        ) from None


def sandbox_wanted(settings: Settings) -> bool:
    """No Sinch credential at all: sandbox. All three: real Sinch. Some: a mistake, named."""
    values = {
        "SINCH_PROJECT_ID": settings.sinch_project_id,
        "SINCH_KEY_ID": settings.sinch_key_id,
        "SINCH_KEY_SECRET": settings.sinch_key_secret,
    }
    missing = [name for name, value in values.items() if not value]
    if len(missing) == len(values):
        return True
    if missing:
        raise LaunchError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} empty while the other "
            "Sinch credentials are set: set all three for real Sinch, or none for the sandbox",
            2,
        )
    return False


def check_secrets(settings: Settings, *, sandbox: bool, env_file: Path) -> None:
    if not settings.internal_api_tokens:
        raise LaunchError(
            f"INTERNAL_API_TOKENS {_where('INTERNAL_API_TOKENS', env_file)}: the API would refuse "
            f"every caller. Set it to a token of your own (e.g. from {GENERATE}), or delete "
            ".env and `make run` writes a fresh one",
            2,
        )
    if not sandbox and not settings.sinch_callback_secrets:
        raise LaunchError(
            f"SINCH_CALLBACK_SECRETS {_where('SINCH_CALLBACK_SECRETS', env_file)}: every callback "
            "would be refused (503). Set it to the secret Sinch signs with "
            "(`python -m app secret show` prints it)",
            2,
        )


def check_port(port: int, variable: str, what: str) -> None:
    if not port_is_free(port):
        raise LaunchError(
            f"port {port} ({variable}, {what}) is in use: stop what listens there (an earlier "
            f"`make run`?) or choose another, e.g. {variable}={port + 1} make run"
        )


def parse_port(text: str, variable: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise LaunchError(f"{variable}={text!r} is not a port (1-65535)", 2)
    return int(text)


def choose_sim_port(requested: str) -> int:
    """SIM_PORT when given (it must be free); else 8010, or any free port when 8010 is taken."""
    if requested:
        port = parse_port(requested, "SIM_PORT")
        check_port(port, "SIM_PORT", "the Sinch simulator")
        return port
    return DEFAULT_SIM_PORT if port_is_free(DEFAULT_SIM_PORT) else _any_free_port()


def masked(url: str) -> str:
    """The URL with its password, if any, as `***`: the only form fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis(settings: Settings) -> None:
    import redis

    shown = masked(settings.redis_url)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        raise LaunchError(
            f"Redis at {shown} (REDIS_URL) does not answer ({type(exc).__name__}): start one, "
            "e.g. `redis-server --daemonize yes --port 6379 --save ''`, or point REDIS_URL "
            "(environment or .env) at a running Redis"
        ) from None


def _array(name: str, items: Sequence[str]) -> str:
    return f"{name}=({' '.join(shlex.quote(item) for item in items)})"


def plan(requested_port: str, requested_sim_port: str, env_file: Path = Path(".env")) -> list[str]:
    """The checks, in order; answers the bash lines scripts/run evaluates."""
    port = parse_port(requested_port, "PORT")
    settings = load_settings()
    sandbox = sandbox_wanted(settings)
    check_secrets(settings, sandbox=sandbox, env_file=env_file)
    check_port(port, "PORT", "the API")
    lines = [f"SANDBOX={int(sandbox)}"]
    # The processes' output goes to files: text lines unless LOG_FORMAT says otherwise.
    service_env = ["LOG_FORMAT=text"] if settings.log_format == "auto" else []
    if sandbox:
        sim_port = choose_sim_port(requested_sim_port)
        base_url = f"http://127.0.0.1:{sim_port}"
        key_secret = secrets.token_urlsafe(18)
        hmac_secret = secrets.token_urlsafe(24)
        lines.append(f"SIM_PORT={sim_port}")
        lines.append(
            _array(
                "SIM_ARGS",
                [
                    "--port",
                    str(sim_port),
                    "--project-id",
                    SIM_PROJECT_ID,
                    "--key-id",
                    SIM_KEY_ID,
                    "--key-secret",
                    key_secret,
                    "--hmac-secret",
                    hmac_secret,
                ],
            )
        )
        service_env += [
            f"SINCH_API_BASE_URL={base_url}",
            f"SINCH_AUTH_URL={base_url}/oauth2/token",
            f"SINCH_PROJECT_ID={SIM_PROJECT_ID}",
            f"SINCH_KEY_ID={SIM_KEY_ID}",
            f"SINCH_KEY_SECRET={key_secret}",
            f"SINCH_CALLBACK_SECRETS={hmac_secret}",
        ]
    else:
        lines.append(f"SINCH_URL={shlex.quote(settings.sinch_api_base_url)}")
    lines.append(_array("SERVICE_ENV", service_env))
    check_redis(settings)
    lines.append(f"DATABASE={shlex.quote(settings.safe_database_url())}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.launch", description=__doc__)
    parser.add_argument("--port", default="8000", help="the API's port (PORT)")
    parser.add_argument(
        "--sim-port", default="", help="the simulator's port (SIM_PORT); empty: 8010 or any free"
    )
    args = parser.parse_args(argv)
    try:
        lines = plan(args.port, args.sim_port)
    except LaunchError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return exc.status
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
