"""Configuration, read once from the environment into one typed object."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from resolvers.cost_budgets import (
    DEFAULT_MAX_QUERY_COST,
    DEFAULT_MAX_QUERY_COST_END_USER,
    CostBudgets,
)

DEFAULT_DATABASE_URL = "sqlite://usagegraph.sqlite3"


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    # HS256 wants at least 32 bytes of key.
    secret: str = Field(
        "usagegraph-development-secret-change-me-in-production",
        min_length=32,
        alias="USAGEGRAPH_SECRET",
    )
    db_pool_min: int = Field(2, ge=1, alias="USAGEGRAPH_DB_POOL_MIN")
    db_pool_max: int = Field(20, ge=1, alias="USAGEGRAPH_DB_POOL_MAX")
    # the reads planned once (PostgreSQL): a dashboard sends four at a time; with 4 sessions
    # 16 clients' reads waited for one while cores were free (docs/performance.md)
    db_planned_pool_max: int = Field(8, ge=1, alias="USAGEGRAPH_DB_PLANNED_POOL_MAX")
    # Browser origins allowed to call the API over HTTP (CORS, api/cors.py) and to open a
    # WebSocket (Strawberry refuses cross-origin handshakes otherwise). None by default.
    allowed_origins: list[str] = Field(default_factory=list, alias="USAGEGRAPH_ALLOWED_ORIGINS")
    # The service's address as browsers reach it (behind a proxy), for the links it hands
    # out (exportUrl); unset: the address the request came to.
    public_url: str | None = Field(None, alias="USAGEGRAPH_PUBLIC_URL")
    # permessage-deflate on WebSockets. Off by default: balance events are a few hundred
    # bytes, and each compressing connection keeps zlib state (tens of KB) for its lifetime.
    ws_compression: bool = Field(False, alias="USAGEGRAPH_WS_COMPRESSION")
    # Largest HTTP request body accepted (413 beyond); a 1,000-record batch fits.
    max_body_bytes: int = Field(1_048_576, ge=1024, alias="USAGEGRAPH_MAX_BODY_BYTES")
    # Request log (api/request_log.py): 0 turns the middleware off in this process.
    request_log_enabled: bool = Field(True, alias="USAGEGRAPH_REQUEST_LOG")
    request_log_queue: int = Field(100_000, ge=1, alias="USAGEGRAPH_REQUEST_LOG_QUEUE")
    request_log_flush_seconds: float = Field(
        0.2, gt=0, alias="USAGEGRAPH_REQUEST_LOG_FLUSH_SECONDS"
    )
    # Idempotency keys are kept at least 30 days (docs/ledger.md rule 3).
    idempotency_retention_days: float = Field(
        35.0, ge=30, alias="USAGEGRAPH_IDEMPOTENCY_RETENTION_DAYS"
    )
    request_log_retention_days: float = Field(
        30.0, gt=0, alias="USAGEGRAPH_REQUEST_LOG_RETENTION_DAYS"
    )
    request_log_retention_seconds: float = Field(
        3600.0, gt=0, alias="USAGEGRAPH_REQUEST_LOG_RETENTION_EVERY_SECONDS"
    )
    # Per-key rate limit per process (api/rate_limit.py); 0 turns it off. Burst: 2 s worth.
    rate_limit_per_second: float = Field(2_000.0, ge=0, alias="USAGEGRAPH_RATE_LIMIT_PER_SECOND")
    rate_limit_burst: int | None = Field(None, ge=1, alias="USAGEGRAPH_RATE_LIMIT_BURST")
    # Background jobs (api/jobs.py); 0 turns them off in this process.
    jobs_enabled: bool = Field(True, alias="USAGEGRAPH_JOBS")
    expiry_sweep_seconds: float = Field(30.0, gt=0, alias="USAGEGRAPH_EXPIRY_SWEEP_SECONDS")
    # how long before a lot expires its credits are announced (credits.expiring); 0: never
    expiry_warning_days: float = Field(7.0, ge=0, alias="USAGEGRAPH_EXPIRY_WARNING_DAYS")
    # Reporting rollups (models/rollups.py): how often new ledger entries are folded in.
    rollup_fold_seconds: float = Field(30.0, gt=0, alias="USAGEGRAPH_ROLLUP_FOLD_SECONDS")
    # Billing periods (models/billing.py): how often ended months are closed, and how long
    # after a month's end its closing waits (for transactions that began before the end).
    billing_close_seconds: float = Field(300.0, gt=0, alias="USAGEGRAPH_BILLING_CLOSE_SECONDS")
    billing_close_delay_seconds: float = Field(
        300.0, ge=0, alias="USAGEGRAPH_BILLING_CLOSE_DELAY_SECONDS"
    )
    # Logging (api/logging_setup.py, docs/logging.md): text or JSON lines, and the least
    # severe level written (expected client errors are DEBUG lines).
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = Field(
        "text", alias="USAGEGRAPH_LOG_FORMAT"
    )
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = Field(
        "INFO", alias="USAGEGRAPH_LOG_LEVEL"
    )
    # The most one GraphQL operation may cost (docs/query-cost.md), for API keys and for
    # End User tokens (credentials held in browsers) and requests without a credential.
    max_query_cost: int = Field(DEFAULT_MAX_QUERY_COST, ge=1, alias="USAGEGRAPH_MAX_QUERY_COST")
    max_query_cost_end_user: int = Field(
        DEFAULT_MAX_QUERY_COST_END_USER, ge=1, alias="USAGEGRAPH_MAX_QUERY_COST_END_USER"
    )
    # How often each process writes the last-used times of the API keys it verified.
    api_key_use_flush_seconds: float = Field(
        60.0, gt=0, alias="USAGEGRAPH_API_KEY_USE_FLUSH_SECONDS"
    )
    # Exports streaming at once per process (each holds a database connection of its own).
    export_concurrency: int = Field(4, ge=1, alias="USAGEGRAPH_EXPORT_CONCURRENCY")
    # Webhooks (docs/webhooks.md). Private, loopback and link-local targets are refused
    # unless allowed (tests, receivers on the operator's own network).
    webhooks_allow_private: bool = Field(False, alias="USAGEGRAPH_WEBHOOKS_ALLOW_PRIVATE")
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, alias="USAGEGRAPH_WEBHOOK_TIMEOUT_SECONDS"
    )
    # Deliveries in flight per process (each endpoint has at most one: its order).
    webhook_concurrency: int = Field(64, ge=1, alias="USAGEGRAPH_WEBHOOK_CONCURRENCY")
    # How soon messages written by another process (or due for a retry) are seen.
    webhook_poll_seconds: float = Field(0.1, gt=0, alias="USAGEGRAPH_WEBHOOK_POLL_SECONDS")
    # Retries: the first after this, doubling up to the maximum, for so many attempts in
    # all (the defaults span about three days).
    webhook_retry_first_seconds: float = Field(
        5.0, gt=0, alias="USAGEGRAPH_WEBHOOK_RETRY_FIRST_SECONDS"
    )
    webhook_retry_max_seconds: float = Field(
        43_200.0, gt=0, alias="USAGEGRAPH_WEBHOOK_RETRY_MAX_SECONDS"
    )
    webhook_attempts: int = Field(19, ge=1, le=100, alias="USAGEGRAPH_WEBHOOK_ATTEMPTS")
    # An endpoint whose deliveries have all failed for this long is disabled.
    webhook_disable_after_seconds: float = Field(
        259_200.0, gt=0, alias="USAGEGRAPH_WEBHOOK_DISABLE_AFTER_SECONDS"
    )
    # Delivered and failed messages (the delivery log) are kept this long.
    webhook_retention_days: float = Field(30.0, gt=0, alias="USAGEGRAPH_WEBHOOK_RETENTION_DAYS")

    @property
    def rate_limit_burst_size(self) -> int:
        return self.rate_limit_burst or max(1, int(self.rate_limit_per_second * 2))

    @property
    def cost_budgets(self) -> CostBudgets:
        return CostBudgets(api_key=self.max_query_cost, end_user=self.max_query_cost_end_user)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://", "asyncpg://"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
