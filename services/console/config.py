"""Console settings (``LOYALTY_CONSOLE_*``): where the services answer, and the
secret that signs the session cookie."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("ingest", "segmenter", "offers", "ledger", "insights")
"""The services the console reads, in the order of the architecture's ports."""


class ConsoleSettings(BaseSettings):
    """The console owns no tables and no topics: it needs only the services' base
    URLs (``LOYALTY_CONSOLE_INGEST_URL``, ..., defaulting to the architecture's
    ports on loopback) and ``LOYALTY_CONSOLE_SECRET``, which signs the session
    cookie. Without a secret one is generated at start (dev: sessions do not
    survive a restart; say so in the log). Give every instance behind one address
    the same secret."""

    model_config = SettingsConfigDict(
        env_prefix="LOYALTY_CONSOLE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    ingest_url: str = "http://127.0.0.1:8080"
    segmenter_url: str = "http://127.0.0.1:8081"
    offers_url: str = "http://127.0.0.1:8082"
    ledger_url: str = "http://127.0.0.1:8083"
    insights_url: str = "http://127.0.0.1:8084"
    secret: SecretStr | None = None
    session_hours: float = Field(default=8.0, gt=0, description="A session's idle lifetime.")
    secure_cookie: bool = Field(
        default=False,
        description="Mark the session cookie Secure (set it when served over HTTPS).",
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Per request to a service.")
    refresh_s: int = Field(default=5, ge=1, description="The overview's refresh interval.")

    def url_of(self, service: str) -> str:
        url: str = getattr(self, f"{service}_url")
        return url.rstrip("/")
