"""RFM scores by quintiles of a tenant's current distribution.

Convention (also in docs/segments.md):

- Each dimension has a raw value where larger is better: R is the day of the last
  qualifying event (never = -1), F the count of qualifying events in the window,
  M the monetary measure in minor units.
- Breakpoints are the nearest-rank 20/40/60/80th percentiles of the tenant's
  values: ``q_k = sorted(values)[ceil(k * n / 5) - 1]``.
- ``score = 1 + #{k : value > q_k}``: 1..5, equal values always score the same,
  and a value equal to a breakpoint stays below it (ties go down).
- A tenant with fewer than ``MIN_ACCOUNTS`` scored accounts gets 3 everywhere:
  quintiles of two or three accounts would be noise.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

MIN_ACCOUNTS = 5
Breakpoints = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class RfmBreakpoints:
    r: Breakpoints | None
    f: Breakpoints | None
    m: Breakpoints | None

    def scores(self, r: int, f: int, m: int) -> tuple[int, int, int]:
        return score(r, self.r), score(f, self.f), score(m, self.m)

    def to_json(self) -> list[list[int] | None]:
        return [list(b) if b is not None else None for b in (self.r, self.f, self.m)]

    @classmethod
    def from_json(cls, raw: Sequence[Sequence[int] | None] | None) -> RfmBreakpoints:
        if not raw:
            return NO_BREAKPOINTS
        r, f, m = (tuple(b) if b is not None else None for b in raw)
        return cls(r, f, m)  # type: ignore[arg-type]


NO_BREAKPOINTS = RfmBreakpoints(None, None, None)


def breakpoints(values: Sequence[int]) -> Breakpoints | None:
    n = len(values)
    if n < MIN_ACCOUNTS:
        return None
    ordered = sorted(values)
    q = [ordered[math.ceil(k * n / 5) - 1] for k in (1, 2, 3, 4)]
    return (q[0], q[1], q[2], q[3])


def score(value: int, bps: Breakpoints | None) -> int:
    """1 + how many of the (sorted) breakpoints ``value`` is above."""
    if bps is None:
        return 3
    return 1 + bisect_left(bps, value)


def tenant_breakpoints(values: Sequence[tuple[int, int, int]]) -> RfmBreakpoints:
    return RfmBreakpoints(
        breakpoints([v[0] for v in values]),
        breakpoints([v[1] for v in values]),
        breakpoints([v[2] for v in values]),
    )


CELLS: tuple[tuple[str, str], ...] = (
    ("champions", "R 4-5, F 4-5"),
    ("loyal", "R 3, F 4-5"),
    ("cant_lose_them", "R 1, F 4-5"),
    ("at_risk", "R 1-2, F 3 / R 2, F 4-5"),
    ("potential_loyalists", "R 4-5, F 2-3"),
    ("new_customers", "R 5, F 1"),
    ("promising", "R 4, F 1"),
    ("need_attention", "R 3, F 3"),
    ("about_to_sleep", "R 3, F 1-2"),
    ("hibernating", "R 2, F 1-2"),
    ("lost", "R 1, F 1-2"),
)


def cell(r: int, f: int) -> str:
    """The named group of an (R, F) pair; every one of the 25 pairs has exactly one."""
    if f >= 4:
        if r >= 4:
            return "champions"
        if r == 3:
            return "loyal"
        return "cant_lose_them" if r == 1 else "at_risk"
    if r <= 2 and f == 3:
        return "at_risk"
    if r >= 4:
        if f >= 2:
            return "potential_loyalists"
        return "new_customers" if r == 5 else "promising"
    if r == 3:
        return "need_attention" if f == 3 else "about_to_sleep"
    return "hibernating" if r == 2 else "lost"
