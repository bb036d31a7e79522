"""The offers service's pure core."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas import Money
from schemas.events import AccountFeatures, SegmentChangedData, SegmentEntered
from services.offers.domain import SEAT_EXPANSION_RULE, decide, percent_of


def entered(segment: str = "expansion_ready", mrr: int | None = 50000) -> SegmentEntered:
    return SegmentEntered(
        id="x",
        source="s",
        type="segment.entered",
        subject="a",
        tenant="t",
        time=datetime(2026, 11, 1, tzinfo=UTC),
        data=SegmentChangedData(
            segment=segment,
            user_id="u-7",
            features=AccountFeatures(
                seats_purchased=10,
                seats_used=9,
                mrr=Money(amount=mrr, currency="USD") if mrr is not None else None,
            ),
        ),
    )


def test_expansion_ready_earns_ten_percent_of_mrr_for_the_user_who_drove_it() -> None:
    d = decide(entered(), frozenset())
    assert d is not None
    assert d.reward.value == Money(amount=5000, currency="USD") == d.reward.cost
    assert d.reward.kind == "service_credit" and d.user_id == "u-7"


def test_no_second_open_offer_of_the_same_rule() -> None:
    assert decide(entered(), frozenset({SEAT_EXPANSION_RULE})) is None


def test_other_segments_and_free_accounts_earn_nothing() -> None:
    assert decide(entered("at_risk"), frozenset()) is None
    assert decide(entered(mrr=None), frozenset()) is None
    assert decide(entered(mrr=9), frozenset()) is None  # 10 % of 9 cents floors to 0


@given(st.integers(0, 10**12), st.integers(0, 100))
def test_percent_floors_to_whole_minor_units(amount: int, pct: int) -> None:
    value = percent_of(Money(amount=amount, currency="EUR"), pct).amount
    assert value * 100 <= amount * pct < (value + 1) * 100
