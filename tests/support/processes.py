"""Private servers and service processes for tests, each on its own loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from app.web.edge import PROTOCOL
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


# How long a service process may take to start: importing the app takes about 2 s on an idle
# 2-core machine, and several times that when the test processes load it; a bound, not a wait.
START_SECONDS = 60


def wait_until(predicate: object, *, timeout: float, interval: float = 0.05, what: str) -> None:
    """Poll `predicate()` until it is truthy; AssertionError naming `what` after `timeout`."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not ready yet: poll again
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and start."""

    def __init__(self, folder: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.folder = folder
        self.extra_args = extra_args
        """More redis-server options, e.g. ("--rename-command", "INFO", "")."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(client.ping, timeout=10, what="private redis to start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def fill(self, *, headroom: int = 1 << 20) -> None:
        """Cap Redis at `headroom` bytes above what it holds now (policy `noeviction`, arq's), then
        write filler keys until it refuses a write: from then on it refuses every write (OOM)."""
        with self.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + headroom)
            for index in range(100_000):
                try:
                    client.set(f"test-filler:{index}", b"x" * 16384)
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("Redis never refused a write")
            # Just over the cap, a client's buffers freed would make room again: stay well over.
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory", used - min(headroom, used) // 4)

    def free(self) -> None:
        """Delete the filler keys of `fill` (DEL is allowed on a full Redis): room again."""
        with self.client() as client:
            keys = list(client.scan_iter("test-filler:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])


@contextmanager
def private_redis(folder: Path, extra_args: tuple[str, ...] = ()) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder, extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ServiceProcess:
    """`uvicorn app.main:app` or `arq app.worker.WorkerSettings` as a real child process."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    def start(self) -> None:
        log = self.log_path.open("ab")
        # The log's folder as working folder: a developer's ./.env must not leak into tests.
        self.process = subprocess.Popen(
            self.argv, cwd=self.log_path.parent, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting: `stop` then waits for it. Several
        processes asked at once stop side by side instead of one after the other."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, *, timeout: float = 20) -> int | None:
        """SIGTERM (once: a second one would make uvicorn skip its graceful shutdown), wait up to
        `timeout` seconds, then SIGKILL; answers the exit code."""
        if self.process is None:
            return None
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        code = self.process.returncode
        self.process = None
        self._terminated = False
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            self._terminated = False


def service_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    """Environment for a child service: the given variables, nothing from a stray .env."""
    return {
        "LOG_FORMAT": "json",
        "WORKER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        **settings_env,
    }


START_ATTEMPTS = 3
"""Ports a test's API tries: the free port picked may be taken by another test process (or an
outgoing connection) before uvicorn binds it."""


def start_api(env: Mapping[str, str], log_path: Path) -> tuple[ServiceProcess, str]:
    """Start the API on a free loopback port and wait (at most 30 s a try) until it answers
    `/healthz`; on another port when the one picked was taken meanwhile."""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        process = ServiceProcess(
            [
                str(VENV_BIN / "uvicorn"),
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--http",
                PROTOCOL,
            ],
            service_env(env),
            log_path,
        )
        logged = log_path.stat().st_size if log_path.exists() else 0
        process.start()
        base_url = f"http://127.0.0.1:{port}"
        with _stopped_unless_started(process):
            if _answers(process, f"{base_url}/healthz", timeout=START_SECONDS):
                return process, base_url
        process.stop()
        this_try = log_path.read_bytes()[logged:].decode(errors="replace")
        if "address already in use" not in this_try:
            raise AssertionError(f"the API exited at start:\n{this_try[-2000:]}")
    raise AssertionError(f"the API found no free port in {START_ATTEMPTS} tries")


def _answers(process: ServiceProcess, url: str, *, timeout: float) -> bool:
    """True once `url` answers 200; False as soon as the process has exited; AssertionError
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process is not None and process.process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for the API to start")


@contextmanager
def _stopped_unless_started(process: ServiceProcess) -> Iterator[None]:
    """A process whose start is not seen in time is stopped before the failure goes on: nobody
    else holds it yet, so it would outlive the test."""
    try:
        yield
    except BaseException:
        process.stop()
        raise


def start_worker(
    env: Mapping[str, str], log_path: Path, *, deliveries: bool = False, wait: bool = True
) -> ServiceProcess:
    """Start a worker (`arq app.worker.WorkerSettings`, or with `deliveries` the delivery worker
    `arq app.worker.DeliveryWorkerSettings`) and wait until it has run its start-up (it logs
    "worker started", or "delivery worker started"); without `wait`, `wait_worker_started` does
    that later (the caller starts something else meanwhile)."""
    name = "DeliveryWorkerSettings" if deliveries else "WorkerSettings"
    process = ServiceProcess(
        [str(VENV_BIN / "arq"), f"app.worker.{name}"], service_env(env), log_path
    )
    process.start()
    if wait:
        wait_worker_started(process, deliveries=deliveries)
    return process


def wait_worker_started(process: ServiceProcess, *, deliveries: bool = False) -> None:
    """Wait until the worker `start_worker` started has logged the end of its start-up; stop it
    if it does not in time."""
    started = '"delivery worker started"' if deliveries else '"worker started"'
    with _stopped_unless_started(process):
        wait_until(
            lambda: started in process.log_path.read_text(errors="replace"),
            timeout=START_SECONDS,
            what="the worker to start",
        )


def run_cli(env: Mapping[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m app *args` in `cwd` with environment `env`, to its end; stdin is never a
    terminal (a command that would ask for a secret refuses instead)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
