"""Who may do what: `read` tokens look, `write` tokens also act; database tokens are revocable.

Every route of /openapi.json is walked with a token of each scope (a route added later is covered
without touching this file); revocation is checked against two real API processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.models import ApiToken, AuditEntry
from app.core.settings import Settings
from app.main import create_app
from app.tokens.principal import Principal, Scope
from app.web.auth import principal_named, token_fingerprint
from app.web.deps import Resources
from tests.api.conftest import API_TOKEN, AUTH, assert_problem
from tests.api.test_auth import SAMPLE_PATH_VALUES
from tests.support.processes import start_api
from tests.support.reads import rows
from tests.support.servers import serve
from tests.support.tokens import bearer, make_token, revoke_token

REVOCATION_BOUND = 5.0
"""The contract: a revoked token is refused by every API process within 5 seconds."""


def operations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path as called, path as documented) of every /v1 operation."""
    return [
        (method.upper(), path.format(**SAMPLE_PATH_VALUES), path)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method in item
    ]


def needs_write(method: str, path: str) -> bool:
    """The contract: `read` is every GET under /v1 (the change feed and its stream included);
    everything that acts, and the audit trail, needs `write`."""
    return method != "GET" or path == "/v1/audit"


async def call(client: httpx.AsyncClient, method: str, path: str, token: str) -> httpx.Response:
    params = {"wait": "0"} if path == "/v1/changes" else None
    if path == "/v1/changes/stream":
        # Open the stream only to read its status: it never ends by itself.
        async with client.stream(method, path, headers=bearer(token)) as response:
            content = await response.aread() if response.status_code != 200 else b""
            return httpx.Response(response.status_code, headers=response.headers, content=content)
    return await client.request(method, path, headers=bearer(token), params=params)


async def test_every_route_against_both_scopes(api: httpx.AsyncClient, settings: Settings) -> None:
    reader = await make_token(settings, "reporting", Scope.READ)
    writer = await make_token(settings, "operator", Scope.WRITE)
    document = (await api.get("/openapi.json")).json()
    walked = operations(document)
    assert len(walked) >= 18, walked

    for method, path, documented in walked:
        where = f"{method} {documented}"
        as_reader = await call(api, method, path, reader)
        if needs_write(method, documented):
            body = assert_problem(as_reader, 403)
            assert "`read`" in body["detail"] and "`write`" in body["detail"], where
        else:
            assert as_reader.status_code not in (401, 403), (where, as_reader.text)
        assert reader not in as_reader.text, where

        as_writer = await call(api, method, path, writer)
        assert as_writer.status_code not in (401, 403), (where, as_writer.text)
        assert writer not in as_writer.text, where


async def test_a_read_token_reads_and_is_refused_every_write(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    reader = await make_token(settings, "reporting", Scope.READ)
    assert (await api.get("/v1/events", headers=bearer(reader))).status_code == 200
    changes = await api.get("/v1/changes", params={"wait": "0"}, headers=bearer(reader))
    assert changes.status_code == 200
    refused = await api.post("/v1/events/1/replay", headers=bearer(reader))
    body = assert_problem(refused, 403)
    assert "www-authenticate" not in refused.headers  # the token is fine; its scope is not
    assert reader not in refused.text
    # The audit trail is for those who may act.
    assert_problem(await api.get("/v1/audit", headers=bearer(reader)), 403)
    assert body["status"] == 403


async def test_a_revoked_token_is_refused_and_its_name_never_reused(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    token = await make_token(settings, "leaked", Scope.WRITE)
    assert (await api.get("/v1/events", headers=bearer(token))).status_code == 200
    await revoke_token(settings, "leaked")

    deadline = time.monotonic() + REVOCATION_BOUND
    while (await api.get("/v1/events", headers=bearer(token))).status_code != 401:
        assert time.monotonic() < deadline, "the revoked token is still accepted"
        await asyncio.sleep(0.1)
    refused = await api.get("/v1/events", headers=bearer(token))
    assert_problem(refused, 401)
    assert token not in refused.text

    from app.tokens.service import TokenError

    with pytest.raises(TokenError, match="never reused"):
        await make_token(settings, "leaked", Scope.READ)


async def test_tokens_are_kept_as_hashes_and_last_use_is_recorded(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    token = await make_token(settings, "reporting", Scope.READ)
    [row] = await rows(settings, ApiToken, ApiToken.id)
    assert token not in (row.token_hash, row.name)
    assert row.last_used_at is None

    for _ in range(20):  # many requests, one write of the last use
        assert (await api.get("/v1/events", headers=bearer(token))).status_code == 200
    deadline = time.monotonic() + 10
    while (row := (await rows(settings, ApiToken, ApiToken.id))[0]).last_used_at is None:
        assert time.monotonic() < deadline, "last use never written"
        await asyncio.sleep(0.05)
    first = row.last_used_at
    for _ in range(5):
        assert (await api.get("/v1/events", headers=bearer(token))).status_code == 200
    await asyncio.sleep(0.3)  # give a (wrong) second write the chance to land
    assert (await rows(settings, ApiToken, ApiToken.id))[0].last_used_at == first


async def test_principal_named_follows_revocation(settings: Settings) -> None:
    """What the console asks on each request of a signed-in session."""
    await make_token(settings, "console-user", Scope.READ)
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        resources: Resources = state["resources"]
        assert await principal_named(resources, "console-user", "") == Principal(
            "console-user", Scope.READ
        )
        env_token = token_fingerprint(API_TOKEN)
        assert await principal_named(resources, "env:1", env_token) == Principal(
            "env:1", Scope.WRITE
        )
        assert await principal_named(resources, "env:1", token_fingerprint("another")) is None
        assert await principal_named(resources, "env:2", env_token) is None
        assert await principal_named(resources, "nobody", "") is None
        await revoke_token(settings, "console-user")
        deadline = time.monotonic() + REVOCATION_BOUND
        while await principal_named(resources, "console-user", "") is not None:
            assert time.monotonic() < deadline, "a revoked token's session would go on"
            await asyncio.sleep(0.1)


async def test_database_tokens_work_without_any_bootstrap_token(
    database_url: str, redis_url: str
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(database_url, redis_url, internal_api_tokens=[])
    token = await make_token(settings, "only-one", Scope.WRITE)
    async with serve(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as c:
        assert (await c.get("/v1/events", headers=bearer(token))).status_code == 200
        body = assert_problem(await c.get("/v1/events", headers=AUTH), 401)
        assert body["detail"] == "The bearer token is not accepted."


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_revocation_by_the_command_line_reaches_a_second_api_process(
    settings: Settings, tmp_path: Path
) -> None:
    import os

    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "INTERNAL_API_TOKENS": "bootstrap-token-for-this-test-only",
        "SINCH_CALLBACK_SECRETS": "a-callback-secret-for-this-test",
    }
    created = await asyncio.to_thread(
        _cli, env, "token", "create", "billing", "--scope", "read", cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("sr_") and "billing" in created.stderr
    assert token not in created.stderr

    first, first_url = await asyncio.to_thread(start_api, env, tmp_path / "api-1.log")
    second, second_url = await asyncio.to_thread(start_api, env, tmp_path / "api-2.log")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for url in (first_url, second_url):
                answer = await client.get(f"{url}/v1/events", headers=bearer(token))
                assert answer.status_code == 200, answer.text
                answer = await client.post(f"{url}/v1/events/1/replay", headers=bearer(token))
                assert answer.status_code == 403

            listed = await asyncio.to_thread(_cli, env, "token", "list", cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            [line] = [row for row in listed.stdout.splitlines() if row.startswith("billing ")]
            assert " read " in line
            assert token not in listed.stdout

            revoked = await asyncio.to_thread(_cli, env, "token", "revoke", "billing", cwd=tmp_path)
            assert revoked.returncode == 0, revoked.stderr
            deadline = time.monotonic() + REVOCATION_BOUND
            refused: set[str] = set()
            while refused != {first_url, second_url}:
                assert time.monotonic() < deadline, (
                    f"still accepted by {refused ^ {first_url, second_url}}"
                )
                for url in (first_url, second_url):
                    answer = await client.get(f"{url}/v1/events", headers=bearer(token))
                    if answer.status_code == 401:
                        refused.add(url)
                await asyncio.sleep(0.05)

            again = await asyncio.to_thread(_cli, env, "token", "revoke", "billing", cwd=tmp_path)
            assert again.returncode == 1 and "no live token" in again.stderr
            reused = await asyncio.to_thread(
                _cli, env, "token", "create", "billing", "--scope", "write", cwd=tmp_path
            )
            assert reused.returncode == 2 and "never reused" in reused.stderr
            malformed = await asyncio.to_thread(
                _cli, env, "token", "create", "env:9", "--scope", "write", cwd=tmp_path
            )
            assert malformed.returncode == 2 and reused.stdout == malformed.stdout == ""
            listed = await asyncio.to_thread(_cli, env, "token", "list", cwd=tmp_path)
            assert "billing" not in listed.stdout
            listed = await asyncio.to_thread(_cli, env, "token", "list", "--all", cwd=tmp_path)
            [line] = [row for row in listed.stdout.splitlines() if row.startswith("billing ")]
            assert line.split()[-1] != "-"  # its revocation time
            assert line.split()[-2] != "-"  # last used: it was used above
    finally:
        first.stop()
        second.stop()
    logs = (tmp_path / "api-1.log").read_text() + (tmp_path / "api-2.log").read_text()
    assert token not in logs
    audited = await rows(settings, AuditEntry, AuditEntry.id)
    assert [(e.action, e.target) for e in audited] == [
        ("token.create", "billing"),
        ("token.revoke", "billing"),
    ]
    assert all(e.actor.startswith("cli:") and e.client.startswith("cli@") for e in audited)
