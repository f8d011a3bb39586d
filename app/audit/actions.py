"""The names of the recorded actions: part of `GET /v1/audit`'s answer (docs/api.md).

(`noqa: S105`: names of actions about tokens and secrets, not secrets.)
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    REGISTRATION_REFRESH = "registration.refresh"
    REGISTRATION_SUBMIT = "registration.submit"
    REGISTRATION_UPDATE = "registration.update"
    REGISTRATION_DELETE = "registration.delete"
    REGISTRATION_ATTACH = "registration.attach"
    EVENT_REPLAY = "event.replay"
    SUBSCRIPTION_CREATE = "subscription.create"
    SUBSCRIPTION_CHANGE = "subscription.change"
    SUBSCRIPTION_DELETE = "subscription.delete"
    SUBSCRIPTION_ROTATE_SECRET = "subscription.rotate_secret"  # noqa: S105
    SUBSCRIPTION_TEST = "subscription.test"
    SUBSCRIPTION_RETRY_FAILED = "subscription.retry_failed"
    SUBSCRIPTION_ENABLE = "subscription.enable"
    DELIVERY_RETRY = "delivery.retry"
    TOKEN_CREATE = "token.create"  # noqa: S105
    TOKEN_REVOKE = "token.revoke"  # noqa: S105
    CALLBACK_SECRET_ROTATE = "callback_secret.rotate"  # noqa: S105
    CALLBACK_SECRET_ROTATE_REFUSED = "callback_secret.rotate_refused"  # noqa: S105
    CALLBACK_SECRET_SET = "callback_secret.set"  # noqa: S105
    PROJECT_ADD = "project.add"
    PROJECT_RENAME = "project.rename"
    PROJECT_REMOVE = "project.remove"
