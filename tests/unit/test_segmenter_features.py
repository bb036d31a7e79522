"""The account reducer against plain reference computations."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmenter.domain.days import day_of, week_of
from services.segmenter.domain.features import AccountState, RfmConfig, add_day
from services.segmenter.domain.program import FEATURE_KINDS, parse_selector
from tests.unit.segmenter_events import T0, at, key_action, login, paid, subscribed

RFM = RfmConfig(
    recency_events=(parse_selector("product.feature_used:key_action"),),
    frequency_events=(parse_selector("product.feature_used:key_action"),),
)


@given(st.lists(st.integers(0, 60), max_size=40))
def test_runs_hold_exactly_the_days_merged(days: list[int]) -> None:
    runs: list[list[int]] = []
    for d in days:
        runs = add_day(runs, d)
    covered = {d for first, last in runs for d in range(first, last + 1)}
    assert covered == set(days)
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(runs))


activity = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 23), st.booleans(), st.booleans()), max_size=60
)


@settings(max_examples=150)
@given(activity, st.integers(0, 230), st.randoms(use_true_random=False))
def test_windows_streaks_and_order_independence(
    raw: list[tuple[int, int, bool, bool]], as_of_offset: int, rnd: random.Random
) -> None:
    events = [
        (key_action("a", at(d, h), key=k) if is_feature else login("a", at(d, h)))
        for d, h, is_feature, k in raw
    ]
    as_of = day_of(T0) + as_of_offset
    shuffled = events[:]
    rnd.shuffle(shuffled)
    states = []
    for order in (events, shuffled):
        s = AccountState()
        for e in order:
            s.apply(e, RFM)
        states.append(s)
    a, b = (s.features(as_of, RFM) for s in states)
    assert a == b  # folding is insensitive to order

    days = {day_of(e.time) for e in events}
    keys = [
        day_of(e.time) for e in events if e.type == "product.feature_used" and e.data.key_action
    ]  # type: ignore[union-attr]
    for n in (7, 30, 90):
        assert a[f"key_actions_{n}d"] == sum(1 for d in keys if d > as_of - n)
        assert a[f"active_days_{n}d"] == sum(1 for d in days if d > as_of - n)
    streak = 0
    if days and max(days) >= as_of - 1:
        while max(days) - streak in days:
            streak += 1
    assert a["active_day_streak"] == streak
    weeks = {week_of(d) for d in days}
    wstreak = 0
    if weeks and max(weeks) >= week_of(as_of) - 1:
        while max(weeks) - wstreak in weeks:
            wstreak += 1
    assert a["weekly_streak"] == wstreak
    last = max((e.time for e in events if e.type == "product.login"), default=None)
    assert a["days_since_last_login"] == (None if last is None else max(as_of - day_of(last), 0))


def test_latest_subscription_wins_by_event_time_not_arrival() -> None:
    s = AccountState()
    s.apply(subscribed("a", at(10), seats=50), RFM)
    s.apply(subscribed("a", at(5), seats=5), RFM)  # older, arrives late
    f = s.features(day_of(at(10)), RFM)
    assert f["seats_purchased"] == 50
    assert f["tenure_days"] == 5  # tenure starts at the first subscription seen
    assert f["membership"] == "new"
    assert s.features(day_of(at(40)), RFM)["membership"] == "active"


def test_monetary_measures_and_paid_months() -> None:
    s = AccountState()
    s.apply(subscribed("a", at(0), mrr=1000), RFM)
    for m in range(4):
        s.apply(paid("a", at(30 * m), 1000), RFM)
    f = s.features(day_of(at(100)), RFM)
    assert f["paid_months"] == 4 and f["arr"] == 12000
    for measure, expected in (("mrr", 1000), ("arr", 12000), ("paid_total", 4000)):
        cfg = RfmConfig(RFM.recency_events, RFM.frequency_events, monetary=measure)
        assert s.rfm_values(day_of(at(100)), cfg)[2] == expected


def test_pruning_never_changes_a_window() -> None:
    s = AccountState()
    for d in range(0, 300, 3):
        s.apply(key_action("a", at(d)), RFM)
    as_of = day_of(at(300))
    before = s.features(as_of, RFM)
    s.prune(as_of, RFM)
    assert s.features(as_of, RFM) == before
    assert min(s.key_actions) > as_of - RFM.horizon_days


def test_the_kind_table_covers_every_feature() -> None:
    names = set(AccountState().features(day_of(T0 + timedelta(days=1)), RFM))
    names |= {"r_score", "f_score", "m_score", "rfm_cell"}
    assert names == set(FEATURE_KINDS)


def any_event(kind: int, day: int, value: int) -> object:
    from tests.unit.segmenter_events import (
        cancel,
        onboarded,
        seats,
    )

    t = at(day, value % 24)
    return [
        login("a", t),
        key_action("a", t, key=value % 2 == 0),
        key_action("a", t, feature=f"f{value % 4}"),
        onboarded("a", t),
        seats("a", t, value % 40),
        subscribed("a", t, seats=1 + value % 60, mrr=100 * value),
        paid("a", t, 1 + value),
        cancel("a", t),
    ][kind]


events_st = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 90), st.integers(0, 500)), max_size=25
)


@settings(max_examples=300)
@given(
    events_st,
    st.tuples(st.integers(0, 7), st.integers(0, 95), st.integers(0, 500)),
    st.integers(0, 100),
)
def test_an_event_changes_only_the_features_declared_for_its_type(
    history: list[tuple[int, int, int]], last: tuple[int, int, int], as_of_day: int
) -> None:
    """Predicates are re-evaluated only when a feature they read can change: the
    declared table must cover every feature an event really changes."""
    from services.segmenter.domain.features import CHANGED_BY

    state = AccountState()
    for spec in history:
        state.apply(any_event(*spec), RFM)  # type: ignore[arg-type]
    as_of = day_of(T0) + as_of_day
    before = state.features(as_of, RFM)
    event = any_event(*last)
    state.apply(event, RFM)  # type: ignore[arg-type]
    after = state.features(as_of, RFM)
    moved = {k for k in before if before[k] != after[k]}
    assert moved <= CHANGED_BY[event.type], moved - CHANGED_BY[event.type]  # type: ignore[attr-defined]
