"""Days as integers (proleptic Gregorian ordinals, UTC) and ISO weeks."""

from __future__ import annotations

from datetime import UTC, date, datetime


def day_of(t: datetime) -> int:
    return t.astimezone(UTC).date().toordinal()


def day_start(day: int) -> datetime:
    return datetime.combine(date.fromordinal(day), datetime.min.time(), tzinfo=UTC)


def week_of(day: int) -> int:
    """Monday-based week number; ordinal 1 (0001-01-01) is a Monday."""
    return (day - 1) // 7


def month_of(day: int) -> str:
    d = date.fromordinal(day)
    return f"{d.year:04d}-{d.month:02d}"
