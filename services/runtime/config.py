"""Settings shared by every service (environment variables, prefix ``LOYALTY_``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.durations import parse_duration

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class Settings(BaseSettings):
    """Where the broker and the database are, and how topics are named.

    ``database_url`` accepts ``postgresql://`` or ``postgresql+asyncpg://`` URLs; a
    unix socket directory is given as ``?host=/path``.
    """

    model_config = SettingsConfigDict(env_prefix="LOYALTY_", frozen=True, extra="ignore")

    kafka_bootstrap: str = DEFAULT_BOOTSTRAP
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/loyalty")
    topic_prefix: str = ""
    program: Path | None = None
    partitions: int = Field(default=6, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    batch_max_records: int = Field(default=2_000, ge=1)
    consumer_poll_ms: int = Field(default=200, ge=1)
    batch_linger_ms: int = Field(default=50, ge=0)
    dedupe_retention_days: int = Field(default=30, ge=1)
    # How far an event's time may be ahead of its arrival (the Kafka record's
    # timestamp) before the consumer dead-letters it instead of handing it on: an
    # event from the future would move its tenant's stream clock there and expire
    # every open offer and credit at once. A duration: "90s", "5m", "1h".
    max_clock_skew: timedelta = timedelta(minutes=5)
    # How many times in a row a consumer retries a record whose batch fails for a
    # reason that is neither transient nor one poisoned record (a handler failing on
    # everything) before it dead-letters the record and moves on.
    max_attempts: int = Field(default=5, ge=1)
    # How often the elected ticker writes a round of clock ticks to every partition
    # of the input topics, so that expiries and time-driven segment changes happen
    # without traffic (services/runtime/ticks.py). "0s" turns ticking off.
    tick_interval: timedelta = timedelta(minutes=1)
    demo_api_key: SecretStr | None = None

    @field_validator("max_clock_skew", "tick_interval", mode="before")
    @classmethod
    def _parse_duration(cls, value: object) -> object:
        # environment variables arrive as text: "5m" rather than ISO 8601's "PT5M"
        return parse_duration(value) if isinstance(value, str) else value

    def async_database_url(self) -> str:
        url = self.database_url.get_secret_value()
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url
