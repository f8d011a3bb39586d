"""The worker's own Prometheus endpoint listens on loopback unless WORKER_METRICS_HOST says
otherwise: a real worker process, its listening sockets read from /proc/net."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServiceProcess, start_worker, wait_until
from tests.support.servers import free_port

LISTEN = "0A"


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) of sockets listening on `port`."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == LISTEN and int(hex_port, 16) == port:
                found.add(address)
    return found


def non_loopback_ipv4() -> str | None:
    try:
        output = subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except OSError:
        return None
    addresses = [a for a in output.split() if "." in a and not a.startswith("127.")]
    return addresses[0] if addresses else None


@pytest.fixture
def worker(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log_path = tmp_path / "worker.log"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RECONCILE_INTERVAL_SECONDS": "0",
        "WORKER_METRICS_PORT": str(port),
        "WORKER_METRICS_HOST": "",  # unset: the default
    }
    process: ServiceProcess = start_worker(env, log_path)
    try:
        yield port, log_path
    finally:
        process.stop()


def test_worker_metrics_listen_on_loopback_only(worker: tuple[int, Path]) -> None:
    port, log_path = worker
    wait_until(lambda: listening_addresses(port), timeout=10, what="the metrics port to listen")
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert "sinch_" in response.text or "python_" in response.text

    # 0100007F is 127.0.0.1 (little-endian hex); 0.0.0.0 or :: would be every interface.
    assert listening_addresses(port) == {"0100007F"}, log_path.read_text()
    address = non_loopback_ipv4()
    if address is not None:
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((address, port), timeout=2),
        ):
            pass
