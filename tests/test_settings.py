"""Settings: the environment as docs/api.md names it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.logs import warn_about_missing_configuration
from app.core.settings import DEFAULT_DATABASE_URL, Settings, describe_refusal


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_contracts() -> None:
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.sinch_api_base_url == "https://senderid.registrations.api.sinch.com"
    assert settings.sinch_auth_url == "https://auth.sinch.com/oauth2/token"
    assert settings.sinch_callback_secrets == []
    assert settings.internal_api_tokens == []
    assert settings.callback_max_body_bytes == 1_048_576
    assert settings.reconcile_interval_seconds == 900
    assert not settings.sinch_credentials_configured


def test_comma_separated_secrets_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCH_CALLBACK_SECRETS", " new-secret , old-secret ,")
    monkeypatch.setenv("INTERNAL_API_TOKENS", "only-token")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("CALLBACK_MAX_BODY_BYTES", "")
    settings = Settings()
    secrets = [secret.get_secret_value() for secret in settings.sinch_callback_secrets]
    assert secrets == ["new-secret", "old-secret"]
    assert [t.get_secret_value() for t in settings.internal_api_tokens] == ["only-token"]
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.callback_max_body_bytes == 1_048_576


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RECONCILE_INTERVAL_SECONDS=0\nSINCH_PROJECT_ID=p1\n")
    settings = Settings()
    assert settings.reconcile_interval_seconds == 0
    assert settings.sinch_project_id == "p1"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCH_CALLBACK_SECRETS", "hmac-secret-value")
    monkeypatch.setenv("INTERNAL_API_TOKENS", "token-value")
    monkeypatch.setenv("SINCH_KEY_SECRET", "key-secret-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://svc:db-password@db/reg")
    settings = Settings()
    shown = repr(settings) + str(settings) + settings.safe_database_url()
    for secret in ("hmac-secret-value", "token-value", "key-secret-value"):
        assert secret not in shown
    assert "db-password" not in settings.safe_database_url()


def test_a_delivery_timeout_that_leaves_no_time_to_send_is_an_error_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery job starts a POST only with its timeout left within three quarters of the job
    timeout: a timeout as long as that would silently send nothing, so start-up says so."""
    log = logging.getLogger("test.settings")
    defaults = Settings(internal_api_tokens=["t"], sinch_callback_secrets=["s"])
    with caplog.at_level(logging.ERROR, logger="test.settings"):
        warn_about_missing_configuration(defaults, log)
        assert caplog.records == []
        warn_about_missing_configuration(
            Settings(
                internal_api_tokens=["t"],
                sinch_callback_secrets=["s"],
                job_timeout_seconds=20,
                delivery_timeout_seconds=15,
            ),
            log,
        )
    assert [record.getMessage() for record in caplog.records] == [
        "DELIVERY_TIMEOUT_SECONDS (15) is not below three quarters of JOB_TIMEOUT_SECONDS (20): "
        "no webhook delivery can be sent"
    ]


@pytest.mark.parametrize(
    "given",
    [
        "postgres://svc:pw@db:5432/reg",
        "postgresql://svc:pw@db:5432/reg",
        "postgresql+asyncpg://svc:pw@db:5432/reg",
    ],
)
def test_a_postgresql_url_is_taken_in_any_usual_spelling(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert Settings().database_url == "postgresql+asyncpg://svc:pw@db:5432/reg"


@pytest.mark.parametrize(
    "given", ["sqlite+aiosqlite:///./var/registrations.db", "mysql://db/reg", "db:5432/reg"]
)
def test_any_other_database_url_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert describe_refusal(refused.value) == (
        "DATABASE_URL: Value error, must be a PostgreSQL URL "
        "(postgresql+asyncpg://user@host/database): PostgreSQL is the only database"
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://registrations.example.com/", "https://registrations.example.com"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
        ("  ", None),
    ],
)
def test_public_base_url_is_kept_without_its_trailing_slash(given: str, kept: str | None) -> None:
    assert Settings(_env_file=None, public_base_url=given).public_base_url == kept  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "given", ["registrations.example.com", "ftp://x.example", "https://x.example/?a=1"]
)
def test_a_public_base_url_sinch_could_not_post_to_is_refused(given: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, public_base_url=given)  # type: ignore[call-arg]
    assert "PUBLIC_BASE_URL" in describe_refusal(refused.value)
