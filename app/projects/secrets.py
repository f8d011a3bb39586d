"""Projects' Sinch key secrets, encrypted at rest with Fernet (`cryptography`).

The key is `PROJECT_SECRETS_KEY` (a Fernet key: 32 url-safe base64 bytes, made by
`Fernet.generate_key()`). Contract:

- `SecretBox(key).open(SecretBox(key).seal(secret)) == secret` (a round trip);
- a token sealed under another key (or altered) raises `WrongSecretsKey`, never answers garbage;
- an invalid key raises `WrongSecretsKey` when the box is made, naming the variable only;
- no message, `repr` or `str` of a box or an error holds the key or a secret.

Without `PROJECT_SECRETS_KEY` no secret can be stored or read from the database: the projects'
key secrets then come from the environment only (the project the single-project settings define,
app/projects/service.py, never stores its secret in the database at all).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

KEY_VARIABLE = "PROJECT_SECRETS_KEY"


class WrongSecretsKey(Exception):
    """The key is not a Fernet key, or a stored secret was sealed with another key (or altered).
    The message names the variable, never the key or a secret."""


class SecretsKeyMissing(Exception):
    """A secret is to be stored or read from the database but `PROJECT_SECRETS_KEY` is unset."""

    def __init__(self) -> None:
        super().__init__(
            f"{KEY_VARIABLE} is not set: project key secrets cannot be stored or read from the"
            " database (set it, or give the secret in the environment)"
        )


class SecretBox:
    """Seals and opens secrets with one Fernet key. Holds the key privately: its repr shows none."""

    __slots__ = ("_fernet",)

    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            # Fernet's own message is safe, but say which setting is wrong (and nothing else).
            raise WrongSecretsKey(
                f"{KEY_VARIABLE} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(key=**********)"

    def seal(self, secret: SecretStr) -> bytes:
        """The secret encrypted (and authenticated) under the key: what the database keeps."""
        return self._fernet.encrypt(secret.get_secret_value().encode("utf-8"))

    def open(self, sealed: bytes) -> SecretStr:
        """The secret `seal` made `sealed` from; `WrongSecretsKey` when the key is not the one it
        was sealed with, or the bytes were altered."""
        try:
            return SecretStr(self._fernet.decrypt(sealed).decode("utf-8"))
        except InvalidToken:
            raise WrongSecretsKey(
                f"a stored project key secret does not open with {KEY_VARIABLE}: it was sealed"
                " with another key, or altered"
            ) from None


def box_of(key: SecretStr | None) -> SecretBox:
    """The box of `key` (the setting); `SecretsKeyMissing` when it is unset."""
    if key is None:
        raise SecretsKeyMissing()
    return SecretBox(key)
