"""The segmenter fold as it was before the due index: every rollover and every
redraw re-evaluates every account of the tenant. Kept only as the reference the
indexed fold must match exactly (same transitions, same memberships)."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from datetime import datetime

from services.runtime.batch import Inbound
from services.segmenter.domain import fold
from services.segmenter.domain.days import day_start
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import RFM_FEATURES, AccountKey, TenantClock, Transition
from services.segmenter.domain.program import SegmenterProgram
from services.segmenter.domain.rfm import tenant_breakpoints


class ReferenceFold:
    """One tenant set held in memory, folded the old, exhaustive way."""

    def __init__(self, program: SegmenterProgram) -> None:
        self.program = program
        self.clocks: dict[str, TenantClock] = {}
        self.states: dict[AccountKey, AccountState] = {}
        self.transitions: list[Transition] = []
        self.late: list[str] = []

    def run(self, batch: Sequence[Inbound]) -> None:
        program = self.program
        for item in batch:
            event = item.event
            clock = self.clocks.setdefault(event.tenant, TenantClock(event.tenant))
            reason = fold.too_late(clock, program, event.time)
            if reason is None:
                due = fold.advance(clock, program, event.time)
                if due is not None:
                    self.transitions += self._rollover(clock, due)
            if reason is not None:
                self.late.append(event.id)
                continue
            key = (event.tenant, event.subject)
            is_new = key not in self.states
            state = self.states.setdefault(key, AccountState())
            self.transitions += fold.apply_event(program, clock, state, event)
            if is_new:
                clock.accounts += 1
            if clock.needs_rescore(event.time, program.rfm_redraw_every):
                self.transitions += self._rescore(clock, event.time, event.id)

    def _mine(self, clock: TenantClock) -> list[AccountKey]:
        return sorted(k for k in self.states if k[0] == clock.tenant)

    def _drawn(self, clock: TenantClock, mine: list[AccountKey]) -> None:
        clock.accounts = clock.scored_accounts = len(mine)
        clock.moved_accounts = 0
        for key in mine:
            self.states[key].rfm_moved = False

    def _rollover(self, clock: TenantClock, to_day: int) -> list[Transition]:
        assert clock.stream_day is not None
        program, accounts = self.program, self.states
        out: list[Transition] = []
        mine = self._mine(clock)
        for day in range(clock.stream_day + 1, to_day + 1):
            for key in mine:
                accounts[key].prune(day, program.rfm)
            clock.breakpoints = tenant_breakpoints(
                [accounts[k].rfm_values(day, program.rfm) for k in mine]
            )
            at = day_start(day)
            for key in mine:
                out += fold.evaluate(program, clock, key[1], accounts[key], day, at, None, None)
        clock.stream_day = to_day
        self._drawn(clock, mine)
        return out

    def _rescore(self, clock: TenantClock, at: datetime, cause_id: str) -> list[Transition]:
        assert clock.stream_day is not None
        program, accounts = self.program, self.states
        day = clock.stream_day
        mine = self._mine(clock)
        clock.breakpoints = tenant_breakpoints(
            [accounts[k].rfm_values(day, program.rfm) for k in mine]
        )
        self._drawn(clock, mine)
        clock.rescored_at = at
        out: list[Transition] = []
        for key in mine:
            out += fold.evaluate(
                program,
                clock,
                key[1],
                accounts[key],
                day,
                at,
                f"{cause_id}/rescore/{key[1]}",
                None,
                frozenset(RFM_FEATURES),
            )
        return out


def memberships(
    states: MutableMapping[AccountKey, AccountState],
) -> dict[AccountKey, dict[str, str]]:
    return {k: {n: t.isoformat() for n, t in s.segments.items()} for k, s in states.items()}
