"""The catalog's refresh against the simulator as Sinch: the worker's cron stores every
project's markets and policies once per CATALOG_REFRESH_INTERVAL_SECONDS, and `python -m app
catalog refresh` finds a policy Sinch revised, records what changed and announces it on the
change feed with the registrations under it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from app.catalog import service as catalog
from app.core.db import utcnow
from app.core.models import CatalogMarket, CatalogPolicy, PolicyChange, RegistrationChange
from app.core.settings import Settings
from app.sinch.errors import SinchRetryableError
from app.worker.context import WorkerContext
from app.worker.tasks import refresh_catalog
from devtools.simulator import SimulatorControl
from devtools.simulator.catalog import POLICY_DOCUMENTS
from tests.conftest import API_TOKEN
from tests.support.reads import rows
from tests.worker.test_cli import run_cli
from tests.worker.test_markets import apply

GB = "sim-policy-gb-alphanumeric"


async def test_the_cron_refreshes_each_project_once_per_interval(
    sim: SimulatorControl, worker_ctx: WorkerContext
) -> None:
    settings = worker_ctx["settings"]

    assert await refresh_catalog(worker_ctx) == 1
    markets = await rows(settings, CatalogMarket, CatalogMarket.sort_key)
    assert [(m.market_code, m.available) for m in markets] == [
        ("AU", True),
        ("DE", True),
        ("FR", True),
        ("GB", True),
        ("SE", True),
        ("US", True),
    ]
    policies = {p.policy_id: p for p in await rows(settings, CatalogPolicy)}
    assert set(policies) == {
        GB,
        "sim-policy-se-alphanumeric-multi",
        "sim-policy-de-alphanumeric",
        "sim-policy-fr-alphanumeric",
        "sim-policy-us-longnumber",
        "sim-policy-au-shortcode",
    }
    assert policies["sim-policy-fr-alphanumeric"].status == "DISABLED"
    assert policies[GB].market_code == "GB"

    asked = (await sim.stats())["getPolicy"]
    assert await refresh_catalog(worker_ctx) == 0  # not due again yet: Sinch is not asked
    assert (await sim.stats())["getPolicy"] == asked
    project = settings.settings_project_id
    interval = settings.catalog_refresh_interval_seconds
    async with worker_ctx["sessionmaker"]() as session:
        now = utcnow()
        assert not await catalog.is_due(session, project, now, interval_seconds=interval)
        later = now + timedelta(seconds=interval)
        assert await catalog.is_due(session, project, later, interval_seconds=interval)


async def test_sinch_unavailable_leaves_the_catalog_as_it_was(
    sim: SimulatorControl, worker_ctx: WorkerContext
) -> None:
    assert await refresh_catalog(worker_ctx) == 1
    settings = worker_ctx["settings"]
    before = await rows(settings, CatalogPolicy, CatalogPolicy.policy_id)
    await sim.revise_policy(GB, {"policyStatus": "DISABLED"})
    await sim.inject_fault("status", status=503, count=1000)
    sinch = await worker_ctx["projects"].client(settings.settings_project_id)
    assert sinch is not None

    with pytest.raises(SinchRetryableError):
        await catalog.refresh(worker_ctx["sessionmaker"], sinch, now=utcnow())

    after = await rows(settings, CatalogPolicy, CatalogPolicy.policy_id)
    assert [(p.policy_id, p.digest) for p in after] == [(p.policy_id, p.digest) for p in before]
    assert await rows(settings, PolicyChange) == []


async def test_a_changed_policy_is_recorded_and_announced_on_the_feed(
    sim: SimulatorControl,
    worker_ctx: WorkerContext,
    settings: Settings,
    api_url: str,
    tmp_path: Path,
) -> None:
    under_gb = await sim.create_registration(policy_id=GB)
    elsewhere = await sim.create_registration(policy_id="sim-policy-us-longnumber")
    for document in (under_gb, elsewhere):
        await apply(worker_ctx, document)
    assert await refresh_catalog(worker_ctx) == 1
    original = (await sim.registration(under_gb["id"]))["policyId"]
    assert original == GB
    served = await sim.revise_policy(
        GB,
        {
            **POLICY_DOCUMENTS[GB],
            "policyStatus": "DISABLED",
            "statusDisclaimer": "Paused by the regulator",
        },
    )
    assert served["policyStatus"] == "DISABLED"

    result = await run_cli(settings, "catalog", "refresh", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"1 changed ({GB}), 1 changes on the feed" in result.stdout
    [change] = await rows(settings, PolicyChange)
    assert (change.policy_id, change.registrations) == (GB, 1)
    assert change.diff["changed"] == [
        {"field": "policyStatus", "before": "ENABLED", "after": "DISABLED"},
        {"field": "statusDisclaimer", "before": None, "after": "Paused by the regulator"},
    ]
    assert (change.diff["added"], change.diff["removed"]) == ([], [])
    announced = [c for c in await rows(settings, RegistrationChange) if c.kind == "policy_changed"]
    assert [(c.registration_id, c.source, c.from_status == c.status) for c in announced] == [
        (under_gb["id"], "catalog", True)
    ]
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as v1:
        feed = (await v1.get("/v1/changes", params={"limit": "100"})).json()
        policy = (await v1.get(f"/v1/policies/{GB}")).json()
    kinds = [(i["kind"], i["registrationId"]) for i in feed["items"] if i["kind"] != "status"]
    assert ("policy_changed", under_gb["id"]) in kinds
    assert policy["status"] == "DISABLED"
    assert policy["changes"][0]["changed"][0]["after"] == "DISABLED"

    again = await run_cli(settings, "catalog", "refresh", cwd=tmp_path)
    assert "0 changed, 0 changes on the feed" in again.stdout  # the same document: no change
