"""When an account's segments can next change by time alone, and the tenant index
that lets a rollover or a redraw touch only those accounts.

Without events an account's state is fixed, so its features are functions of the
as-of day only, and every one of them is simple in that day: constant (plan,
seats), constant between known *break days* (a 30-day window loses a bucket on
``bucket + 30``; membership turns ``active`` 30 days after the first
subscription, ``expired`` the day after renewal), or linear with slope ±1
(``days_since_*``, ``tenure_days``, ``days_to_renewal``; ``active_days_Nd`` is
piecewise linear). A comparison of a linear feature with a constant ``c`` can
only change its truth where the feature passes ``c``. So a predicate can only
change on a *candidate day*: a break day of a feature it reads, or a day where a
linear feature it reads meets one of the predicate's constants. Evaluating the
real predicate on the candidates in order gives the exact next day it changes.

A predicate that does arithmetic with a linear feature, or compares two
features, is not analysed: the account is simply due every day (correct, only
slower). RFM scores change when the account's raw R/F/M values do (F and a
``paid_total`` M lose buckets on known days: always due then, because the index
must hold current values at each draw) and when the tenant's breakpoints move,
which re-scores exactly the accounts whose values lie between the old and the
new breakpoint (found by a range query on values kept sorted).

The fold stays exact: an account that is not due has, by construction, the
same memberships on the new day as on the day it was last evaluated.
"""

from __future__ import annotations

import ast
import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from sortedcontainers import SortedList

from services.segmenter.domain.days import day_of, week_of
from services.segmenter.domain.features import (
    NEW_MEMBER_DAYS,
    WINDOWS,
    AccountState,
    FeatureView,
    RfmConfig,
)
from services.segmenter.domain.rfm import MIN_ACCOUNTS, Breakpoints, RfmBreakpoints

Candidates = Callable[[AccountState, int, RfmConfig, tuple[float, ...]], Iterable[int]]

_SINCE = {
    "days_since_last_login": "last_login_at",
    "days_since_last_key_action": "last_key_action_at",
    "days_since_last_activity": "last_activity_at",
    "days_since_onboarding": "onboarding_completed_at",
}
LINEAR = frozenset(
    {*_SINCE, "tenure_days", "days_to_renewal", *(f"active_days_{n}d" for n in WINDOWS)}
)
"""Features that move by one a day (piecewise, for ``active_days_Nd``)."""

RFM_SCORES = frozenset({"r_score", "f_score", "m_score", "rfm_cell"})


def _offsets(thresholds: tuple[float, ...]) -> set[int]:
    """Values around each constant where a comparison with it can flip."""
    out: set[int] = set()
    for c in thresholds:
        lo, hi = math.floor(c), math.ceil(c)
        out.update((lo - 1, lo, lo + 1, hi, hi + 1))
    return out


def _since(attr: str) -> Candidates:
    def candidates(
        s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]
    ) -> Iterable[int]:
        t = getattr(s, attr)
        if t is None:
            return ()
        start = day_of(t)  # max(d - start, 0): 0 up to ``start``, then +1 a day
        return [start + k for k in _offsets(ths) if k >= 0]

    return candidates


def _tenure(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    if s.first_subscribed_day is None:
        return ()
    return [s.first_subscribed_day + k for k in _offsets(ths)]


def _to_renewal(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    if s.renewal_date is None:
        return ()
    end = s.renewal_date.toordinal()
    return [end - k + 1 for k in _offsets(ths)] + [end - k for k in _offsets(ths)]


def _active_days(n: int) -> Candidates:
    def candidates(
        s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]
    ) -> Iterable[int]:
        out: list[int] = []
        later = 0  # days of the runs after this one: still wholly in the window
        offsets = _offsets(ths)
        for first, last in reversed(s.active_runs):
            # the run counts whole up to first + n - 1, then loses a day a day
            # until last + n, when it has left the window
            out += (first + n, last + n, last + n + 1)
            for k in offsets:
                d = last + n + later - k  # the day the total equals k
                if first + n <= d <= last + n:
                    out += (d, d + 1)
            later += last - first + 1
        return out

    return candidates


def _buckets(field: str, window: Callable[[RfmConfig], int]) -> Candidates:
    def candidates(
        s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]
    ) -> Iterable[int]:
        w = window(r)
        return [b + w for b in getattr(s, field)]

    return candidates


def _fixed(days: int, r: RfmConfig) -> int:
    return days


def _streak(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    return [s.active_runs[-1][1] + 2] if s.active_runs else ()


def _weekly(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    if not s.active_runs:
        return ()
    latest = week_of(s.active_runs[-1][1])
    return [(latest + 2) * 7 + 1]  # the Monday the streak's week is two weeks old


def _membership(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    out = []
    if s.first_subscribed_day is not None:
        out.append(s.first_subscribed_day + NEW_MEMBER_DAYS)
    if s.renewal_date is not None:
        out.append(s.renewal_date.toordinal() + 1)
    return out


def rfm_value_breaks(s: AccountState, r: RfmConfig) -> list[int]:
    """Days on which the account's raw R/F/M values change without an event."""
    out = [b + r.frequency_window_days for b in s.rfm_frequency]
    if r.monetary == "paid_total":
        out += [b + r.monetary_window_days for b in s.paid]
    return out


def _rfm(s: AccountState, as_of: int, r: RfmConfig, ths: tuple[float, ...]) -> Iterable[int]:
    # the scores move when the raw values do (with fixed breakpoints): on the days
    # of rfm_value_breaks, which next_due already counts, so none of their own
    return ()


CANDIDATES: dict[str, Candidates] = {
    **{name: _since(attr) for name, attr in _SINCE.items()},
    "tenure_days": _tenure,
    "days_to_renewal": _to_renewal,
    **{f"active_days_{n}d": _active_days(n) for n in WINDOWS},
    **{f"key_actions_{n}d": _buckets("key_actions", partial(_fixed, n)) for n in WINDOWS},
    "paid_total_window": _buckets("paid", lambda r: r.monetary_window_days),
    "active_day_streak": _streak,
    "weekly_streak": _weekly,
    "membership": _membership,
    **{name: _rfm for name in RFM_SCORES},
}
"""Every feature that can change with the as-of day, and its candidate days."""


@dataclass(frozen=True, slots=True)
class Timing:
    """What a segment's predicate needs for the due analysis (from its source)."""

    time_features: tuple[str, ...]  # what it reads that moves with the day
    thresholds: tuple[float, ...]  # its numeric constants (and 0, for truthiness)
    daily: bool  # not analysable: due every day its time features can move


def analyse(source: str, reads: frozenset[str]) -> Timing:
    """The timing of a compiled predicate (see the module docstring)."""
    tree = ast.parse(source.strip(), mode="eval")
    numbers: set[float] = {0.0}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = float(node.value)  # type: ignore[arg-type]
            numbers.update((value, -value))
    return Timing(
        time_features=tuple(sorted(reads & CANDIDATES.keys())),
        thresholds=tuple(sorted(numbers)),
        daily=not _linear_safe(tree.body),
    )


def _mentions_linear(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id in LINEAR for n in ast.walk(node))


def _passes_value(node: ast.expr) -> bool:
    """True if the expression's value is one of its feature values unchanged."""
    if isinstance(node, (ast.Name, ast.Constant)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id == "coalesce" and all(_passes_value(a) for a in node.args)
    return False


def _linear_safe(node: ast.expr) -> bool:
    """Linear features appear only compared with constants (or as a truth value)."""
    if not _mentions_linear(node):
        return True
    if isinstance(node, ast.BoolOp):
        return all(_linear_safe(v) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _linear_safe(node.operand)
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        if not all(_passes_value(o) or not _mentions_linear(o) for o in operands):
            return False
        variable = [o for o in operands if any(isinstance(n, ast.Name) for n in ast.walk(o))]
        # ``x in (1, 2)`` is equality with constants; a tuple of features is not
        return len(variable) <= 1
    return _passes_value(node)


ViewAt = Callable[[int], FeatureView]


def next_due(
    segments: Iterable[tuple[str, Any, Timing]],
    state: AccountState,
    as_of: int,
    rfm: RfmConfig,
    view_at: ViewAt,
) -> int | None:
    """The first day after ``as_of`` on which the account must be evaluated again:
    a segment's predicate changes, or its raw RFM values do. None: never by time.
    ``segments`` are (name, predicate, timing); ``state.segments`` must be the
    predicates' values as of ``as_of``."""
    best: int | None = None
    for d in rfm_value_breaks(state, rfm):
        if d > as_of and (best is None or d < best):
            best = d
    for name, predicate, timing in segments:
        if not timing.time_features:
            continue
        if timing.daily:
            return as_of + 1
        days: set[int] = set()
        for feature in timing.time_features:
            days.update(CANDIDATES[feature](state, as_of, rfm, timing.thresholds))
        now = name in state.segments
        for d in sorted(days):
            if d <= as_of:
                continue
            if best is not None and d >= best:
                break
            if bool(predicate(view_at(d))) != now:
                best = d
                break
    return best


def views(make: Callable[[int], FeatureView]) -> ViewAt:
    """A per-day cache of feature views for one account."""
    cache: dict[int, FeatureView] = {}

    def view_at(day: int) -> FeatureView:
        v = cache.get(day)
        if v is None:
            v = cache[day] = make(day)
        return v

    return view_at


_DIMS = range(3)


class TenantIndex:
    """A tenant's accounts, their raw RFM values kept sorted per dimension, the
    day each is next due, and those whose values moved since the last draw.

    It holds the very state objects the fold mutates; :meth:`sync` must be called
    after an account's state changed (an event) so that the values and the due
    day here are current."""

    def __init__(self, tenant: str, rfm: RfmConfig) -> None:
        self.tenant = tenant
        self.rfm = rfm
        self.states: dict[str, AccountState] = {}
        self._values: dict[str, tuple[int, int, int]] = {}
        self._sorted: tuple[SortedList, SortedList, SortedList] = (
            SortedList(),
            SortedList(),
            SortedList(),
        )
        self._due_of: dict[str, int] = {}
        self._due_days: list[int] = []  # a heap; may hold days no account is due on
        self._due_at: dict[int, set[str]] = {}
        self.moved: set[str] = set()

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[str]:
        return iter(self.states)

    def sync(
        self,
        account: str,
        state: AccountState,
        as_of: int,
        values: tuple[int, int, int] | None = None,
    ) -> None:
        """Takes in the account's current state: values as of ``as_of`` (``values``,
        when the caller just computed them), due day, moved."""
        self.states[account] = state
        self.set_values(
            account, values if values is not None else state.rfm_values(as_of, self.rfm)
        )
        self.set_due(account, state.due_day)
        if state.rfm_moved:
            self.moved.add(account)
        else:
            self.moved.discard(account)

    def values(self, account: str) -> tuple[int, int, int]:
        """The account's raw RFM values as last set."""
        return self._values[account]

    def set_values(self, account: str, values: tuple[int, int, int]) -> None:
        old = self._values.get(account)
        if old == values:
            return
        for i in _DIMS:
            if old is not None:
                if old[i] == values[i]:
                    continue
                self._sorted[i].remove((old[i], account))
            self._sorted[i].add((values[i], account))
        self._values[account] = values

    def set_due(self, account: str, day: int | None) -> None:
        old = self._due_of.pop(account, None)
        if old is not None:
            self._due_at[old].discard(account)
        if day is None:
            return
        self._due_of[account] = day
        bucket = self._due_at.get(day)
        if bucket is None:
            bucket = self._due_at[day] = set()
            heapq.heappush(self._due_days, day)
        bucket.add(account)

    def pop_due(self, day: int) -> set[str]:
        """Every account due on or before ``day``, no longer due."""
        out: set[str] = set()
        while self._due_days and self._due_days[0] <= day:
            d = heapq.heappop(self._due_days)
            for account in self._due_at.pop(d, ()):
                del self._due_of[account]
                out.add(account)
        return out

    def due_count(self) -> int:
        return len(self._due_of)

    def breakpoints(self) -> RfmBreakpoints:
        """The nearest-rank quintile breakpoints of the current values (rfm.py)."""
        n = len(self._values)
        if n < MIN_ACCOUNTS:
            return RfmBreakpoints(None, None, None)
        ranks = [-(-k * n // 5) - 1 for k in (1, 2, 3, 4)]
        dims = [
            (s[ranks[0]][0], s[ranks[1]][0], s[ranks[2]][0], s[ranks[3]][0]) for s in self._sorted
        ]
        return RfmBreakpoints(dims[0], dims[1], dims[2])

    def rescored(self, old: RfmBreakpoints, new: RfmBreakpoints) -> set[str]:
        """The accounts whose score in some dimension differs between ``old`` and
        ``new``: values between a moved breakpoint's two positions."""
        out: set[str] = set()
        for i, (a, b) in enumerate(zip(_dims(old), _dims(new), strict=True)):
            if a == b:
                continue
            if a is None or b is None:
                return set(self.states)  # scores go from 3 everywhere to quintiles
            for qa, qb in zip(a, b, strict=True):
                lo, hi = min(qa, qb), max(qa, qb)
                if lo != hi:  # score(v) differs iff lo < v <= hi
                    found = self._sorted[i].irange((lo + 1,), (hi + 1,), inclusive=(True, False))
                    out.update(account for _, account in found)
        return out


def _dims(b: RfmBreakpoints) -> tuple[Breakpoints | None, Breakpoints | None, Breakpoints | None]:
    return b.r, b.f, b.m
