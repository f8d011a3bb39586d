"""Documents of the internal API about projects (docs/api.md, Projects). Never a secret: whether
credentials are set is all an answer says of them."""

from __future__ import annotations

from pydantic import Field

from app.core.models import Project
from app.core.schemas import ApiModel, ApiTime


class ProjectOut(ApiModel):
    """A Sinch project this deployment serves."""

    id: str = Field(description="Sinch's project id (the `projectId` of the other documents).")
    name: str
    key_id: str | None = Field(description="The Sinch API key's id; null when none is set.")
    credentials_set: bool = Field(
        description="Whether the project has Sinch API credentials (a key id and its secret): "
        "the secret itself is never shown."
    )
    from_settings: bool = Field(
        description="True for the project the single-project settings define (`SINCH_PROJECT_ID`"
        ", ...): its credentials and callback secrets come from the environment."
    )
    created_at: ApiTime
    updated_at: ApiTime

    @classmethod
    def of(cls, project: Project, *, settings_secret_set: bool) -> ProjectOut:
        """The document of `project`; `settings_secret_set`: whether `SINCH_KEY_SECRET` is set
        (the secret of the settings' project, never stored)."""
        secret_set = (
            settings_secret_set if project.from_settings else bool(project.key_secret_sealed)
        )
        return cls(
            id=project.id,
            name=project.name,
            key_id=project.key_id,
            credentials_set=project.key_id is not None and secret_set,
            from_settings=project.from_settings,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )


class ProjectList(ApiModel):
    items: list[ProjectOut] = Field(description="By id.")
