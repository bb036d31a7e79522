"""Settings shared by every service (environment variables, prefix ``LOYALTY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    demo_api_key: SecretStr | None = None

    def async_database_url(self) -> str:
        url = self.database_url.get_secret_value()
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url
