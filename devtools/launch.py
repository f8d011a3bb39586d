"""What `make run` (scripts/run) checks and decides before it starts a process.

`python -m devtools.launch --port PORT [--sim-port SIM_PORT] [--lock-fd FD]` reads the configuration
as the service will (environment, then ./.env), and either prints bash assignments for scripts/run
to `eval`, or prints one line per problem (`run: ...`, naming the variable or port and how to fix
it) on stderr and exits non-zero. The checks: no other `make run` runs in this folder (a lock on
the file open as FD, held by scripts/run for its lifetime); DATABASE_URL, when set, is a database
URL (`postgres://` and `postgresql://` are taken as `postgresql+asyncpg://`); the settings load;
Sinch credentials are all set (real Sinch) or none is (sandbox: the built-in simulator plays
Sinch); the secrets the processes need are not empty; the ports are free.

Without DATABASE_URL (environment or .env) the database is an embedded PostgreSQL over
./var/postgres (devtools/embedded.py), on a free loopback port with a password of its own in
./var/postgres.password; without a Redis that answers at REDIS_URL, an embedded Valkey on a free
loopback port. Either way the migrate step, the API and the worker get an explicit DATABASE_URL
and REDIS_URL. In the sandbox the simulator's values reach the API and the worker as environment
variables of those processes only (SERVICE_ENV), and the simulator's secrets reach the simulator
as its environment (SIM_ENV): never a command line, never .env.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.settings import Settings, describe_refusal
from devtools.embedded import free_port

DEFAULT_SIM_PORT = 8010
VAR = Path("var")
PG_DATA = VAR / "postgres"
PG_PASSWORD_FILE = VAR / "postgres.password"
PG_DATABASE = "sinch_registrations"
SIM_STATE_FILE = VAR / "simulator.json"
LOCK_FILE = VAR / "run.lock"
EXAMPLE_URL = "postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE"
SIM_PROJECT_ID = "sandbox-project"
SIM_KEY_ID = "sandbox-key"
SANDBOX_FORECAST_INTERVAL_SECONDS = 30
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


def _where(name: str, env_file: Path) -> str:
    """Where a variable that came out empty was set: the environment, .env, or nowhere."""
    if name in os.environ:
        return "is empty in the environment"
    if env_file.is_file():
        from dotenv import dotenv_values

        if name in dotenv_values(env_file):
            return f"is empty in {env_file}"
    return "is not set"


def lock_folder(fd: int, lock_file: Path = LOCK_FILE) -> None:
    """Take the folder's lock on the file open as `fd` (scripts/run's, inherited) and write the
    holder's pid in it. The lock belongs to the open file, so it stays held by scripts/run and its
    processes after this one exits, and goes when the last of them does (even when killed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_file.read_text().strip() if lock_file.is_file() else ""
        raise LaunchError(
            f"`make run` already runs in this folder{f' (process {holder})' if holder else ''}: "
            "use that one, or stop it first (Ctrl-C in its terminal). A second copy here would "
            "share its database, queue and logs; for a second service, use another clone"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getppid()}\n".encode(), 0)


def configured(name: str, env_file: Path) -> str:
    """A variable as the service reads it: the environment first, then .env; '' when unset."""
    if name in os.environ:
        return os.environ[name].strip()
    if env_file.is_file():
        from dotenv import dotenv_values

        return (dotenv_values(env_file).get(name) or "").strip()
    return ""


def normalise_database_url(env_file: Path) -> str:
    """DATABASE_URL as given, checked, with a bare `postgres://`/`postgresql://` taken as
    asyncpg's; '' when unset (the embedded PostgreSQL). The result is put in this process's
    environment so the settings read the same. Never echoes the URL: it may hold a password."""
    given = configured("DATABASE_URL", env_file)
    if not given:
        return ""
    try:
        url = make_url(given)
    except ArgumentError:
        raise LaunchError(
            f"DATABASE_URL is not a database URL: set it to {EXAMPLE_URL}, or remove it for "
            "the embedded PostgreSQL under var/",
            2,
        ) from None
    if url.drivername in ("postgres", "postgresql"):
        given = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        print(
            f"run: DATABASE_URL names no driver ({url.drivername}://): using "
            "postgresql+asyncpg:// (write it so to silence this)",
            file=sys.stderr,
        )
    os.environ["DATABASE_URL"] = given
    return given


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
            f"port {port} ({variable}, {what}) is in use by another program (no `make run` runs "
            f"in this folder): stop that program, or give this folder's service another port, "
            f"e.g. {variable}={port + 1} make run"
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
    return DEFAULT_SIM_PORT if port_is_free(DEFAULT_SIM_PORT) else free_port()


def masked(url: str) -> str:
    """The URL with its password, if any, as `***`: the only form fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_answers(settings: Settings) -> bool:
    """Whether REDIS_URL's Redis answers; when not, one line says an embedded one will serve."""
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        print(
            f"run: Redis at {masked(settings.redis_url)} (REDIS_URL) does not answer "
            f"({type(exc).__name__}): this run uses an embedded Valkey (its queue only lives as "
            "long as the run; callbacks are kept in the database)",
            file=sys.stderr,
        )
        return False
    return True


def _array(name: str, items: Sequence[str]) -> str:
    return f"{name}=({' '.join(shlex.quote(item) for item in items)})"


def _password(path: Path) -> None:
    """The embedded PostgreSQL's password, made once (0600) and kept with its data."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")


def plan(
    requested_port: str,
    requested_sim_port: str,
    env_file: Path = Path(".env"),
    lock_fd: int | None = None,
) -> list[str]:
    """The checks, in order; answers the bash lines scripts/run evaluates."""
    if lock_fd is not None:
        lock_folder(lock_fd)
    port = parse_port(requested_port, "PORT")
    database_url = normalise_database_url(env_file)
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
        # The simulator signs with the callback secret of .env, so that `python -m app sign`
        # (which signs with it too) is accepted in the sandbox as well.
        hmac_secret = (
            settings.sinch_callback_secrets[0].get_secret_value()
            if settings.sinch_callback_secrets
            else secrets.token_urlsafe(24)
        )
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
                    "--state-file",
                    str(SIM_STATE_FILE),
                ],
            )
        )
        lines.append(
            _array(
                "SIM_ENV",
                [f"SIMULATOR_KEY_SECRET={key_secret}", f"SIMULATOR_HMAC_SECRET={hmac_secret}"],
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
        # The sandbox's Aging page fills within half a minute of `sandbox history`, not five.
        if "forecast_interval_seconds" not in settings.model_fields_set:
            service_env.append(f"FORECAST_INTERVAL_SECONDS={SANDBOX_FORECAST_INTERVAL_SECONDS}")
    else:
        lines.append(f"SINCH_URL={shlex.quote(settings.sinch_api_base_url)}")
    taken = {port}
    if database_url:
        lines.append("PG_PORT=")
        lines.append(f"DATABASE={shlex.quote(settings.safe_database_url())}")
    else:
        _password(PG_PASSWORD_FILE)
        pg_port = free_port()
        password = PG_PASSWORD_FILE.read_text().strip()
        database_url = f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{pg_port}/{PG_DATABASE}"
        taken.add(pg_port)
        lines.append(f"PG_PORT={pg_port}")
        lines.append(_array("PG_ARGS", _pg_args(pg_port)))
        lines.append(
            f"DATABASE={shlex.quote(f'embedded PostgreSQL, data in {PG_DATA}/, port {pg_port}')}"
        )
    service_env.append(f"DATABASE_URL={database_url}")
    if redis_answers(settings):
        lines.append("REDIS_PORT=")
        service_env.append(f"REDIS_URL={settings.redis_url}")
    else:
        redis_port = free_port()
        while redis_port in taken:  # picked a moment apart, the two may coincide
            redis_port = free_port()
        lines.append(f"REDIS_PORT={redis_port}")
        service_env.append(f"REDIS_URL=redis://127.0.0.1:{redis_port}/0")
    lines.append(_array("SERVICE_ENV", service_env))
    return lines


def _pg_args(pg_port: int) -> list[str]:
    return [
        "--data",
        str(PG_DATA),
        "--port",
        str(pg_port),
        "--password-file",
        str(PG_PASSWORD_FILE),
        "--database",
        PG_DATABASE,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.launch", description=__doc__)
    parser.add_argument("--port", default="8000", help="the API's port (PORT)")
    parser.add_argument(
        "--sim-port", default="", help="the simulator's port (SIM_PORT); empty: 8010 or any free"
    )
    parser.add_argument(
        "--lock-fd", type=int, default=None, help="the open lock file (var/run.lock) to lock"
    )
    args = parser.parse_args(argv)
    try:
        lines = plan(args.port, args.sim_port, lock_fd=args.lock_fd)
    except LaunchError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return exc.status
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
