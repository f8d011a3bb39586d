"""`python -m app --help` and the simple commands start fast: they import none of the heavy
libraries (SQLAlchemy, FastAPI, arq, Redis, uvicorn); a command imports what it uses when it runs.
And every help names each default once."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import cli
from app.core.models import DeliveryState, EventState
from devtools import cli as devtools_cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "fastapi", "starlette", "arq", "redis", "uvicorn", "httpx", "asyncpg")


def _heavy_imported(code: str, cwd: Path, **env: str) -> list[str]:
    """The heavy modules loaded by running `code` (which must not print on stdout)."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(answer.stdout.strip().splitlines()[-1]))


def test_building_the_parser_imports_no_heavy_module(tmp_path: Path) -> None:
    assert _heavy_imported("import app.cli; app.cli.build_parser()", tmp_path) == []


@pytest.mark.parametrize("argv", [["--help"], ["token", "list", "--help"], ["prune", "--help"]])
def test_help_imports_no_heavy_module(tmp_path: Path, argv: list[str]) -> None:
    code = (
        "import contextlib, io, app.cli\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    app.cli.main({argv!r})"
    )
    assert _heavy_imported(code, tmp_path) == []


def test_sign_reads_the_settings_without_sqlalchemy(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, app.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert app.cli.main(['sign']) == 0\n"
        "assert out.getvalue().startswith('curl ')"
    )
    database = "postgresql+asyncpg://someone:pw@127.0.0.1/nothing"
    heavy = _heavy_imported(code, tmp_path, SINCH_CALLBACK_SECRETS="s3", DATABASE_URL=database)
    assert heavy == []


def test_the_spelt_out_choices_are_the_enums_values() -> None:
    assert tuple(s.value for s in EventState if s is not EventState.RECEIVED) == cli.PRUNABLE_STATES
    assert tuple(s.value for s in DeliveryState) == cli.DELIVERY_STATES


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _entries(help_text: str) -> list[str]:
    """The help's entries, one per option or positional (an entry's wrapped lines joined)."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^  \S", line) or not entries:
            entries.append(line.strip())
        else:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("build", [cli.build_parser, devtools_cli.build_parser])
def test_no_help_entry_names_its_default_twice(
    build: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert callable(build)
    checked = 0
    for parser in _parsers(build()):
        for entry in _entries(parser.format_help()):
            assert len(re.findall(r"default", entry, re.IGNORECASE)) <= 1, entry
            assert "(default: None)" not in entry and "(default: False)" not in entry, entry
            checked += 1
    assert checked > 20
    # The defaults worth naming still are.
    prune = cli.build_parser().parse_args(["prune"])
    assert prune.command == "prune"
    serve_help = next(p for p in _parsers(cli.build_parser()) if p.prog.endswith(" serve"))
    assert "(default: 8000)" in serve_help.format_help()
