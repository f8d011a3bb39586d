"""Documents of the internal API about projects (docs/api.md, Projects). Never a secret: whether
credentials are set is all an answer says of them."""

from __future__ import annotations

from pydantic import Field

from app.core.schemas import ApiModel, ApiTime, same_named
from app.projects.queries import ProjectView


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
    def of(cls, project: ProjectView) -> ProjectOut:
        """The document of `project`."""
        return cls(
            credentials_set=project.key_id is not None and project.key_secret_set,
            **same_named(cls, project, but={"credentials_set"}),
        )


class ProjectList(ApiModel):
    items: list[ProjectOut] = Field(description="By id.")
