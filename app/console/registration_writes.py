"""The console's two registration forms' common steps (the rooms `new_registration` and
`registrations` post to them): read the policy from the project's catalog, check what the form
posted with the check `POST /v1/registrations?validateOnly=true` answers
(`app.catalog.service.check_request`), and send it through `app.submissions.service`, the path
the API's `POST` and `PUT` take (audited there, as the console's user). A refusal at any step
becomes a `FormState` to show again, never a second implementation of the write. A route
that writes takes all it needs as one dependency, `WriterDep`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import Row

from app.catalog import layout
from app.catalog import queries as catalog_queries
from app.catalog import service as catalog_service
from app.catalog.check import FieldError
from app.changes.live import SequencerDep
from app.changes.sequencer import Sequencer
from app.console import registration_form as forms
from app.console.access import Acting, ActingDep
from app.console.pages import redirect
from app.core.models import Registration
from app.core.problems import ProblemError
from app.projects.clients import ProjectClients, ProjectClientsDep
from app.sinch.client import SinchClient
from app.submissions import service as submissions
from app.web.deps import Resources, ResourcesDep

Send = Callable[[SinchClient, dict[str, Any]], Awaitable[Registration]]
"""One write of `app.submissions.service` (a create or an update of one registration), given
the project's client and Sinch's body with its callback URL."""


@dataclass(slots=True)
class FormState:
    """A policy's form as shown: its sections (values and errors beside the inputs) and what no
    input shows (the check's other errors, Sinch's refusal, an unavailable Sinch)."""

    policy: Row[Any]
    sections: list[forms.Section]
    tags: str = ""
    above: list[FieldError] = field(default_factory=list)
    problem: str | None = None
    sinch_details: list[str] = field(default_factory=list)
    """Sinch's own words about the fields it refused (its `fieldViolations`)."""

    @property
    def failed(self) -> bool:
        return bool(self.above or self.problem or self.has_field_errors)

    @property
    def has_field_errors(self) -> bool:
        return any(f.error for s in self.sections for row in s.rows for f in row)


async def policy_of(
    resources: Resources, project_id: str, policy_id: str | None
) -> Row[Any] | None:
    """The policy as project `project_id`'s catalog keeps it; None when it does not, or when
    there is no `policy_id` (a registration that names none)."""
    if policy_id is None:
        return None
    async with resources.reader() as session:
        return await catalog_queries.policy(session, policy_id, frozenset({project_id}))


def shown(policy: Row[Any], values: Mapping[str, str]) -> FormState:
    """`policy`'s form with `values` and no error (a new form, or one prefilled)."""
    return FormState(
        policy, forms.sections(policy.document, values, {}), tags=values.get(forms.TAGS, "")
    )


async def posted(request: Request) -> dict[str, str]:
    """The form's text fields (a file field, which no form here has, is ignored)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _sinch_details(problem: ProblemError) -> list[str]:
    """`field: description` of each field Sinch's refusal names (Google's BadRequest shape)."""
    error = (problem.extra or {}).get("sinch")
    found: list[str] = []
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        violations = detail.get("fieldViolations") if isinstance(detail, dict) else None
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict):
                found.append(f"{violation.get('field')}: {violation.get('description')}")
    return found


@dataclass(frozen=True, slots=True)
class Writer:
    """What a console route that writes a registration at Sinch works with (a new one, an
    update, an upload): the resources, each project's Sinch client, the sequencer a write pokes,
    and the acting viewer, whom the write is audited as. A route takes it as `WriterDep`."""

    resources: Resources
    clients: ProjectClients
    sequencer: Sequencer
    acting: Acting

    async def check_and_send(
        self, project_id: str, policy: Row[Any], values: Mapping[str, str], send: Send
    ) -> Registration | FormState:
        """Check what the form posted (`values`) against `policy`; when it passes, `send` it
        with project `project_id`'s client. Answers the registration as kept, or the form to
        show again with what went wrong. Nothing is sent when the check finds an error."""
        request = forms.request_of(
            policy.document,
            values,
            policy_id=policy.policy_id,
            registration_type=policy.registration_type,
        )
        async with self.resources.reader() as session:
            result = await catalog_service.check_request(session, project_id, request)
        form = forms.sections(policy.document, values, {})
        beside, above = forms.errors_by_path(result.errors, form)
        state = FormState(
            policy,
            forms.sections(policy.document, values, beside),
            tags=values.get(forms.TAGS, ""),
            above=above,
        )
        if not result.valid:
            return state
        try:
            sinch = await self.clients.client(project_id)
            if sinch is None:
                raise ProblemError(
                    503,
                    f"Project {project_id} has no usable Sinch credentials here: nothing was sent.",
                )
            settings = self.resources.settings
            body = submissions.with_callback(layout.to_sinch(request), settings, project_id)
            return await send(sinch, body)
        except ProblemError as exc:
            state.problem = said(exc)
            state.sinch_details = _sinch_details(exc)
            return state

    def written(self, location: str) -> RedirectResponse:
        """A write's answer once Sinch took it: the sequencer poked (the feed numbers the
        change at once, not at the worker's next pass), then a redirect to `location`."""
        self.sequencer.poke()
        return redirect(location)


async def writer(
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    sequencer: SequencerDep,
    acting: ActingDep,
) -> Writer:
    """The dependency of every route that writes a registration: `acting`'s checks (the CSRF
    token, a `write` token) first, nothing else looked at."""
    return Writer(resources, clients, sequencer, acting)


WriterDep = Annotated[Writer, Depends(writer)]


def said(problem: ProblemError) -> str:
    """The problem in the console's words: a refusal of Sinch's with Sinch's own message (the
    API's text points to its `sinch` member, which a page does not show), else its detail."""
    error = (problem.extra or {}).get("sinch")
    if not isinstance(error, dict):
        return problem.detail or problem.title
    answered = " ".join(str(error[k]) for k in ("code", "status") if error.get(k) is not None)
    message = error.get("message")
    words = f": {message.rstrip('.')}." if isinstance(message, str) and message else "."
    return f"Sinch refused it ({answered or 'no details'}){words} Nothing changed here."
