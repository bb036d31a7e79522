"""The due index: a rollover or a redraw that evaluates only the accounts time
can change gives exactly what evaluating every account gives (the reference),
and the analysis of when a predicate can next change is exact."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Event
from schemas.events import NpsSubmitted, NpsSubmittedData
from services.runtime.batch import Inbound
from services.runtime.codec import decode, encode
from services.runtime.program_file import read_program
from services.segmenter.domain.days import day_of
from services.segmenter.domain.due import analyse, rfm_value_breaks
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import account_view, next_due_day
from services.segmenter.domain.program import SegmenterProgram, load_program
from services.segmenter.handlers import _IDS as TRANSITION_IDS
from services.segmenter.handlers import process, transition_event, transition_message
from tests.unit.fakes import FakeAccountRepository
from tests.unit.segmenter_events import (
    at,
    cancel,
    key_action,
    login,
    onboarded,
    paid,
    seats,
    subscribed,
)
from tests.unit.segmenter_reference import ReferenceFold, memberships

DEFAULT = load_program(read_program(None))


def _program(**extra_segments: str) -> SegmenterProgram:
    raw: dict[str, Any] = dict(read_program(None))
    raw["segments"] = {**raw["segments"], **{k: {"when": v} for k, v in extra_segments.items()}}
    return load_program(raw)


def _program_of(name: str, when: str) -> SegmenterProgram:
    raw: dict[str, Any] = dict(read_program(None))
    raw["segments"] = {name: {"when": when}}
    return load_program(raw)


EVERY_TIME_FEATURE = _program(
    week_active="active_days_7d >= 3 and active_days_90d <= 40",
    keyed_7="key_actions_7d >= 2",
    keyed_90="key_actions_90d == 4",
    quiet_login="days_since_last_login >= 10",
    quiet_key="days_since_last_key_action > 6 and days_since_last_key_action < 21",
    paid_lots="paid_total_window >= 10000",
    tenure_quarter="tenure_days >= 90",
    renewal_soon="days_to_renewal <= 20 and days_to_renewal >= -3",
    odd_streak="active_day_streak >= 2",
    weekly="weekly_streak >= 2",
    recent_r="r_score >= 4 and days_since_last_activity <= 5",
    sliding="coalesce(days_since_last_key_action, 3) in (3, 8, 15)",
)
UNANALYSABLE = _program(
    arithmetic="tenure_days // 7 == 5",  # due daily
    two_features="days_since_last_login > days_since_onboarding",
)
SHOP = load_program(
    {
        **read_program(None),
        "rfm": {
            "recency_events": ["billing.invoice_paid"],
            "frequency_events": ["billing.invoice_paid"],
            "frequency_window_days": 30,
            "monetary": "paid_total",
            "monetary_window_days": 60,
        },
        "segments": {
            "champions": {"when": "rfm_cell == 'champions'"},
            "big": {"when": "m_score >= 4"},
            "lapsed": {"when": "f_score == 1 and r_score <= 2"},
            "repeat": {"when": "paid_total_window >= 20000 and paid_months >= 2"},
        },
    }
)


def nps(account: str, t: Any, score: int) -> Event:
    return NpsSubmitted(
        type="support.nps_submitted",
        id=f"nps-{account}-{t.isoformat()}-{score}",
        source="test",
        subject=account,
        tenant="t",
        time=t,
        data=NpsSubmittedData(user_id="u1", score=score),
    )


def one_event(kind: int, a: str, t: datetime, minute: int, renewal: date) -> Event:
    if kind == 0:
        return login(a, t)
    if kind in (1, 2):
        return key_action(a, t)
    if kind == 3:
        return seats(a, t, 5 + minute % 30)
    if kind == 4:
        return paid(a, t, 1000 * (1 + minute % 20))
    if kind == 5:
        return subscribed(a, t, seats=10 + minute % 120, mrr=100 * minute)
    if kind == 6:
        return subscribed(a, t, renewal=renewal, status="active")
    if kind == 7:
        return onboarded(a, t)
    if kind == 8:
        return cancel(a, t)
    if kind == 9:
        return nps(a, t, minute % 11)
    return key_action(a, t, key=False)


def histories(accounts: int = 12, days: int = 150) -> st.SearchStrategy[list[Event]]:
    names = [f"acct-{i:02d}" for i in range(accounts)]

    def build(spec: list[tuple[int, int, int, int]]) -> list[Event]:
        events: list[Event] = []
        for a_i, day, minute, kind in spec:
            a, t = names[a_i], at(day, minute / 60)
            renewal = (t + timedelta(days=5 + minute % 60)).date()
            if kind >= 11:  # a run of active days in a row
                act = login if kind == 11 else key_action
                events += [act(a, t + timedelta(days=d)) for d in range(2 + minute % 9)]
                continue
            events.append(one_event(kind, a, t, minute, renewal))
        events.sort(key=lambda e: e.time)
        for i in range(0, len(events) - 3, 9):  # a little out of order
            events[i], events[i + 2] = events[i + 2], events[i]
        return events

    return st.lists(
        st.tuples(
            st.integers(0, accounts - 1),
            st.integers(0, days),
            st.integers(0, 1439),
            st.integers(0, 12),
        ),
        min_size=1,
        max_size=160,
    ).map(build)


def inbound(events: Sequence[Event]) -> list[Inbound]:
    return [Inbound(e, "events.product", 0, i) for i, e in enumerate(events)]  # type: ignore[arg-type]


async def compare(program: SegmenterProgram, history: list[Event], chunks: list[int]) -> None:
    reference = ReferenceFold(program)
    reference.run(inbound(history))
    repo = FakeAccountRepository()
    got: list[Any] = []
    late: list[str] = []
    items, sizes, start = inbound(history), list(chunks), 0
    while start < len(items):
        size = sizes.pop(0) if sizes else len(items)
        result = await process(repo, program, items[start : start + size], None)
        got += result.transitions
        late += [i.event.id for i, _ in result.late]
        start += size
    expected = [transition_event(t).model_dump() for t in reference.transitions]
    assert [transition_event(t).model_dump() for t in got] == expected
    for t in got:  # the fast encoding publishes exactly what the contract encodes
        fast, model = transition_message(t), encode(transition_event(t))
        assert (fast.key, fast.value, fast.headers) == (model.key, model.value, model.headers)
        assert decode(fast.value, fast.headers) == transition_event(t)
        why = t.cause_id if t.cause_id is not None else f"{t.account}/day/{t.as_of}"
        assert fast.headers[2] == (
            "ce_id",
            str(uuid.uuid5(TRANSITION_IDS, f"{t.tenant}/{why}/{t.kind}/{t.segment}")).encode(),
        )
    assert late == reference.late
    states = {k: repo.state(*k) for k in repo.accounts}
    assert memberships(states) == memberships(reference.states)
    clock = repo.clocks.get("t")
    if clock is not None:
        ref = reference.clocks["t"]
        assert (clock.stream_day, clock.breakpoints) == (ref.stream_day, ref.breakpoints)
        assert clock.accounts == ref.accounts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(st.integers(1, 40), max_size=10))
async def test_indexed_fold_equals_evaluating_every_account(
    history: list[Event], chunks: list[int]
) -> None:
    await compare(DEFAULT, history, chunks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(accounts=6, days=200), st.lists(st.integers(1, 40), max_size=10))
async def test_every_time_feature_is_indexed_exactly(
    history: list[Event], chunks: list[int]
) -> None:
    await compare(EVERY_TIME_FEATURE, history, chunks)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(accounts=6, days=100))
async def test_unanalysable_predicates_are_evaluated_daily(history: list[Event]) -> None:
    await compare(UNANALYSABLE, history, [])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(accounts=20, days=120))
async def test_a_shop_program_rescored_by_moving_breakpoints_is_exact(
    history: list[Event],
) -> None:
    await compare(SHOP, history, [])


ONE_AT_A_TIME = {
    name: _program_of(name, when)
    for name, when in {
        **{s.name: s.source for s in EVERY_TIME_FEATURE.segments},
    }.items()
}


@pytest.mark.parametrize("name", sorted(ONE_AT_A_TIME))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(accounts=4, days=90))
async def test_each_time_feature_alone_is_indexed_exactly(name: str, history: list[Event]) -> None:
    # alone, no other segment's due days can hide a missed candidate day
    await compare(ONE_AT_A_TIME[name], history, [])


def test_arithmetic_on_a_linear_feature_is_due_daily_and_plain_comparisons_are_not() -> None:
    reads = frozenset({"tenure_days"})
    assert analyse("tenure_days // 7 == 5", reads).daily
    assert not analyse("tenure_days >= 90", reads).daily
    both = frozenset({"days_since_last_login", "days_since_onboarding"})
    assert analyse("days_since_last_login > days_since_onboarding", both).daily
    assert not analyse("coalesce(days_since_last_login, 3) in (3, 8)", both).daily
    assert not analyse("plan == 'pro'", frozenset({"plan"})).time_features


def test_the_next_due_day_is_the_first_day_a_predicate_changes() -> None:
    rng = random.Random(7)
    program = EVERY_TIME_FEATURE
    from services.segmenter.domain.fold import TenantClock, evaluate

    for _ in range(200):
        state = AccountState()
        for _ in range(rng.randint(1, 12)):
            t = at(rng.randint(0, 60), rng.random() * 24)
            kind = rng.randint(0, 3)
            event = [login("a", t), key_action("a", t), subscribed("a", t), onboarded("a", t)][kind]
            state.apply(event, program.rfm)
        as_of = day_of(at(0)) + rng.randint(0, 70)
        clock = TenantClock("t", stream_day=as_of)
        clock.stream_day = as_of
        evaluate(program, clock, "a", state, as_of, at(0), None, None)
        due = next_due_day(program, clock, state, as_of)

        def members(day: int, clock: TenantClock = clock, state: AccountState = state) -> set[str]:
            view = account_view(program, clock, state, day)
            return {s.name for s in program.segments if s.predicate(view)}

        today = members(as_of)
        horizon = as_of + 800
        first_change = next((d for d in range(as_of + 1, horizon) if members(d) != today), None)
        # exactly the first change, unless the raw RFM values move first (the
        # index must hold them current at every draw)
        moves = [d for d in rfm_value_breaks(state, program.rfm) if d > as_of]
        expected = min([d for d in (first_change, *moves) if d is not None], default=None)
        assert due == expected


def test_the_one_pass_transition_snapshot_equals_the_features_read_one_by_one() -> None:
    from services.segmenter.domain.features import FeatureView, transition_snapshot
    from services.segmenter.domain.fold import TRANSITION_FEATURES

    rng = random.Random(11)
    program = EVERY_TIME_FEATURE
    for _ in range(300):
        state = AccountState()
        for _ in range(rng.randint(0, 14)):
            t = at(rng.randint(0, 90), rng.random() * 24)
            state.apply(
                one_event(
                    rng.randint(0, 10),
                    "a",
                    t,
                    rng.randint(0, 1439),
                    (t + timedelta(days=40)).date(),
                ),
                program.rfm,
            )
        as_of = day_of(at(0)) + rng.randint(-5, 120)
        fresh = FeatureView(state, as_of, program.rfm)
        read = {name: fresh[name] for name in TRANSITION_FEATURES}
        primed = FeatureView(state, as_of, program.rfm)
        primed["membership"]  # a predicate read it already
        assert transition_snapshot(FeatureView(state, as_of, program.rfm)) == read
        assert transition_snapshot(primed) == read
