"""What the runtime requires of a decoded event before any handler may see it.

Pure functions (no I/O, no clock): the worker passes the times in, so that the
rules are tested on their own and a replay of the same records decides the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def record_arrival(timestamp_ms: int | None) -> datetime | None:
    """When a record entered the system: its Kafka timestamp (milliseconds since the
    epoch) as an aware UTC time, or None when the record carries none (old message
    formats give None or -1) or one that is not a representable time."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        # a producer may stamp any int64; such a record simply has no usable arrival
        # (and an OSError here must not pass for a transient infrastructure error)
        return None


def clock_skew_violation(
    event_time: datetime, arrival: datetime, max_skew: timedelta
) -> str | None:
    """None when ``event_time`` is at most ``max_skew`` ahead of ``arrival``;
    otherwise the reason to dead-letter the event.

    An event from the future would move its tenant's stream clock there, and every
    expiry before that time would fire at once. Events from the past are always
    admitted here: lateness is each handler's business (e.g. the segmenter's
    allowed lateness). Both times must be timezone-aware.
    """
    ahead = event_time - arrival  # a difference: never overflows, unlike time ± skew
    if ahead <= max_skew:
        return None
    ahead -= timedelta(microseconds=ahead.microseconds)  # whole seconds read better
    return (
        f"event time {event_time.isoformat()} is {ahead} ahead of its arrival"
        f" {arrival.isoformat()} (max clock skew {max_skew})"
    )
