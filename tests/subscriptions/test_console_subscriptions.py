"""Managing subscriptions in the console, form by form, as a browser posts them: create, edit,
send a test event, disable, enable with or without the backlog, rotate the secret, retry the
failed in bulk (the count first), delete. Every form needs the session's CSRF token and a
`write` token; each action is audited as through the API.

The API on loopback, the worker's sending loop, a receiver over real HTTP, PostgreSQL and Redis
(the browser's view of the same pages: tests/test_console_browser.py).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.core.db import utcnow
from app.core.models import PROJECTS, Delivery
from app.core.settings import Settings
from app.tokens.principal import Scope
from tests.api.conftest import API_TOKEN, AUTH, put_registration
from tests.api.test_console_sessions import sign_in
from tests.support.projects import settings_project
from tests.support.receivers import Receiver, receiving, receiving_settings, send_all
from tests.support.tokens import make_token


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return receiving_settings(database_url, redis_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as found:
        yield found


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "no form on the page"
    return found.group(1)


async def test_every_subscription_action_of_the_console(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    async with (
        httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as console,
        httpx.AsyncClient(base_url=str(api.base_url), headers=AUTH, timeout=30) as v1,
    ):
        await sign_in(console, API_TOKEN)
        listing = await console.get("/console/subscriptions")
        csrf = csrf_of(listing)

        # Create: the secret is shown once.
        created = await console.post(
            "/console/subscriptions",
            data={
                "csrf": csrf,
                "url": receiver.url,
                "description": "billing",
                "statuses": "APPROVED, REJECTED",
                "registration_types": "",
                "kinds": "",
            },
        )
        assert created.status_code == 200, created.text
        secret = re.search(r'<pre id="secret">(whsec_[^<]+)</pre>', created.text)
        assert secret
        [made] = (await v1.get("/v1/subscriptions")).json()["items"]
        assert made["statuses"] == ["APPROVED", "REJECTED"] and made["description"] == "billing"
        assert made["registrationTypes"] is None
        sid = made["id"]
        base = f"/console/subscriptions/{sid}"

        # Refused: without the CSRF token, and a URL the settings do not allow.
        forged = await console.post(f"{base}/disable", data={})
        assert forged.status_code == 403
        elsewhere = await console.post(
            "/console/subscriptions", data={"csrf": csrf, "url": "http://10.0.0.1/hook"}
        )
        assert elsewhere.status_code == 422 and "refused" in elsewhere.text

        # Edit: filters back to every value, a new description.
        edited = await console.post(
            f"{base}/edit",
            data={
                "csrf": csrf,
                "url": receiver.url,
                "description": "billing, all",
                "statuses": "",
                "registration_types": "",
                "kinds": "status",
            },
        )
        assert edited.status_code == 303, edited.text
        now = (await v1.get(f"/v1/subscriptions/{sid}")).json()
        assert now["statuses"] is None and now["kinds"] == ["status"]
        assert now["description"] == "billing, all"

        # Deliveries and the attempts log with the receiver's answer.
        await put_registration(sessionmaker, "reg-console-1")
        await number_and_publish(sessionmaker, None)
        await send_all(settings, sessionmaker, sid)
        page = await console.get(base)
        assert page.status_code == 200
        assert 'id="attempts"' in page.text and "webhook-signature" in page.text
        assert secret.group(1) not in page.text
        assert '<pre class="response-body">ok</pre>' in page.text
        assert '<svg class="chart columns"' in page.text
        attempts = await console.get(f"{base}/attempts", params={"outcome": "succeeded"})
        assert attempts.status_code == 200 and "reg-console-1" in attempts.text
        failed_only = await console.get(f"{base}/attempts", params={"outcome": "failed"})
        assert "No attempt yet." in failed_only.text

        # Send a test event: the outcome at once.
        tested = await console.post(f"{base}/test", data={"csrf": csrf})
        assert tested.status_code == 200 and "delivered" in tested.text
        assert receiver.got[-1][1].startswith(b'{"type":"ping"')

        # Disable, then enable with the backlog.
        assert (await console.post(f"{base}/disable", data={"csrf": csrf})).status_code == 303
        assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["enabled"] is False
        enabled = await console.post(f"{base}/enable", data={"csrf": csrf, "backlog": "yes"})
        assert enabled.status_code == 200 and "with its backlog" in enabled.text
        assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["enabled"] is True

        # Retry the failed since a time: the count first, then the retry.
        async with sessionmaker.begin() as session:
            await session.execute(update(Delivery).values(state="failed"))
        since = (utcnow().replace(year=2020)).strftime("%Y-%m-%dT%H:%M")
        confirm = await console.get(f"{base}/retry-failed", params={"since": since})
        assert confirm.status_code == 200
        assert '<p id="failed-count"><strong>1</strong>' in confirm.text
        retried = await console.post(
            f"{base}/retry-failed", data={"csrf": csrf, "since": f"{since}:00+00:00"}
        )
        assert retried.status_code == 200 and "1 failed deliveries" in retried.text
        [delivery] = (await v1.get(f"/v1/subscriptions/{sid}/deliveries")).json()["items"]
        assert delivery["state"] == "pending"

        # Rotate: the new secret once; both sign for a day.
        rotated = await console.post(f"{base}/rotate-secret", data={"csrf": csrf})
        new_secret = re.search(r'<pre id="secret">(whsec_[^<]+)</pre>', rotated.text)
        assert new_secret and new_secret.group(1) != secret.group(1)
        assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["previousSecretUntil"]

        # A read token sees the page and no form.
        reader = await make_token(settings, "console-reader", Scope.READ)
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as looker:
            await sign_in(looker, reader)
            looked = await looker.get(base)
            assert looked.status_code == 200 and 'id="actions"' not in looked.text
            not_allowed = await looker.post(
                f"{base}/disable", data={"csrf": csrf_of(await looker.get("/console"))}
            )
            assert not_allowed.status_code == 403

        # Delete: only with the id typed.
        kept = await console.post(f"{base}/delete", data={"csrf": csrf, "confirm": "no"})
        assert kept.status_code == 400
        deleted = await console.post(f"{base}/delete", data={"csrf": csrf, "confirm": sid})
        assert deleted.status_code == 200
        assert (await v1.get(f"/v1/subscriptions/{sid}")).status_code == 404

        audit = (await v1.get("/v1/audit", params={"limit": 100})).json()["items"]
        done = {e["action"] for e in audit if e["target"] == sid}
        assert done >= {
            "subscription.create",
            "subscription.change",
            "subscription.test",
            "subscription.enable",
            "subscription.retry_failed",
            "subscription.rotate_secret",
            "subscription.delete",
        }


def _checkboxes(page: httpx.Response) -> dict[str, bool]:
    """The project checkboxes of the subscription form on `page`: project id -> checked."""
    found = re.findall(r'name="project_ids" value="([^"]+)"( checked)?', page.text)
    return {project: bool(checked) for project, checked in found}


async def test_the_subscription_form_limits_to_projects_as_the_api_does(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], api: httpx.AsyncClient
) -> None:
    """The form's project checkboxes are `projectIds`: none checked is every project (a limited
    token: its own on creating, refused on editing), a project unknown or beyond the token's
    limit is refused (422, nothing saved), and a limited token may not touch a subscription of
    every project (404)."""
    async with sessionmaker.begin() as session:
        a = await settings_project(session)  # after the API started: it renamed the project
        now = utcnow()
        await session.execute(
            insert(PROJECTS).values(
                id="proj-b", name="B", key_id="kb", created_at=now, updated_at=now
            )
        )
    url = "http://127.0.0.1:9/hook"
    async with (
        httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as console,
        httpx.AsyncClient(base_url=str(api.base_url), headers=AUTH, timeout=30) as v1,
    ):
        await sign_in(console, API_TOKEN)
        listing = await console.get("/console/subscriptions")
        assert _checkboxes(listing) == {a: False, "proj-b": False}
        csrf = csrf_of(listing)

        created = await console.post(
            "/console/subscriptions", data={"csrf": csrf, "url": url, "project_ids": ["proj-b"]}
        )
        assert created.status_code == 200, created.text
        [made] = (await v1.get("/v1/subscriptions")).json()["items"]
        assert made["projectIds"] == ["proj-b"]
        sid = made["id"]
        assert _checkboxes(await console.get(f"/console/subscriptions/{sid}")) == {
            a: False,
            "proj-b": True,
        }

        unknown = await console.post(
            f"/console/subscriptions/{sid}/edit",
            data={"csrf": csrf, "project_ids": ["proj-b", "proj-nope"]},
        )
        assert (
            unknown.status_code == 422 and "names no project known here: proj-nope" in unknown.text
        )
        assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["projectIds"] == ["proj-b"]
        everyone = await console.post(f"/console/subscriptions/{sid}/edit", data={"csrf": csrf})
        assert everyone.status_code == 303, everyone.text
        assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["projectIds"] is None

        limited = await make_token(settings, "console-limited", Scope.WRITE, projects=[a])
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as other:
            await sign_in(other, limited)
            page = await other.get("/console/subscriptions")
            assert _checkboxes(page) == {a: False}
            mine = csrf_of(page)
            beyond = await other.post(
                "/console/subscriptions", data={"csrf": mine, "url": url, "project_ids": "proj-b"}
            )
            assert beyond.status_code == 422 and "names no project known here" in beyond.text
            # A subscription of every project is not a limited token's: as if missing.
            hidden = await other.post(f"/console/subscriptions/{sid}/disable", data={"csrf": mine})
            assert hidden.status_code == 404
            assert (await v1.get(f"/v1/subscriptions/{sid}")).json()["enabled"] is True

            own = await other.post("/console/subscriptions", data={"csrf": mine, "url": url})
            assert own.status_code == 200, own.text
            [theirs] = [
                s for s in (await v1.get("/v1/subscriptions")).json()["items"] if s["id"] != sid
            ]
            assert theirs["projectIds"] == [a]
            emptied = await other.post(
                f"/console/subscriptions/{theirs['id']}/edit", data={"csrf": mine}
            )
            assert emptied.status_code == 422 and "must name projects" in emptied.text
            assert (await v1.get(f"/v1/subscriptions/{theirs['id']}")).json()["projectIds"] == [a]
