"""Settings, read once from the environment (``TIDINGS_*``) and passed down explicitly.

Each field's description is its documentation: ``docs/reference/configuration.md`` is
generated from this class and a test fails when a setting has no description.
"""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidings import errors

DEFAULT_SECRET = "dev-only-insecure-secret-change-me"  # noqa: S105 - refused in production


class Settings(BaseSettings):
    """Every knob Tidings has. Environment variables are the field names, upper-cased,
    with the ``TIDINGS_`` prefix (``TIDINGS_DATABASE_URL``)."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses to start with the default secret key.",
    )
    database_url: str = Field(
        "sqlite:///./tidings.db",
        description="SQLAlchemy URL of the database: `sqlite:///path.db` for one machine, "
        "`postgresql://user@host/db` for many workers.",
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public URL of this server, used in links that leave it (tracking, "
        "unsubscribe).",
    )
    secret_key: SecretStr = Field(
        SecretStr(DEFAULT_SECRET),
        description="Server secret for signed tokens. Set a long random value in production.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of log lines written."
    )
    log_format: Literal["json", "text"] = Field(
        "text", description="`json`: one JSON object per line; `text`: readable key=value lines."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite `synchronous` pragma. `FULL` makes every accepted event survive a "
        "power cut; `NORMAL` survives a process crash only, and is faster.",
    )
    db_pool_size: int = Field(
        10, ge=1, le=200, description="Connections kept open per process (PostgreSQL)."
    )
    max_event_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest single event accepted by the ingest API."
    )
    max_batch_bytes: int = Field(
        500 * 1024, ge=1024, description="Largest `/v1/batch` request body accepted."
    )
    worker_poll_seconds: float = Field(
        0.2, gt=0, le=60, description="How long an idle worker waits before looking for work."
    )
    worker_batch_size: int = Field(
        10_000,
        ge=1,
        le=100_000,
        description="Events a worker applies per transaction (about half a second of work "
        "at 10,000; larger batches amortise each round's fixed cost: cursor, commit).",
    )
    flow_batch_size: int = Field(
        2_000,
        ge=1,
        le=100_000,
        description="Due flow runs a worker advances per transaction. Several workers each "
        "claim their own batch (SKIP LOCKED on PostgreSQL).",
    )
    flow_check_seconds: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="How often scheduled triggers (date attribute, inactivity, score, "
        "recurring schedule) look for contacts to enrol. Date triggers enrol a day ahead, "
        "so runs still start at the exact local time.",
    )
    fallback_timezone: str = Field(
        "UTC",
        description="The IANA zone used for send windows, local-time waits and date "
        "triggers when a contact has no (valid) time zone.",
    )
    segment_rebuild_seconds: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="How often the worker fully rebuilds a segment whose rule depends on time "
        "(event windows, `within_last`, anniversaries), so contacts leave or enter as windows "
        "move without any event. Changed contacts are re-evaluated on every round regardless.",
    )
    api_key_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long a verified API key is remembered in memory; a revoked key stops "
        "working after at most this long.",
    )

    # -- email ---------------------------------------------------------------------------
    smtp_url: str = Field(
        "",
        description="Where email goes: `smtp://user:pass@host:587?starttls` (STARTTLS), "
        "`smtps://user:pass@host:465` (TLS from the start) or `smtp://host:25` (plain, for a "
        "local relay). Empty: the built-in catcher keeps every message and lists it at "
        "`/v1/catcher`, so nothing leaves the machine.",
    )
    smtp_routes: dict[str, str] = Field(
        {},
        description='SMTP servers by sender domain, as JSON: `{"news.example.com": '
        '"smtps://..."}`. Mail from other domains goes to `TIDINGS_SMTP_URL`.',
    )
    smtp_connections: int = Field(
        4,
        ge=1,
        le=64,
        description="Persistent SMTP connections per sending process (per server). At most "
        "this many messages are ever being handed over at once by one process.",
    )
    smtp_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Longest wait for one SMTP reply before giving up."
    )
    send_rate_per_second: float = Field(
        0,
        ge=0,
        description="Most emails handed to SMTP per second, across every worker sharing the "
        "database (0: no limit).",
    )
    send_rate_per_hour: int = Field(
        0,
        ge=0,
        description="Most emails handed to SMTP per hour, across every worker (0: no limit).",
    )
    send_batch_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Queued emails a sender claims at a time (its lease covers them all).",
    )
    send_lease_seconds: float = Field(
        300.0,
        ge=5,
        le=86_400,
        description="How long a claimed email may wait for its hand-off, and how long a "
        "hand-off may take, before another worker takes over. A message whose hand-off "
        "outlives this becomes `unknown`: reported, never sent again.",
    )
    send_max_attempts: int = Field(
        8,
        ge=1,
        le=50,
        description="Hand-offs of one email before a temporary failure (SMTP 4xx) becomes "
        "final; retries back off exponentially from `TIDINGS_SEND_RETRY_SECONDS`.",
    )
    send_retry_seconds: float = Field(
        60.0, gt=0, le=86_400, description="Wait before the first retry; doubled each time."
    )
    mail_from: str = Field(
        "Tidings <tidings@localhost>",
        description="The From of templates that do not set their own (`Name <address>`).",
    )
    postal_address: str = Field(
        "",
        description="The sender's postal address, shown in the footer of marketing email "
        "(CAN-SPAM). Templates may also set their own.",
    )
    bounce_address: str = Field(
        "",
        description="Envelope sender (Return-Path) base for bounces, e.g. "
        "`bounces@mail.example.com`; each message goes out as "
        "`bounces+<token>@mail.example.com` (VERP), so a bounce names its message. Empty: "
        "`bounces@` the From address's domain.",
    )
    imap_url: str = Field(
        "",
        description="A mailbox to collect bounces and complaints from, e.g. "
        "`imaps://user:pass@imap.example.com/INBOX`. Empty: bounces arrive only at "
        "`POST /v1/inbound/email`.",
    )
    imap_poll_seconds: float = Field(
        60.0, ge=5, le=86_400, description="How often the IMAP mailbox is read."
    )
    inbound_max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest inbound email (bounce, complaint) accepted for processing.",
    )
    render_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Longest time rendering one message may take; a template that takes "
        "longer fails that message (with the reason in the ledger), never the queue.",
    )
    render_max_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Largest rendered message body; a larger one fails that message.",
    )
    catcher_keep: int = Field(
        1000,
        ge=1,
        description="Newest messages the built-in catcher keeps; older ones are dropped.",
    )

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.env == "production" and self.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise errors.ConfigError("TIDINGS_SECRET_KEY must be set in production.")
        return self

    @field_validator("fallback_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: str) -> str:
        if value and value.split(":", 1)[0] not in ("smtp", "smtps", "catcher"):
            raise ValueError("must start with smtp://, smtps:// or catcher://")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
