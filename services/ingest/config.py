"""ingest settings."""

from __future__ import annotations

from pydantic import Field

from services.runtime.config import Settings


class IngestSettings(Settings):
    """``LOYALTY_INGEST_MAX_BODY_BYTES``: larger bodies get 413 (default 5 MiB).
    ``LOYALTY_INGEST_ACK_TIMEOUT_S``: how long to wait for the broker's acks before 503.
    ``LOYALTY_MAX_CLOCK_SKEW`` (shared): an event more than this ahead of the server's
    clock at arrival gets 422, as consumers would dead-letter it."""

    ingest_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    ingest_ack_timeout_s: float = Field(default=10.0, gt=0)
