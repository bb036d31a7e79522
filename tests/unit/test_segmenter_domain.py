"""The segmenter's pure core: features, membership, and one transition per change."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas import Money
from schemas.events import (
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.segmenter.domain import EXPANSION_READY, AccountState, apply

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def sub(seats: int, mrr: int = 50000) -> SubscriptionUpdated:
    return SubscriptionUpdated(
        id=f"s{seats}",
        source="b",
        type="billing.subscription_updated",
        subject="a",
        tenant="t",
        time=T0,
        data=SubscriptionUpdatedData(
            plan="p",
            interval="month",
            seats_purchased=seats,
            mrr=Money(amount=mrr, currency="USD"),
            renewal_date=date(2027, 1, 1),
            status="active",
        ),
    )


def used(n: int) -> SeatsChanged:
    return SeatsChanged(
        id=f"u{n}",
        source="p",
        type="product.seats_changed",
        subject="a",
        tenant="t",
        time=T0,
        data=SeatsChangedData(seats_used=n),
    )


def test_nine_of_ten_seats_enters_expansion_ready_once() -> None:
    state, t1 = apply(AccountState(), sub(10))
    state, t2 = apply(state, used(9))
    state, t3 = apply(state, used(10))
    assert t1 == [] and t3 == []
    assert [(t.kind, t.segment) for t in t2] == [("entered", EXPANSION_READY)]
    assert t2[0].features.mrr == Money(amount=50000, currency="USD")
    assert t2[0].features.seats_used == 9


def test_buying_seats_exits_the_segment() -> None:
    state, _ = apply(AccountState(), sub(10))
    state, _ = apply(state, used(9))
    state, t = apply(state, sub(20))
    assert [(x.kind, x.segment) for x in t] == [("exited", EXPANSION_READY)]
    assert state.segments == frozenset()


def test_eighty_nine_percent_is_not_enough() -> None:
    state, _ = apply(AccountState(), sub(100))
    _, t = apply(state, used(89))
    assert t == []


events = st.one_of(st.integers(0, 300).map(sub), st.integers(0, 300).map(used))


@given(st.lists(events, max_size=60))
def test_transitions_alternate_and_match_membership(history: list[object]) -> None:
    state = AccountState()
    kinds: list[str] = []
    for event in history:
        before = EXPANSION_READY in state.segments
        state, transitions = apply(state, event)  # type: ignore[arg-type]
        after = EXPANSION_READY in state.segments
        assert len(transitions) == (1 if before != after else 0)
        kinds += [t.kind for t in transitions]
        expected = state.seats_purchased > 0 and state.seats_used * 10 >= state.seats_purchased * 9
        assert after == expected
    # entered, exited, entered, ... never twice the same in a row
    assert all(a != b for a, b in itertools.pairwise(kinds))
    assert not kinds or kinds[0] == "entered"
