"""The key secrets' encryption at rest (app/projects/secrets.py): what an operator relies on when
the database is copied or read, and when PROJECT_SECRETS_KEY is wrong or missing."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.core.models import Project
from app.projects.secrets import (
    SecretBox,
    SecretsKeyMissing,
    WrongSecretsKey,
    box_of,
)

SECRET = SecretStr("key-secret-0123456789-abcdef")


def _key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


def test_a_sealed_secret_opens_with_its_key_and_is_not_readable_without() -> None:
    box = SecretBox(_key())
    sealed = box.seal(SECRET)
    assert SECRET.get_secret_value().encode() not in sealed
    assert box.open(sealed).get_secret_value() == SECRET.get_secret_value()
    # Sealed twice, two different ciphertexts (a fresh IV each time): equal secrets do not show.
    assert box.seal(SECRET) != sealed


def test_another_key_or_altered_bytes_give_a_clear_error_never_garbage() -> None:
    key = _key()
    sealed = SecretBox(key).seal(SECRET)
    with pytest.raises(WrongSecretsKey, match="PROJECT_SECRETS_KEY") as wrong:
        SecretBox(_key()).open(sealed)
    assert SECRET.get_secret_value() not in str(wrong.value)
    assert key.get_secret_value() not in str(wrong.value)
    altered = sealed[:-4] + (b"AAAA" if sealed[-4:] != b"AAAA" else b"BBBB")
    with pytest.raises(WrongSecretsKey):
        SecretBox(key).open(altered)


def test_a_key_that_is_not_a_fernet_key_is_refused_naming_the_variable_only() -> None:
    with pytest.raises(WrongSecretsKey, match="PROJECT_SECRETS_KEY is not a Fernet key") as bad:
        SecretBox(SecretStr("not-a-key-but-secret-looking"))
    assert "not-a-key-but-secret-looking" not in str(bad.value)
    assert bad.value.__cause__ is None and bad.value.__suppress_context__


def test_without_the_key_nothing_is_sealed_or_opened() -> None:
    with pytest.raises(SecretsKeyMissing, match="PROJECT_SECRETS_KEY is not set"):
        box_of(None)
    key = _key()
    assert (
        box_of(key).open(box_of(key).seal(SECRET)).get_secret_value() == SECRET.get_secret_value()
    )


def test_neither_box_nor_project_shows_the_key_or_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = _key()
    box = SecretBox(key)
    project = Project(id="proj-1", name="One", key_id="kid", key_secret_sealed=box.seal(SECRET))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("box %r project %r %s", box, project, project)
    sealed = project.key_secret_sealed
    assert sealed is not None
    for shown in (repr(box), str(box), repr(project), caplog.text):
        assert key.get_secret_value() not in shown
        assert SECRET.get_secret_value() not in shown
        assert sealed.decode() not in shown and repr(sealed) not in shown
    assert "key_secret=set" in repr(project)
