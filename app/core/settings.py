"""The one place environment variables are read.

Every variable of docs/api.md is a field here; a `.env` file in the working folder is read too, and
an empty variable counts as unset. Secrets are `SecretStr` so that they never print by accident.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_DATABASE_URL = "postgresql+asyncpg://localhost/sinch_registrations"
"""A PostgreSQL on this machine, for a process started without DATABASE_URL."""
DATABASE_DRIVER = "postgresql+asyncpg"
_POSTGRESQL_SCHEMES = ("postgres", "postgresql", DATABASE_DRIVER)
SINCH_PRODUCTION_URL = "https://senderid.registrations.api.sinch.com"
DEFAULT_SINCH_MAX_ATTEMPTS = 4
DEFAULT_PROJECT_ID = "default"
"""The placeholder project: the one the settings define while `SINCH_PROJECT_ID` is unset, and the
owner of existing rows when migration 0010 ran without it (renamed at start once it is set)."""
JOB_BUDGET_SHARE = 0.75
"""Share of the job timeout a long job (a cron, a subscription's deliveries) may spend before it
stops by itself (arq would cancel it)."""

SecretList = Annotated[list[SecretStr], NoDecode]


class Settings(BaseSettings):
    """Runtime configuration. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )

    # --- docs/api.md ---
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = "redis://localhost:6379/0"
    sinch_project_id: str | None = None
    sinch_key_id: str | None = None
    sinch_key_secret: SecretStr | None = None
    project_secrets_key: SecretStr | None = None
    """Fernet key sealing the projects' key secrets in the database (app/projects/secrets.py);
    unset: only the environment's (`SINCH_KEY_SECRET`) is used, none is stored."""
    sinch_api_base_url: str = SINCH_PRODUCTION_URL
    sinch_auth_url: str = "https://auth.sinch.com/oauth2/token"
    sinch_callback_secrets: SecretList = Field(default_factory=list)
    internal_api_tokens: SecretList = Field(default_factory=list)
    callback_max_body_bytes: int = Field(default=1_048_576, gt=0)
    api_max_body_bytes: int = Field(default=1_048_576, gt=0)
    """Largest body of any other request (API, console); larger: 413 (app/web/bodies.py)."""
    attachment_max_bytes: int = Field(default=5_242_880, gt=0)
    """Largest attachment file uploaded to Sinch (`POST /v1/registrations/{id}/attachments/...`);
    larger: 413. That route's body may be this plus the multipart framing, even above
    `api_max_body_bytes` (app/web/bodies.py)."""
    reconcile_interval_seconds: int = Field(default=900, ge=0)
    public_base_url: str | None = None
    """This service's URL as Sinch reaches it (`https://registrations.example.com`): a
    registration submitted through the service gets `callbackUrl` = this + its project's callback
    path. Unset: submitting is refused (503)."""

    # --- the service's own knobs (documented in the README) ---
    sweep_interval_seconds: int = Field(default=5, ge=1, le=60)
    """How often the worker re-enqueues inbox rows left `received`."""
    sweep_grace_seconds: float = Field(default=10.0, ge=0)
    """How old a `received` row must be before the sweep re-enqueues it."""
    console_session_seconds: int = Field(default=28_800, ge=60, le=604_800)
    """How long a console session lasts after sign-in (its cookie's Max-Age and its Redis key's
    expiry); 8 hours by default."""
    counts_fold_interval_seconds: int = Field(default=10, ge=1, le=60)
    """How often the worker folds the counts' deltas into their totals (docs/counting.md): reads
    sum the deltas written since, so this bounds their cost, never their exactness."""
    forecast_interval_seconds: int = Field(default=300, ge=10, le=3600)
    """How often the delivery worker (with `DELIVERY_WORKER=shared`, the worker) brings the
    time-in-state figures and the forecasts up to date (app/forecasts/service.py); an `overdue`
    change is recorded at most this long late."""
    catalog_refresh_interval_seconds: int = Field(default=86_400, ge=3600, le=604_800)
    """How old a project's catalog (markets and policies, app/catalog/) may grow before the
    worker fetches it again (checked hourly); a day by default."""
    event_retention_days: int = Field(default=30, ge=1)
    """Processed events older than this are pruned daily; failed and invalid ones are kept."""
    subscription_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host patterns (`*.internal.example.com`, `127.0.0.1`) a subscription's URL may name;
    empty: no subscription can be created."""
    subscription_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    """Address ranges (`10.0.0.0/8`, `127.0.0.1/32`) a subscription's host may resolve to although
    they are not public (loopback, private, link-local, ...); empty: public addresses only."""
    delivery_retry_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]
    )
    """Pauses before the 2nd, 3rd, ... attempt of a delivery; the last repeats."""
    delivery_give_up_hours: float = Field(default=72.0, gt=0)
    """A delivery failing this long after it was written is given up (`failed`)."""
    subscription_disable_after_hours: float = Field(default=120.0, gt=0)
    """A subscription whose every attempt failed this long is disabled."""
    subscription_failing_alert_minutes: float = Field(default=15.0, gt=0)
    """A subscription whose every attempt failed this long is flagged `failing` (the console's
    overview, its health, `/metrics`' `subscription_failing`)."""
    delivery_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    change_retention_days: int = Field(default=30, ge=1)
    """Changes of the feed older than this are pruned daily; an older cursor answers 410."""
    delivery_worker: Literal["apart", "shared"] = "apart"
    """`apart`: subscriptions' deliveries and the forecasts cron run in `arq
    app.worker.DeliveryWorkerSettings` processes (deliveries on a queue of their own); `shared`:
    the events' worker also delivers and runs the forecasts (small installs; deliveries then take
    at most half its job slots)."""
    job_max_tries: int = Field(default=8, ge=1)
    """Tries of one event's processing before it is marked `failed` (retryable Sinch errors)."""
    job_retry_base_seconds: float = Field(default=2.0, gt=0)
    """First retry delay of an event after a retryable Sinch error; doubles each try (capped)."""
    job_timeout_seconds: int = Field(default=45, ge=1)
    """Longest one job may run. A job of a worker that died is run again this long (+10 s) later,
    so the default keeps that under a minute; it must exceed one Sinch call's deadline."""
    shutdown_grace_seconds: int = Field(default=25, ge=0)
    """On SIGTERM the worker stops taking jobs and lets running ones finish for this long."""
    sinch_timeout_seconds: float = Field(default=10.0, gt=0)
    sinch_max_attempts: int = Field(default=DEFAULT_SINCH_MAX_ATTEMPTS, ge=1, le=10)
    """Tries of one Sinch call (backoff and `Retry-After` between them, all within the call's 20 s
    deadline) for every caller but the event job: `refresh`, reconciliation, the command line. The
    event job makes one try per job try and leaves retrying to arq (`JOB_MAX_TRIES`), so an event
    costs at most `JOB_MAX_TRIES` GETs."""
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    """Port of the worker's own Prometheus endpoint; 0 turns it off."""
    delivery_worker_nice: int = Field(default=10, ge=0, le=19)
    """How much lower a delivery worker's CPU priority is (Unix nice): callbacks first when the
    machine is busy."""
    delivery_worker_metrics_port: int = Field(default=9102, ge=0, le=65535)
    """Where a delivery worker serves its own /metrics (0: not served)."""
    worker_metrics_host: str = "127.0.0.1"
    """Address the worker's Prometheus endpoint binds to (loopback unless set)."""
    event_time_skew_seconds: float = Field(default=300.0, ge=0)
    """A callback claiming a time later than our clock plus this is doubtful: checked with a GET,
    never trusted (Sinch's clock may be ahead; a forged or broken time must not rule)."""
    callback_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """Longest a callback's body may take to arrive; a client that trickles it is cut off (408)."""
    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """Longest a client may take from opening a connection (or finishing its previous request)
    to the end of its request's headers; a slower one is disconnected (app/web/edge.py)."""
    body_read_timeout_seconds: float = Field(default=20.0, gt=0)
    """Longest any request's body may take to arrive after its headers; a slower one is
    disconnected (app/web/edge.py). Above CALLBACK_READ_TIMEOUT_SECONDS, so that a callback gets the
    endpoint's own 408 first."""
    token_cache_seconds: float = Field(default=2.0, gt=0, le=4.0)
    """How long an API process uses its last read of the database tokens: a revoked token is
    refused by every process within this (plus one read), well inside the contract's 5 s."""
    metrics_token: SecretStr | None = None
    """When set, `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`."""
    docs_enabled: bool = True
    """False: no `/docs`, `/redoc`, `/docs-assets/` nor `/openapi.json` (404)."""
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("sinch_api_base_url")
    @classmethod
    def _base_without_version(cls, value: str) -> str:
        # The client adds /v1/projects/{id}/... itself; a base ending in /v1 would ask /v1/v1/...
        # and every GET would be a 404 ("unknown at Sinch"): refuse it at start instead.
        if value.rstrip("/").endswith("/v1"):
            raise ValueError(
                f"must be the host without /v1 (the service adds it): {value.rstrip('/')[:-3]}"
            )
        return value

    @field_validator("public_base_url")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        # Sinch must be able to POST to it: an absolute http(s) URL, without a trailing slash
        # (the callback path is appended), query or fragment.
        base = (value or "").strip().rstrip("/")
        if not base:  # blank is unset, as for every variable
            return None
        scheme, separator, rest = base.partition("://")
        if scheme.lower() not in ("http", "https") or not separator or not rest:
            raise ValueError(
                "must be an absolute http(s) URL, e.g. https://registrations.example.com"
            )
        if "?" in rest or "#" in rest:
            raise ValueError("must have no query or fragment")
        return base

    @field_validator("database_url")
    @classmethod
    def _postgresql_only(cls, value: str) -> str:
        # PostgreSQL is the only database, reached through asyncpg; the usual `postgres://` and
        # `postgresql://` spellings (a hosting platform's, libpq's) name the same server.
        scheme, separator, rest = value.partition("://")
        if not separator or scheme.lower() not in _POSTGRESQL_SCHEMES:
            raise ValueError(
                f"must be a PostgreSQL URL ({DATABASE_DRIVER}://user@host/database): PostgreSQL"
                " is the only database"
            )
        return f"{DATABASE_DRIVER}://{rest}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "sinch_callback_secrets",
        "internal_api_tokens",
        "subscription_allowed_hosts",
        "subscription_allowed_networks",
        "delivery_retry_seconds",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def safe_database_url(self) -> str:
        """The database URL with any password masked: the only form fit for a log line."""
        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def job_budget_seconds(self) -> float:
        """Seconds a long job may run: below the job timeout, so it ends on its own terms."""
        return self.job_timeout_seconds * JOB_BUDGET_SHARE

    @property
    def settings_project_id(self) -> str:
        """The project the single-project settings define: `SINCH_PROJECT_ID`, or the placeholder
        `default` without it (app/projects/service.py)."""
        return self.sinch_project_id or DEFAULT_PROJECT_ID

    @property
    def sinch_credentials_configured(self) -> bool:
        return bool(self.sinch_project_id and self.sinch_key_id and self.sinch_key_secret)


def make_url(url: str) -> URL:
    """SQLAlchemy's URL parser, imported on first use: reading the settings (`python -m app sign`)
    does not load SQLAlchemy."""
    from sqlalchemy.engine import make_url as parse

    return parse(url)


def describe_refusal(exc: ValidationError) -> str:
    """One line naming each refused variable and why (never its value: it may be a secret)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        for error in exc.errors()
    )
