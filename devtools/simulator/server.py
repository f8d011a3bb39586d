"""Running the simulator: in the foreground (`python -m devtools simulator`) or in a thread."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from devtools.simulator.projects import ProjectKeys, ProjectsSimulator

DEFAULT_PROJECT_ID = "sim-project"
DEFAULT_KEY_ID = "sim-key-id"
DEFAULT_KEY_SECRET = "sim-key-secret"  # noqa: S105 -- the simulator's own, public, fake credential
DEFAULT_HMAC_SECRET = "sim-hmac-secret"  # noqa: S105 -- likewise


def default_secrets(project_id: str) -> tuple[str, str]:
    """The published fake key secret and HMAC secret of another project than the first,
    distinct per project (`sim-key-secret-<id>`, `sim-hmac-secret-<id>`)."""
    return f"{DEFAULT_KEY_SECRET}-{project_id}", f"{DEFAULT_HMAC_SECRET}-{project_id}"


def state_file_of(state_file: Path, project_id: str) -> Path:
    """Where another project than the first keeps its state: beside `state_file`, named
    `<stem>.<project id><suffix>` (var/simulator.json: var/simulator.brand-b.json)."""
    return state_file.with_name(f"{state_file.stem}.{project_id}{state_file.suffix}")


def run_simulator(
    host: str,
    port: int,
    *,
    project_id: str = DEFAULT_PROJECT_ID,
    key_id: str = DEFAULT_KEY_ID,
    key_secret: str = DEFAULT_KEY_SECRET,
    hmac_secret: str = DEFAULT_HMAC_SECRET,
    token_ttl_seconds: int = 3600,
    seed: int | None = None,
    log_level: str = "info",
    state_file: Path | None = None,
    other_projects: Sequence[tuple[ProjectKeys, str]] = (),
) -> None:
    """Serve the simulator on `host:port` until interrupted (Ctrl-C or SIGTERM).

    Prints first how to point the service at it. Its credentials are its own and fake; they are
    printed only when they are the published defaults, so a secret passed in stays out of logs.
    With `state_file`, it starts with the registrations and events saved there (when the file
    exists) and saves them there when it stops, so they outlive a restart.

    `other_projects`: more projects served at the same address (devtools/simulator/projects.py),
    each with its own keys, secrets and state (its state file: `state_file_of`), with the name of
    the environment variable suffix its secrets came from (for the printed instructions).
    """
    base = f"http://{host}:{port}"

    def shown(value: str, default: str, variable: str) -> str:
        return value if value == default else f"<as given by {variable}>"

    print(
        f"Sinch simulator on {base} (control API: {base}/_sim/..., documented at {base}/docs)\n"
        "Point the service at it with:\n"
        f"  SINCH_API_BASE_URL={base}\n"
        f"  SINCH_AUTH_URL={base}/oauth2/token\n"
        f"  SINCH_PROJECT_ID={project_id}\n"
        f"  SINCH_KEY_ID={key_id}\n"
        f"  SINCH_KEY_SECRET={shown(key_secret, DEFAULT_KEY_SECRET, 'SIMULATOR_KEY_SECRET')}\n"
        "  SINCH_CALLBACK_SECRETS="
        f"{shown(hmac_secret, DEFAULT_HMAC_SECRET, 'SIMULATOR_HMAC_SECRET')}",
        flush=True,
    )
    for other, suffix in other_projects:
        key_default, hmac_default = default_secrets(other.project_id)
        print(
            f"Project {other.project_id} (control API: {base}/_sim/projects/{other.project_id}"
            "/_sim/...); add it to the service with:\n"
            "  PROJECT_KEY_SECRET="
            f"{shown(other.key_secret, key_default, f'SIMULATOR_KEY_SECRET_{suffix}')} "
            "PROJECT_CALLBACK_SECRET="
            f"{shown(other.hmac_secret, hmac_default, f'SIMULATOR_HMAC_SECRET_{suffix}')} "
            f"python -m app project add {other.project_id} --key-id {other.key_id}",
            flush=True,
        )
    first = ProjectKeys(project_id, key_id, key_secret, hmac_secret)
    keys = [first, *(other for other, _ in other_projects)]
    simulator = ProjectsSimulator(keys, token_ttl_seconds=token_ttl_seconds, seed=seed)
    served: ASGIApp = simulator if other_projects else simulator.first
    if state_file is not None:
        files = [
            (simulator.apps[p.project_id], state_file_of(state_file, p.project_id))
            for p in keys[1:]
        ]
        files.insert(0, (simulator.first, state_file))
        for app, path in files:
            load_state(app, path)
        if other_projects:
            simulator.at_shutdown.extend(
                functools.partial(save_state, app, path) for app, path in files
            )
        else:
            _save_at_shutdown(simulator.first, state_file)
    uvicorn.run(served, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


def _save_at_shutdown(app: FastAPI, path: Path) -> None:
    """Save the state as the app shuts down: uvicorn re-raises the stopping signal after its
    shutdown, so code after `uvicorn.run` would not run."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def keeping(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as value:
            yield value
        save_state(app, path)

    app.router.lifespan_context = keeping


def load_state(app: FastAPI, path: Path) -> None:
    """Restore the simulator's registrations from `path`, if it exists; one line says how many.
    A file that cannot be read is set aside (`.unreadable`) and the simulator starts empty."""
    if not path.is_file():
        return
    state = app.state.simulator
    try:
        state.restore(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        path.replace(path.with_name(path.name + ".unreadable"))
        print(f"{path} is unreadable ({type(exc).__name__}): starting empty", flush=True)
        state.reset()
        return
    print(f"{len(state.registrations)} registrations restored from {path}", flush=True)


def save_state(app: FastAPI, path: Path) -> None:
    """Write the simulator's registrations to `path` (whole or not at all: a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(app.state.simulator.snapshot()))
    os.replace(scratch, path)
    print(f"{len(app.state.simulator.registrations)} registrations saved to {path}", flush=True)


class SimulatorServer:
    """The simulator served by uvicorn in a background thread, for tests, benchmarks and demos.

    Use it as a context manager, `with` or `async with`: entering binds `host` (port 0 picks a
    free port) and waits, at most `startup_timeout_seconds`, until the server accepts requests;
    leaving stops it. `base_url` is both SINCH_API_BASE_URL and, with `/oauth2/token`,
    SINCH_AUTH_URL (`auth_url`). The credentials are the simulator's own, fake ones.
    """

    def __init__(
        self,
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        key_id: str = DEFAULT_KEY_ID,
        key_secret: str = DEFAULT_KEY_SECRET,
        hmac_secret: str = DEFAULT_HMAC_SECRET,
        token_ttl_seconds: int = 3600,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_seconds: float = 10.0,
        log_level: str = "warning",
        other_projects: Sequence[ProjectKeys] = (),
    ) -> None:
        self.project_id = project_id
        self.key_id = key_id
        self.key_secret = key_secret
        self.hmac_secret = hmac_secret
        self.host = host
        # `other_projects`: served too, each with its own keys and state (devtools/simulator/
        # projects.py); `app` stays the first project's simulator, `served` what uvicorn runs.
        first = ProjectKeys(project_id, key_id, key_secret, hmac_secret)
        self.projects = ProjectsSimulator(
            [first, *other_projects], token_ttl_seconds=token_ttl_seconds, seed=seed
        )
        self.app: FastAPI = self.projects.first
        self.served: ASGIApp = self.projects if other_projects else self.app
        self._requested_port = port
        self._startup_timeout = startup_timeout_seconds
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "stopped"
        return f"SimulatorServer({where}, project_id={self.project_id!r})"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """`http://host:port`, without `/v1`."""
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    def env(self) -> dict[str, str]:
        """The service's environment variables that point it at this simulator."""
        return {
            "SINCH_API_BASE_URL": self.base_url,
            "SINCH_AUTH_URL": self.auth_url,
            "SINCH_PROJECT_ID": self.project_id,
            "SINCH_KEY_ID": self.key_id,
            "SINCH_KEY_SECRET": self.key_secret,
            "SINCH_CALLBACK_SECRETS": self.hmac_secret,
        }

    def start(self) -> None:
        """Bind, serve in a daemon thread and wait until ready; RuntimeError if it never is."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.served,
            log_level=self._log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"sinch-simulator-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread (bounded); safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
