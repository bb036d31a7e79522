"""Days as integers (proleptic Gregorian ordinals, UTC) and ISO weeks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


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


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``2d`` -> timedelta (for program settings)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 6h or 2d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])
