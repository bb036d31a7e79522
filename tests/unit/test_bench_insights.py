"""``loyalty bench insights``: the pure parts (the run itself needs the embedded stack)."""

from __future__ import annotations

from datetime import UTC, datetime

from benchmarks.insights import logical_topic, percentile
from schemas import Money
from schemas.events import AccountContext, OfferHeldOut, OfferIssued, OfferIssuedData, Reward
from services.insights_report import simulated_credits as credits_for


def test_every_type_family_has_its_topic() -> None:
    assert logical_topic("product.feature_used") == "events.product"
    assert logical_topic("billing.invoice_paid") == "events.billing"
    assert logical_topic("support.ticket_opened") == "events.support"
    assert logical_topic("segment.entered") == "segments.changes"
    assert logical_topic("offer.held_out") == "offers.decisions"
    assert logical_topic("credit.granted") == "credits.decisions"


def test_percentile_is_the_nearest_rank() -> None:
    calls = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(calls, 0.5) == 3.0
    assert percentile(calls, 0.95) == 5.0
    assert percentile([7.0], 0.95) == 7.0


def _decision(kind: type[OfferIssued] | type[OfferHeldOut], oid: str) -> OfferIssued | OfferHeldOut:
    value = Money(amount=1000, currency="USD")
    return kind(
        id=oid,
        source="test",
        type="offer.issued" if kind is OfferIssued else "offer.held_out",
        subject="acct-1",
        tenant="bench",
        time=datetime(2026, 3, 1, tzinfo=UTC),
        data=OfferIssuedData(
            offer_id=oid,
            rule="r",
            reason="why",
            holdout=kind is OfferHeldOut,
            reward=Reward(kind="service_credit", value=value, cost=value),
            account=AccountContext(arr=Money(amount=10**6, currency="USD"), segments=[]),
        ),
    )


def test_a_credit_granted_per_issued_offer_only() -> None:
    credits = credits_for([_decision(OfferIssued, "o1"), _decision(OfferHeldOut, "o2")])
    assert [(c.type, c.data.offer_id, c.data.cost.amount) for c in credits] == [
        ("credit.granted", "o1", 1000)
    ]
