"""The README's first run, as a new user runs it: `make run` without Sinch credentials (the
sandbox) nor DATABASE_URL (an embedded PostgreSQL under var/), the banner's next step exactly as
printed, the curl it prints; and each way `make run` refuses to start, with its one line and a
non-zero exit.

Each test runs `scripts/run` (what `make run` runs once installed) in a copy of the working tree
whose `.venv` is this test run's own environment (so nothing is installed), with its own ports and
a private Redis (or none: the embedded Valkey), and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import PrivateRedis, private_redis
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
SANDBOX_LINE = "SANDBOX: callbacks and GETs go to the built-in Sinch simulator"
LEFT_OUT = ("SINCH_", "DATABASE_URL", "REDIS_URL", "INTERNAL_API_TOKENS", "LOG_", "WORKER_METRICS")

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the working tree (tracked and new files, not ignored ones: no .env, no var/)."""
    folder = tmp_path / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def user_env(redis: PrivateRedis, **extra: str) -> dict[str, str]:
    """A user's environment: no Sinch or service variables, this test's ports and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEFT_OUT)}
    env.pop("PORT", None)
    env.pop("SIM_PORT", None)
    env.update(
        PORT=str(free_port()),
        SIM_PORT=str(free_port()),
        REDIS_URL=redis.url,
        WORKER_METRICS_PORT="0",  # beside a developer's own `make run`
    )
    env.update(extra)
    return env


def run_until_exit(checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checkout / "scripts" / "run")],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )


def problem_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `run: ...` line naming the problem (after the progress lines); no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("run: ")]
    return line


class Running:
    """`scripts/run` in the background in its own process group, its output read line by line."""

    def __init__(self, checkout: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(checkout / "scripts" / "run")],
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, pattern: str) -> str:
        """The first line matching `pattern`, waiting at most START_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}: {self.seen}") from None
            if line is None:
                raise AssertionError(f"exited before {pattern!r}: {self.seen}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it (the whole group); then nothing of it may be left."""
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGINT)
            code = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while True:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return code
                if time.monotonic() > deadline:
                    raise AssertionError("processes of `make run` outlived it")
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            if self.process.poll() is None:
                self.process.wait(timeout=10)


def command_lines(group: int) -> list[str]:
    """The command lines of a process group's processes, as `ps` shows them to anyone."""
    listed = subprocess.run(
        ["ps", "-eo", "pgid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [line.split(None, 1)[1] for line in listed.splitlines() if line.split()[0] == str(group)]


def assert_no_server_left(checkout: Path) -> None:
    """The embedded PostgreSQL of `make run` stopped with it (it removes its pid file when it
    stops) and no process runs over var/."""
    assert not (checkout / "var" / "postgres" / "postmaster.pid").exists()
    listed = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True)
    assert str(checkout / "var") not in listed.stdout


def test_first_run_in_the_sandbox_shows_a_registration_converging(
    checkout: Path, redis_server: PrivateRedis
) -> None:
    env = user_env(redis_server)
    running = Running(checkout, env)
    try:
        running.read_until(re.escape(SANDBOX_LINE))
        console = running.read_until(r"^\s+Console:")
        assert "/console" in console and "INTERNAL_API_TOKENS" in console
        database = running.read_until(r"^\s+Database:")
        assert "embedded PostgreSQL, data in var/postgres/" in database
        logs = running.read_until(r"^\s+Logs:")
        assert "var/log/api.log" in logs and "var/log/worker.log" in logs
        next_step = running.read_until(r"-m devtools sandbox play").strip()
        sign = running.read_until(r"-m app sign").strip()
        running.read_until(r"Ctrl-C stops")

        # No secret on a command line: the simulator's, the service's, the database's password.
        shown = "\n".join(command_lines(running.process.pid))
        password = (checkout / "var" / "postgres.password").read_text().strip()
        for secret in ("--key-secret", "--hmac-secret", "SINCH_KEY_SECRET=", password):
            assert secret not in shown

        # A second `make run` in this folder is refused, and says what to do.
        second = run_until_exit(checkout, user_env(redis_server))
        line = problem_line(second)
        assert "already runs in this folder" in line and "stop it first" in line

        # The banner's `sign` example is accepted in the sandbox (the simulator signs with .env's
        # callback secret too).
        signed = subprocess.run(
            ["bash", "-c", sign], cwd=checkout, env=env, capture_output=True, text=True, timeout=60
        )
        assert signed.stdout.startswith("HTTP/1.1 200"), signed.stdout + signed.stderr

        # The banner's next step, exactly as printed, in another terminal in this folder.
        played = subprocess.run(
            ["bash", "-c", next_step],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        assert played.returncode == 0, played.stdout + played.stderr
        [registration_id] = re.findall(r"^registration (\S+): APPROVED here", played.stdout, re.M)

        # The curl it printed, exactly as printed.
        printed = played.stdout.split("See it through the API", 1)[1].splitlines()[1:]
        token_line, registration_curl, history_curl, _events_curl = (
            line.strip() for line in printed
        )
        assert registration_id in registration_curl and registration_id in history_curl

        def shell(command: str) -> object:
            done = subprocess.run(
                ["bash", "-c", f"{token_line}\n{command}"],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return json.loads(done.stdout)

        registration = shell(registration_curl)
        assert isinstance(registration, dict)
        assert registration["status"] == "APPROVED"
        history = shell(history_curl)
        assert isinstance(history, dict)
        assert [row["toStatus"] for row in history["items"]] == [
            "IN_QUEUE",
            "IN_PROGRESS",
            "APPROVED",
        ]
        assert (checkout / "var" / "log" / "worker.log").stat().st_size > 0
    finally:
        code = running.interrupt()
    assert code in (0, 130), running.seen
    assert_no_server_left(checkout)

    # The .env the first run wrote holds its two secrets and no simulator value (the simulator's
    # URL and credentials reach the API and the worker as their environment only).
    written = (checkout / ".env").read_text()
    assert set(re.findall(r"^(\w+)=", written, re.M)) == {
        "SINCH_CALLBACK_SECRETS",
        "INTERNAL_API_TOKENS",
    }

    # Started again: the simulator remembers the registration, the database its copy; a failed
    # event is named with its outcome.
    env.update(JOB_MAX_TRIES="1", PORT=str(free_port()), SIM_PORT=str(free_port()))
    running = Running(checkout, env)
    try:
        next_step = running.read_until(r"-m devtools sandbox play").strip()
        simulator = f"http://127.0.0.1:{env['SIM_PORT']}"
        truth = httpx.get(f"{simulator}/_sim/registrations/{registration_id}", timeout=10)
        assert truth.status_code == 200 and truth.json()["status"] == "APPROVED"
        fault = {"kind": "status", "status": 503, "count": 1000, "paths": "api"}
        assert httpx.post(f"{simulator}/_sim/faults", json=fault, timeout=10).status_code == 201
        played = subprocess.run(
            ["bash", "-c", next_step + " --timeout 60"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        assert played.returncode == 1, played.stdout + played.stderr
        [line] = played.stderr.splitlines()
        assert "ended failed:" in line and "worker running" not in line, line
    finally:
        code = running.interrupt()
    assert code in (0, 130), running.seen
    assert_no_server_left(checkout)


@pytest.mark.parametrize(("variable", "what"), [("PORT", "the API"), ("SIM_PORT", "simulator")])
def test_a_port_in_use_is_one_line_and_a_failure(
    checkout: Path, redis_server: PrivateRedis, variable: str, what: str
) -> None:
    env = user_env(redis_server)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env[variable])))
        busy.listen()
        result = run_until_exit(checkout, env)
    line = problem_line(result)
    assert f"port {env[variable]} ({variable}" in line and "in use" in line and what in line


def test_an_env_copied_from_the_example_names_the_empty_token(
    checkout: Path, redis_server: PrivateRedis
) -> None:
    shutil.copy(checkout / ".env.example", checkout / ".env")
    line = problem_line(run_until_exit(checkout, user_env(redis_server)))
    assert "INTERNAL_API_TOKENS is empty in .env" in line


def test_real_credentials_without_a_callback_secret_are_refused(
    checkout: Path, redis_server: PrivateRedis
) -> None:
    (checkout / ".env").write_text(
        "SINCH_PROJECT_ID=project\nSINCH_KEY_ID=key\nSINCH_KEY_SECRET=never-shown\n"
        "SINCH_CALLBACK_SECRETS=\nINTERNAL_API_TOKENS=some-token\n"
    )
    result = run_until_exit(checkout, user_env(redis_server))
    line = problem_line(result)
    assert "SINCH_CALLBACK_SECRETS is empty in .env" in line
    assert "never-shown" not in result.stdout + result.stderr


def test_some_credentials_but_not_all_are_named(checkout: Path, redis_server: PrivateRedis) -> None:
    line = problem_line(run_until_exit(checkout, user_env(redis_server, SINCH_PROJECT_ID="p")))
    assert "SINCH_KEY_ID, SINCH_KEY_SECRET are empty" in line


def test_without_a_redis_an_embedded_valkey_serves_and_stops_with_the_rest(
    checkout: Path, redis_server: PrivateRedis
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    running = Running(checkout, user_env(redis_server, REDIS_URL=closed))
    try:
        said = running.read_until(r"^run: Redis at")
        assert f"Redis at {closed} (REDIS_URL) does not answer" in said and "Valkey" in said
        redis_line = running.read_until(r"^\s+Redis:")
        [port] = re.findall(r"embedded Valkey on port (\d+)", redis_line)
        running.read_until(r"Ctrl-C stops")
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as valkey:
            valkey.sendall(b"CONFIG GET maxmemory-policy\r\n")
            assert b"noeviction" in valkey.recv(1024)
    finally:
        code = running.interrupt()
    assert code in (0, 130), running.seen
    assert_no_server_left(checkout)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(port))) != 0


def test_a_malformed_database_url_is_one_line(checkout: Path, redis_server: PrivateRedis) -> None:
    url = "postgresql+asyncpg//user:never-shown@host/db"
    result = run_until_exit(checkout, user_env(redis_server, DATABASE_URL=url))
    line = problem_line(result)
    assert "DATABASE_URL is not a database URL" in line
    assert "never-shown" not in result.stdout + result.stderr


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_database_url_without_driver_is_taken_as_asyncpg(
    checkout: Path, redis_server: PrivateRedis, scheme: str
) -> None:
    url = f"{scheme}://user:never-shown@127.0.0.1:{free_port()}/db"
    result = run_until_exit(checkout, user_env(redis_server, DATABASE_URL=url))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    hint, problem = [line for line in result.stderr.splitlines() if line.startswith("run: ")]
    assert f"names no driver ({scheme}://): using postgresql+asyncpg://" in hint
    assert "(DATABASE_URL) cannot be upgraded" in problem
    assert "never-shown" not in result.stdout + result.stderr


def test_a_database_that_does_not_answer_is_one_line(
    checkout: Path, redis_server: PrivateRedis
) -> None:
    url = f"postgresql+asyncpg://user:never-shown@127.0.0.1:{free_port()}/db"
    result = run_until_exit(checkout, user_env(redis_server, DATABASE_URL=url))
    line = problem_line(result)
    assert "(DATABASE_URL) cannot be upgraded" in line and "127.0.0.1" in line
    assert "never-shown" not in result.stdout + result.stderr


def test_sandbox_play_without_make_run_says_so(checkout: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEFT_OUT)}
    simulator = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "devtools", "sandbox", "play", "--simulator-url", simulator],
        cwd=checkout,
        env={**env, "INTERNAL_API_TOKENS": "a-token"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: the Sinch simulator at {simulator}/_sim/health does not answer")
    assert "make run" in line


def test_a_misspelt_lifecycle_state_is_refused(checkout: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEFT_OUT)}
    result = subprocess.run(
        [sys.executable, "-m", "devtools", "sandbox", "play", "--lifecycle", "IN_PROGRESS,APPROVD"],
        cwd=checkout,
        env={**env, "INTERNAL_API_TOKENS": "a-token"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "APPROVD is not a registration state" in line and "APPROVED" in line


def test_the_demo_uses_its_own_redis_database_and_cleans_up(
    checkout: Path, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEFT_OUT)}
    result = subprocess.run(
        [sys.executable, "-m", "devtools", "demo", "--registrations", "4"],
        cwd=checkout,
        env={**env, "REDIS_URL": redis_server.url, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(Redis database 14)" in result.stdout
    assert "4/4 registrations match" in result.stdout
    assert "What to look at" in result.stdout
    assert list(scratch.iterdir()) == []
