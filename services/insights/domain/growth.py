"""Segment growth: each segment's entries, exits, net change and size per UTC day
(of the transitions' event times) and per calendar month, from daily counts of
``segment.entered`` and ``segment.exited`` (a segment's size is the running sum
of its net changes)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date

from services.insights.domain.facts import SegmentChange


@dataclass(frozen=True)
class DayCount:
    segment: str
    day: date
    entered: int
    exited: int


@dataclass(frozen=True)
class Step:
    period: str  # "2026-03-14" or "2026-03"
    entered: int
    exited: int
    net: int
    size: int  # at the period's end


@dataclass
class SegmentGrowth:
    segment: str
    size: int = 0
    days: list[Step] = field(default_factory=list)
    months: list[Step] = field(default_factory=list)


def daily_counts(changes: Iterable[SegmentChange]) -> list[DayCount]:
    """What the Postgres adapter computes with one GROUP BY, in memory."""
    counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for c in changes:
        counts[(c.segment, c.at.astimezone(UTC).date())][0 if c.entered else 1] += 1
    return [DayCount(s, d, n[0], n[1]) for (s, d), n in sorted(counts.items())]


def growth(counts: Iterable[DayCount]) -> list[SegmentGrowth]:
    """Per segment (by name), its days and months in order, with sizes."""
    by_segment: dict[str, list[DayCount]] = defaultdict(list)
    for c in counts:
        by_segment[c.segment].append(c)
    out = []
    for segment in sorted(by_segment):
        g = SegmentGrowth(segment)
        months: dict[str, list[int]] = {}
        for c in sorted(by_segment[segment], key=lambda c: c.day):
            g.size += c.entered - c.exited
            g.days.append(
                Step(c.day.isoformat(), c.entered, c.exited, c.entered - c.exited, g.size)
            )
            m = months.setdefault(f"{c.day:%Y-%m}", [0, 0, 0])
            m[0] += c.entered
            m[1] += c.exited
            m[2] = g.size
        g.months = [Step(k, e, x, e - x, size) for k, (e, x, size) in months.items()]
        out.append(g)
    return out
