"""One log stream: the real processes (`uvicorn app.main:app`, `arq app.worker.WorkerSettings`)
write every line through the service's formatter, uvicorn's and arq's own lines included, and log
each event at the level its outcome deserves."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ServiceProcess, private_redis, start_api, start_worker
from tests.support.signing import sign

pytestmark = pytest.mark.slow

SECRET = "process-logs-callback-secret"
TOKEN = "process-logs-api-token"
CALLBACK_PATH = "/callbacks/sinch/registrations"
MISSING_CREDENTIALS = "SINCH_PROJECT_ID, SINCH_KEY_ID or SINCH_KEY_SECRET is not set"
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: "
)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "redis").mkdir()
    with private_redis(tmp_path / "redis") as redis_server:
        yield {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "SINCH_CALLBACK_SECRETS": SECRET,
            "INTERNAL_API_TOKENS": TOKEN,
            # No Sinch credentials: a doubtful event fails (and the start-up warns once).
            "SINCH_PROJECT_ID": "",
            "SINCH_KEY_ID": "",
            "SINCH_KEY_SECRET": "",
            "RECONCILE_INTERVAL_SECONDS": "0",
            "SWEEP_INTERVAL_SECONDS": "1",
        }


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log as JSON; fails naming the first line that is not."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
        assert isinstance(parsed, dict), line
        assert {"time", "level", "logger", "message"} <= set(parsed), line
        lines.append(parsed)
    return lines


def messages(lines: list[dict[str, Any]], logger: str) -> list[str]:
    return [line["message"] for line in lines if line["logger"] == logger]


def wait_for(path: Path, *texts: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace")
        if all(text in content for text in texts):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path.name} never showed {texts}")


def post(base_url: str, body: bytes) -> None:
    answer = httpx.post(
        base_url + CALLBACK_PATH, content=body, headers={"X-Sinch-Signature": sign(body, SECRET)}
    )
    assert answer.status_code == 200, answer.text


def test_api_and_worker_write_only_json_lines(env: dict[str, str], tmp_path: Path) -> None:
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    processes: list[ServiceProcess] = []
    try:
        processes.append(start_worker(env, worker_log))
        api, base_url = start_api(env, api_log)
        processes.append(api)
        # A registration not known here needs a GET, which cannot be made without credentials.
        unknown = {"resourceId": "reg-x", "status": "APPROVED", "createTime": "2026-01-01T10:00:00"}
        post(base_url, json.dumps(unknown).encode())
        post(base_url, b"not json")
        wait_for(worker_log, '"event failed"', '"event invalid"')
    finally:
        for process in processes:
            process.stop()

    api_lines, worker_lines = json_lines(api_log), json_lines(worker_log)

    # uvicorn's own lines, from start to stop, in our format.
    uvicorn = messages(api_lines, "uvicorn.error")
    assert any(m.startswith("Started server process") for m in uvicorn), uvicorn
    assert "Application startup complete." in uvicorn
    assert any(m.startswith("Uvicorn running on") for m in uvicorn), uvicorn
    assert any(m.startswith("Finished server process") for m in uvicorn), uvicorn
    assert all("color_message" not in line for line in api_lines)
    # Access lines repeat the service's own lines: only at DEBUG (next test).
    assert messages(api_lines, "uvicorn.access") == []

    # arq's start-up lines (logged before the worker's own start-up hook) and shutdown lines.
    arq = messages(worker_lines, "arq.worker")
    assert any(m.startswith("Starting worker for") for m in arq), arq
    assert any(m.startswith("shutdown on SIGTERM") for m in arq), arq
    # Not its two lines per job.
    assert not [m for m in arq if "→" in m or "←" in m], arq

    # Missing credentials: one warning per process start, no error.
    for lines in (api_lines, worker_lines):
        warned = [line for line in lines if MISSING_CREDENTIALS in line["message"]]
        assert [line["level"] for line in warned] == ["warning"]
        assert [line for line in lines if line["level"] in ("error", "critical")] == []

    # Each event at the level of its outcome.
    events = [
        (line["level"], line["message"], line["outcome"])
        for line in worker_lines
        if line["logger"] == "app.worker.tasks" and "outcome" in line
    ]
    assert sorted(events) == [
        ("warning", "event failed", "failed:not_configured"),
        ("warning", "event invalid", "invalid:not_json"),
    ]


def test_debug_level_adds_access_and_job_lines_still_json(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "LOG_LEVEL": "DEBUG"}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    processes: list[ServiceProcess] = []
    try:
        processes.append(start_worker(env, worker_log))
        api, base_url = start_api(env, api_log)
        processes.append(api)
        assert httpx.get(base_url + "/healthz").status_code == 200
        wait_for(api_log, "GET /healthz")
        wait_for(worker_log, "cron:sweep")  # arq's per-job lines of the sweep, each second
    finally:
        for process in processes:
            process.stop()

    access = messages(json_lines(api_log), "uvicorn.access")
    assert any('"GET /healthz HTTP/1.1" 200' in m for m in access), access
    arq = messages(json_lines(worker_log), "arq.worker")
    assert any("→ cron:sweep" in m for m in arq), arq


def test_text_format_formats_uvicorns_lines_too(env: dict[str, str], tmp_path: Path) -> None:
    api_log = tmp_path / "api.log"
    api, _ = start_api({**env, "LOG_FORMAT": "text"}, api_log)
    api.stop()
    lines = api_log.read_text().splitlines()
    assert [line for line in lines if not TEXT_LINE.match(line)] == []
    assert any("INFO    uvicorn.error: Started server process" in line for line in lines), lines
