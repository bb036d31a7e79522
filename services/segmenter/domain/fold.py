"""The tenant fold in stream time.

Stream time is per tenant: the watermark ``W`` is the largest event time seen
(in live mode also the wall clock, passed in as ``now``). ``F = W - allowed
lateness`` is final: an event older than ``F`` is too late and is refused with a
reason; any other event is applied exactly. The *stream day* is the UTC day of
``F``; segment predicates are evaluated as of that day.

When ``F`` enters a new day, the tenant *rolls over*: for each new day, the
tenant's quintile breakpoints are redrawn and accounts are re-evaluated as of
that day, so that transitions caused by time alone (30 days of silence, a
renewal date coming closer) happen without an event. Only the accounts that can
change are touched (``due.py``): those whose predicates or raw RFM values time
alone changes that day, those a moved breakpoint re-scores, and those an event
touched the day before; the result is exactly that of re-evaluating every
account (a test keeps the exhaustive fold as the reference). A rollover's
transitions carry the day's start as their time.

Because rollovers happen at the position in the event sequence where ``F``
crosses midnight, and everything else is a left fold, the same events in the
same order give the same memberships and transitions however they are batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any

from schemas import Event
from schemas.events import AccountFeatures
from services.segmenter.domain.days import day_of, day_start
from services.segmenter.domain.due import CANDIDATES, TenantIndex, next_due, views
from services.segmenter.domain.features import (
    CHANGED_BY,
    FEATURES,
    AccountState,
    FeatureView,
    RfmConfig,
    min_opt,
    transition_snapshot,
)
from services.segmenter.domain.program import SegmenterProgram
from services.segmenter.domain.rfm import MIN_ACCOUNTS, NO_BREAKPOINTS, RfmBreakpoints, cell

AccountKey = tuple[str, str]


@dataclass
class TenantClock:
    """A tenant's stream time and its current RFM breakpoints."""

    tenant: str
    watermark: datetime | None = None
    stream_day: int | None = None
    breakpoints: RfmBreakpoints = NO_BREAKPOINTS
    accounts: int = 0  # accounts the tenant has
    scored_accounts: int = 0  # accounts when the breakpoints were drawn
    moved_accounts: int = 0  # accounts whose RFM values changed since then

    rescored_at: datetime | None = None  # event time of the last in-day redraw

    def needs_rescore(self, at: datetime, every: timedelta) -> bool:
        """Breakpoints are redrawn at each day rollover, whenever the tenant has
        doubled since the last draw (from the 5th account on: a new tenant's scores
        spread out within seconds), and — at most once per ``every`` of stream time —
        when it grew by a tenth or a tenth of its accounts changed their RFM values.
        All of it follows the event sequence, so redraws are deterministic in it."""
        if self.accounts < MIN_ACCOUNTS:
            return False
        if self.accounts >= 2 * self.scored_accounts:
            return True
        if self.rescored_at is not None and at < self.rescored_at + every:
            return False
        return (
            self.accounts * 10 >= self.scored_accounts * 11
            or self.moved_accounts * 10 >= self.accounts
        )

    def final_time(self, program: SegmenterProgram) -> datetime | None:
        return None if self.watermark is None else self.watermark - program.allowed_lateness


@dataclass(frozen=True, slots=True)
class Transition:
    """An account entered or exited a segment at ``time``."""

    kind: str  # "entered" | "exited"
    segment: str
    tenant: str
    account: str
    time: datetime
    as_of: int
    cause_id: str | None  # the event that caused it, None for a day rollover
    user_id: str | None
    features: Mapping[str, Any]
    segments: tuple[str, ...] = ()  # the account's segments after the change


def too_late(clock: TenantClock, program: SegmenterProgram, t: datetime) -> str | None:
    """Why an event at ``t`` cannot be applied any more, or None."""
    final = clock.final_time(program)
    if final is not None and t < final:
        return (
            f"late event: time {t.isoformat()} is before the tenant's final stream time"
            f" {final.isoformat()} (watermark {clock.watermark.isoformat()}"  # type: ignore[union-attr]
            f" minus allowed lateness {program.allowed_lateness})"
        )
    return None


def arrived_too_late(
    program: SegmenterProgram, t: datetime, arrival: datetime | None
) -> str | None:
    """Live mode: why an event that entered the system at ``arrival`` is too late."""
    if arrival is not None and arrival - t > program.allowed_lateness:
        return (
            f"late event: time {t.isoformat()} arrived at {arrival.isoformat()},"
            f" more than the allowed lateness {program.allowed_lateness} after it happened"
        )
    return None


def observe(clock: TenantClock, program: SegmenterProgram, t: datetime, now: datetime) -> None:
    """Live mode: records event time without moving the stream day (the wall clock
    does that, through :func:`advance` with ``now``, once the consumer caught up)."""
    if clock.watermark is None or t > clock.watermark:
        clock.watermark = t
    if clock.stream_day is None:
        clock.stream_day = day_of(now - program.allowed_lateness)


def advance(clock: TenantClock, program: SegmenterProgram, t: datetime) -> int | None:
    """Moves the watermark to ``t`` if later. Returns the new stream day when a
    rollover is due (the caller must then :func:`rollover`), else None."""
    if clock.watermark is None or t > clock.watermark:
        clock.watermark = t
    final = clock.final_time(program)
    assert final is not None
    day = day_of(final)
    if clock.stream_day is None:
        clock.stream_day = day  # a new tenant: no past to roll over
        return None
    return day if day > clock.stream_day else None


def apply_event(
    program: SegmenterProgram, clock: TenantClock, state: AccountState, event: Event
) -> list[Transition]:
    """Folds an admitted event into its account and re-evaluates the predicates the
    event can affect (all of them for a new account). An account's memberships are
    always those of the stream day, even if it was last evaluated days ago: the
    rollovers evaluate every account that time alone changes (``due.py``)."""
    return apply_event_values(program, clock, state, event)[0]


def apply_event_values(
    program: SegmenterProgram, clock: TenantClock, state: AccountState, event: Event
) -> tuple[list[Transition], tuple[int, int, int]]:
    """:func:`apply_event`, and the account's RFM values after it (as of the stream
    day), computed once for the fold, the predicates and the index."""
    assert clock.stream_day is not None
    changed = None if state.evaluated_day is None else changed_by(program, event)
    watch_rfm = not state.rfm_moved and (changed is None or not changed.isdisjoint(RFM_FEATURES))
    before = state.rfm_values(clock.stream_day, program.rfm) if watch_rfm else None
    state.apply(event, program.rfm)
    after = state.rfm_values(clock.stream_day, program.rfm)
    if before is not None and after != before:
        state.rfm_moved = True
        clock.moved_accounts += 1
    out = evaluate(
        program,
        clock,
        event.subject,
        state,
        clock.stream_day,
        event.time,
        event.id,
        getattr(event.data, "user_id", None),
        changed,
        after,
    )
    # what time alone does to it next is worked out at the next rollover, once,
    # not after each of its events today
    state.due_day = min_opt(state.due_day, clock.stream_day + 1)
    return out, after


def changed_by(program: SegmenterProgram, event: Event) -> frozenset[str]:
    """The features ``event`` can change, RFM scores included (per event type)."""
    return _changed_by(program.rfm, event.type)


@lru_cache(maxsize=256)
def _changed_by(rfm: RfmConfig, etype: str) -> frozenset[str]:
    changed = set(CHANGED_BY.get(etype, FEATURES.keys()))
    if any(s.type == etype for s in rfm.recency_events):
        changed |= {"r_score", "rfm_cell"}
    if any(s.type == etype for s in rfm.frequency_events):
        changed |= {"f_score", "rfm_cell"}
    if etype in ("billing.subscription_updated", "billing.invoice_paid"):
        changed.add("m_score")
    return frozenset(changed)


def rollover(
    program: SegmenterProgram, clock: TenantClock, index: TenantIndex, to_day: int
) -> tuple[list[Transition], set[str]]:
    """Advances the tenant day by day to ``to_day``. Each day it takes the accounts
    due that day (their values or predicates can change by time alone), brings
    their RFM values up to the day, redraws the tenant's breakpoints from the
    index and adds the accounts the redraw re-scores; only those are evaluated,
    in account order. Returns the transitions and the accounts it changed."""
    assert clock.stream_day is not None
    out: list[Transition] = []
    touched: set[str] = set()
    rfm = program.rfm
    for day in range(clock.stream_day + 1, to_day + 1):
        due_now = index.pop_due(day)
        for account in due_now:
            state = index.states[account]
            state.prune(day, rfm)
            index.set_values(account, state.rfm_values(day, rfm))
        # the index holds every account's values as of today: the due ones were
        # just brought up to it, and time alone moves no other's
        drawn = index.breakpoints()
        rescored = index.rescored(clock.breakpoints, drawn)
        clock.breakpoints = drawn
        at = day_start(day)
        affected = due_now | rescored
        for account in sorted(affected):
            state = index.states[account]
            # memberships were current as of the last evaluation: only what reads
            # the day or the scores can have moved since (only the scores, if the
            # account is not due: then no predicate of it moves with the day)
            raw = index.values(account)
            if account in due_now:
                out += evaluate(program, clock, account, state, day, at, None, None, TIMED, raw)
            else:
                out += evaluate(program, clock, account, state, day, at, None, None, RFM_READ, raw)
                if not program.scores_and_time:
                    continue  # its next due day does not depend on its scores
            state.due_day = next_due_day(program, clock, state, day)
            index.set_due(account, state.due_day)
        touched |= affected
    clock.stream_day = to_day
    touched |= _drawn(clock, index)
    return out, touched


def _drawn(clock: TenantClock, index: TenantIndex) -> set[str]:
    clock.accounts = clock.scored_accounts = len(index)
    clock.moved_accounts = 0
    moved = set(index.moved)
    for account in moved:
        index.states[account].rfm_moved = False
    index.moved.clear()
    return moved


def rescore(
    program: SegmenterProgram,
    clock: TenantClock,
    index: TenantIndex,
    at: datetime,
    cause_id: str,
) -> tuple[list[Transition], set[str]]:
    """Redraws the tenant's breakpoints now and re-evaluates the RFM predicates of
    the accounts whose scores it changed; ids derive from the cause."""
    assert clock.stream_day is not None
    day = clock.stream_day
    drawn = index.breakpoints()
    affected = index.rescored(clock.breakpoints, drawn)
    clock.breakpoints = drawn
    touched = _drawn(clock, index)
    clock.rescored_at = at
    out: list[Transition] = []
    for account in sorted(affected):
        state = index.states[account]
        out += evaluate(
            program,
            clock,
            account,
            state,
            day,
            at,
            f"{cause_id}/rescore/{account}",
            None,
            frozenset(RFM_FEATURES),
        )
        state.due_day = next_due_day(program, clock, state, day)  # scores moved
        index.set_due(account, state.due_day)
    return out, touched | affected


def next_due_day(
    program: SegmenterProgram, clock: TenantClock, state: AccountState, as_of: int
) -> int | None:
    """The next day time alone can change the account (just evaluated as of ``as_of``)."""
    view_at = views(lambda day: account_view(program, clock, state, day))
    return next_due(program.timed, state, as_of, program.rfm, view_at)


def build_index(
    program: SegmenterProgram,
    clock: TenantClock,
    accounts: Mapping[AccountKey, AccountState],
) -> TenantIndex:
    """The index of a tenant from all of its accounts (as loaded from storage)."""
    assert clock.stream_day is not None
    index = TenantIndex(clock.tenant, program.rfm)
    for (tenant, account), state in accounts.items():
        if tenant == clock.tenant:
            index.sync(account, state, clock.stream_day)
    return index


def account_view(
    program: SegmenterProgram,
    clock: TenantClock,
    state: AccountState,
    as_of: int,
    raw: tuple[int, int, int] | None = None,
) -> FeatureView:
    """Features plus RFM scores and cell, computed as predicates read them (from
    ``raw``, the state's RFM values as of ``as_of``, when the caller has them)."""
    return FeatureView(state, as_of, program.rfm, partial(_rfm_feature, clock.breakpoints), raw)


RFM_FEATURES = ("r_score", "f_score", "m_score", "rfm_cell")
RFM_READ = frozenset(RFM_FEATURES)
TIMED = frozenset(CANDIDATES) | RFM_READ
"""What can change without an event: features that move with the day, and scores."""

TRANSITION_FEATURES = (
    *(("adopted" if name == "features_adopted" else name) for name in AccountFeatures.model_fields),
    "currency",  # of mrr and arr
)
"""The features a transition carries (what the published event holds)."""


def _rfm_feature(breakpoints: RfmBreakpoints, view: FeatureView, name: str) -> Any:
    if name not in RFM_FEATURES:
        raise KeyError(name)
    raw = view.raw if view.raw is not None else view.state.rfm_values(view.as_of, view.rfm)
    r, f, m = breakpoints.scores(*raw)
    # all four at once: a predicate or a snapshot that reads one reads the others
    view.remember({"r_score": r, "f_score": f, "m_score": m, "rfm_cell": cell(r, f)})
    return view[name]


def full_view(view: FeatureView, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Every feature (or those ``names``) and the scores, computed now."""
    wanted = FEATURES if names is None else names
    return {**{name: view[name] for name in wanted}, **{n: view[n] for n in RFM_FEATURES}}


def evaluate(
    program: SegmenterProgram,
    clock: TenantClock,
    account: str,
    state: AccountState,
    as_of: int,
    at: datetime,
    cause_id: str | None,
    user_id: str | None,
    changed: frozenset[str] | None = None,
    raw: tuple[int, int, int] | None = None,
) -> list[Transition]:
    view = account_view(program, clock, state, as_of, raw)
    was_in = set(state.segments)
    now_in = set(was_in)
    for segment in program.segments_reading(changed):  # what can have moved
        if segment.predicate(view):
            now_in.add(segment.name)
        else:
            now_in.discard(segment.name)
    state.evaluated_day = as_of
    if now_in == was_in:
        return []
    snapshot = transition_snapshot(view)
    for name in RFM_FEATURES:
        snapshot[name] = view[name]
    members = tuple(sorted(now_in))

    def transition(kind: str, name: str) -> Transition:
        return Transition(
            kind, name, clock.tenant, account, at, as_of, cause_id, user_id, snapshot, members
        )

    out = [transition("exited", name) for name in sorted(was_in - now_in)]
    out += [transition("entered", name) for name in sorted(now_in - was_in)]
    for name in was_in - now_in:
        del state.segments[name]
    for name in now_in - was_in:
        state.segments[name] = at
    return out
