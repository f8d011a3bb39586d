"""A mistake on the command line is one line naming what to fix, and a non-zero exit: never a
traceback. The commands run as a user runs them, in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_module(tmp_path, "app", *args, **env)


def run_module(
    tmp_path: Path, module: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("SINCH_", "DATABASE"))}
    # devtools is found from the checkout, whatever the folder the command runs in.
    variables.update({"PYTHONPATH": str(ROOT), **env})  # no DATABASE_URL unless given
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=variables,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


def test_a_base_url_ending_in_v1_is_refused_and_named(tmp_path: Path) -> None:
    result = run(tmp_path, "reconcile", SINCH_API_BASE_URL="https://sinch.example/v1/")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "SINCH_API_BASE_URL" in line and "https://sinch.example" in line


def test_an_unreachable_auth_url_is_named(tmp_path: Path, database_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/oauth2/token"
    result = run(
        tmp_path,
        "reconcile",
        DATABASE_URL=database_url,
        SINCH_PROJECT_ID="project",
        SINCH_KEY_ID="key",
        SINCH_KEY_SECRET="key-secret-never-shown",
        SINCH_AUTH_URL=closed,
        SINCH_API_BASE_URL=f"http://127.0.0.1:{free_port()}",
        SINCH_MAX_ATTEMPTS="1",
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert closed in line and "SINCH_AUTH_URL" in line
    assert "key-secret-never-shown" not in result.stderr + result.stdout


@pytest.mark.parametrize("days", ["-1", "soon"])
def test_prune_refuses_a_negative_or_unreadable_days(tmp_path: Path, days: str) -> None:
    result = run(tmp_path, "prune", "--days", days)
    assert result.returncode == 2
    assert "--days" in result.stderr and "Traceback" not in result.stderr


def test_replay_failed_without_credentials_warns_that_they_will_fail_again(
    tmp_path: Path, database_url: str
) -> None:
    result = run(
        tmp_path,
        "replay",
        "--failed",
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert result.returncode == 0, result.stderr
    assert "will fail again" in result.stderr
    assert "replaying 0 events" in result.stdout


def test_every_option_of_every_command_has_help_with_its_default(tmp_path: Path) -> None:
    top = run(tmp_path, "--help")
    assert top.returncode == 0
    commands = [("app", c) for c in ("serve", "reconcile", "replay", "prune", "sign")]
    commands += [("devtools", "simulator"), ("devtools", "demo")]
    for module, command in commands:
        shown = run_module(tmp_path, module, command, "--help")
        assert shown.returncode == 0, shown.stderr
        options = [line for line in shown.stdout.splitlines() if line.strip().startswith("--")]
        for option in options:
            if "--help" in option:
                continue
            block = shown.stdout[shown.stdout.index(option) :].split("\n  -")[0]
            assert len(block.split(maxsplit=2)) > 1, f"{command} {option} has no help"
    serve = run(tmp_path, "serve", "--help").stdout
    assert "(default: 8000)" in serve and "(default: 127.0.0.1)" in serve
