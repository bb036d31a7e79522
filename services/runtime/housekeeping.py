"""Housekeeping: the dedupe table does not grow forever.

``processed_events`` remembers every applied event id so that a repeat is a
no-op. Ids older than ``LOYALTY_DEDUPE_RETENTION_DAYS`` (default 30) are deleted
in small chunks once an hour: a producer retry or a replay of events *older* than
that would be applied again, so the retention must exceed the longest replay or
retry horizon you use (backfills of older history should go to a new tenant or
raise the retention first).
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.periodic import Periodic

log = logging.getLogger(__name__)


async def purge_processed_events(
    engine: AsyncEngine, retention_days: int, chunk: int = 10_000
) -> int:
    """Deletes dedupe entries older than the retention; returns how many."""
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (
                await conn.execute(
                    text(
                        "DELETE FROM processed_events WHERE ctid IN"
                        " (SELECT ctid FROM processed_events"
                        " WHERE processed_at < now() - make_interval(days => :d) LIMIT :n)"
                    ),
                    {"d": retention_days, "n": chunk},
                )
            ).rowcount
        total += deleted
        if deleted < chunk:
            return total


def housekeeper(
    service: str, engine: AsyncEngine, retention_days: int, interval_s: float = 3600
) -> Periodic:
    """The hourly purge as a background job of the service."""

    async def purge() -> None:
        n = await purge_processed_events(engine, retention_days)
        if n:
            log.info("%s: purged %d dedupe entries older than %d days", service, n, retention_days)

    return Periodic(f"{service}-housekeeping", interval_s, purge)
