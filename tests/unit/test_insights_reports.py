"""NRR, the up-sell rate and a rule's lift against hand-computed values on a small
fixture (services/insights/domain)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.insights.domain.facts import (
    CreditFact,
    Exposure,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.lift import lift_report, offer_costs
from services.insights.domain.program import load_insights_program
from services.insights.domain.revenue import band, member_value, nrr_report, upsell_report

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB1 = datetime(2026, 2, 1, tzinfo=UTC)
PROGRAM = load_insights_program({"insights": {"horizon": "60d", "min_exposures": 2}})


def sub(
    account: str,
    at: datetime,
    mrr: int,
    seats: int,
    status: str = "active",
    plan: str = "team",
    interval: str = "month",
) -> SubscriptionFact:
    return SubscriptionFact(
        account, at, f"s-{account}-{at:%m%d}", plan, interval, seats, mrr, "USD", status
    )


SUBS = [
    sub("a1", JAN1, 10_000, 10),
    sub("a1", datetime(2026, 2, 10, tzinfo=UTC), 15_000, 15),  # expansion, an up-sell (seats)
    sub("a2", JAN1, 20_000, 20),
    sub("a2", datetime(2026, 2, 20, tzinfo=UTC), 20_000, 20, status="canceled"),  # churn
    sub("a3", JAN1, 5_000, 5),
    sub("a3", datetime(2026, 2, 5, tzinfo=UTC), 3_000, 3),  # contraction
    sub("a4", datetime(2026, 2, 15, tzinfo=UTC), 8_000, 8),  # new in February
    sub("a6", JAN1, 7_000, 7),
    sub("a7", JAN1, 4_000, 4),  # never a member
]
CHANGES = [
    SegmentChange(a, "member_active", True, JAN1, f"c-{a}") for a in ("a1", "a2", "a3", "a6")
] + [SegmentChange("a4", "member_new", True, datetime(2026, 2, 15, tzinfo=UTC), "c-a4")]
INVOICES = [
    InvoiceFact("a1", JAN1 + timedelta(hours=12), "i1", 10_000, "USD"),
    InvoiceFact("a2", JAN1 + timedelta(hours=12), "i2", 20_000, "USD"),
    InvoiceFact("a3", FEB1 + timedelta(hours=12), "i3", 5_000, "USD"),
    InvoiceFact("a4", datetime(2026, 2, 15, 12, tzinfo=UTC), "i4", 8_000, "USD"),
    InvoiceFact("a7", FEB1 + timedelta(hours=12), "i7", 4_000, "USD"),  # a non-member's
]
NOW = datetime(2026, 4, 1, tzinfo=UTC)


def test_nrr_per_month_by_hand() -> None:
    r = nrr_report(SUBS, CHANGES, [], NOW, PROGRAM)
    months = {f"{p.start:%Y-%m}": p for p in r.months}
    assert list(months) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert months["2026-01"].groups["all"].nrr == 1.0
    feb = months["2026-02"].groups
    # a1 10k -> 15k, a2 20k -> churned, a3 5k -> 3k, a6 7k, a7 4k; a4 joined in Feb
    assert (feb["all"].start_mrr, feb["all"].expansion) == (46_000, 5_000)
    assert (feb["all"].contraction, feb["all"].churn, feb["all"].churned_accounts) == (
        2_000,
        20_000,
        1,
    )
    assert feb["all"].nrr == pytest.approx((46_000 + 5_000 - 2_000 - 20_000) / 46_000)
    assert feb["members"].start_mrr == 42_000 and feb["non_members"].start_mrr == 4_000
    assert feb["non_members"].nrr == 1.0
    assert feb["members"].nrr == pytest.approx(25_000 / 42_000)
    # March: a4 (8k) joined the base; nothing moved
    assert months["2026-03"].groups["all"].start_mrr == 15_000 + 3_000 + 8_000 + 7_000 + 4_000
    assert months["2026-03"].groups["all"].nrr == 1.0
    assert not months["2026-04"].complete and months["2026-03"].complete


def test_nrr_splits_treated_and_held_out_by_exposure_before_the_period_end() -> None:
    exposures = [
        Exposure("o1", "a1", "r", False, JAN1 + timedelta(days=4), (), "training", 0, "USD"),
        Exposure("o2", "a2", "r", True, JAN1 + timedelta(days=4), (), "training", 0, "USD"),
        Exposure("o3", "a3", "r", False, datetime(2026, 3, 5, tzinfo=UTC), (), "x", 0, "USD"),
    ]
    feb = next(
        p for p in nrr_report(SUBS, CHANGES, exposures, NOW, PROGRAM).months if p.start == FEB1
    ).groups
    assert feb["treated"].start_mrr == 10_000 and feb["treated"].nrr == 1.5
    assert feb["held_out"].start_mrr == 20_000 and feb["held_out"].nrr == 0.0
    assert feb["not_exposed"].start_mrr == 5_000 + 7_000 + 4_000  # a3's offer came in March


def test_upsell_rate_by_hand() -> None:
    r = upsell_report(SUBS, INVOICES, CHANGES, PROGRAM)
    # members' transactions: 4 invoices (a1, a2, a3, a4) + 3 changes (a1 up, a2 cancel, a3 down)
    assert (r.overall.transactions, r.overall.upsells) == (7, 1)
    assert r.overall.rate == pytest.approx(100 / 7)
    assert band(r.overall.rate, PROGRAM) == "weak"
    assert (r.by_month["2026-01"].transactions, r.by_month["2026-01"].upsells) == (2, 0)
    assert (r.by_month["2026-02"].transactions, r.by_month["2026-02"].upsells) == (5, 1)
    assert band(r.by_month["2026-02"].rate, PROGRAM) == "healthy"
    assert (r.non_members.transactions, r.non_members.upsells) == (1, 0)
    assert r.by_segment["member_new"].transactions == 1  # a4's invoice
    assert band(30.0, PROGRAM) == "exceptional" and band(None, PROGRAM) is None


def test_upsell_kinds_come_from_the_program() -> None:
    seats_only = load_insights_program({"insights": {"upsell": ["plan"]}})
    assert upsell_report(SUBS, INVOICES, CHANGES, seats_only).overall.upsells == 0
    annual = [*SUBS, sub("a6", FEB1 + timedelta(days=3), 7_500, 7, interval="year")]
    plan_only = load_insights_program({"insights": {"upsell": ["annual"]}})
    assert upsell_report(annual, [], CHANGES, plan_only).overall.upsells == 1


def test_member_value_per_month() -> None:
    feb = {v.month: v for v in member_value(SUBS, INVOICES, CHANGES, NOW, PROGRAM)}["2026-02"]
    assert (feb.members, feb.non_members) == (5, 1)  # a2 is still in member_active; a7 is not
    assert feb.paid_members == 13_000 and feb.paid_non_members == 4_000
    assert feb.mrr_non_members == 4_000


def test_lift_by_hand() -> None:
    t0 = JAN1 + timedelta(days=4)
    exposures = [
        Exposure("o1", "a1", "r", False, t0, ("member_active",), "service_credit", 1000, "USD"),
        Exposure("o3", "a3", "r", False, t0, ("member_active",), "service_credit", 500, "USD"),
        Exposure("o2", "a2", "r", True, t0, ("member_active",), "service_credit", 900, "USD"),
        Exposure("o6", "a6", "r", True, t0, (), "service_credit", 700, "USD"),
        Exposure("o9", "a7", "r", False, NOW - timedelta(days=3), (), "service_credit", 0, "USD"),
    ]
    credits = [
        CreditFact("o1", "g1", "granted", t0, 1000, 1000, "USD"),
        CreditFact("o1", "e1", "expired", t0 + timedelta(days=30), 400, 0, "USD"),
        CreditFact("o3", "r3", "rejected", t0, 500, 500, "USD"),
    ]
    [r] = lift_report(exposures, SUBS, credits, NOW, PROGRAM)
    assert (r.treated, r.held_out, r.maturing_treated, r.maturing_held_out) == (2, 2, 1, 0)
    assert r.enough_data
    out = {o.outcome: o for o in r.outcomes}
    # at t0 + 60d: a1 15k, a3 3k retained; a2 canceled, a6 unchanged
    assert (out["retained"].treated, out["retained"].held_out) == (1.0, 0.5)
    assert (out["mrr_change"].treated, out["mrr_change"].held_out) == (1_500, -10_000)
    assert out["seats_added"].treated == 1.5
    assert out["retained"].raw is not None and out["retained"].raw.method == "newcombe-wilson"
    assert out["mrr_change"].raw is not None and out["mrr_change"].raw.diff == 11_500
    assert r.cost is not None and (r.cost.granted, r.cost.breakage, r.cost.booked) == (
        1000,
        400,
        600,
    )
    assert r.net_value is not None and r.net_value.estimate == 11_500 * 2 - 600
    assert r.net_value.low == pytest.approx(out["mrr_change"].raw.low * 2 - 600)
    [seg] = r.by_segment
    assert (seg.segment, seg.treated, seg.held_out, seg.enough_data) == (
        "member_active",
        2,
        1,
        False,
    )


def test_not_enough_data_below_the_minimum() -> None:
    strict = replace(PROGRAM, min_exposures=3)
    exposures = [
        Exposure(f"o{i}", a, "r", i % 2 == 0, JAN1, (), "training", 0, "USD")
        for i, a in enumerate(["a1", "a2", "a3", "a6"])
    ]
    [r] = lift_report(exposures, SUBS, [], NOW, strict)
    assert not r.enough_data and r.net_value is None
    assert {o.outcome: o for o in r.outcomes}["retained"].mde > 0.5  # two per group: blind


def test_pending_credits_are_beside_the_cost() -> None:
    costs = offer_costs(
        [
            CreditFact("o1", "p1", "pending", JAN1, 5000, 5000, "USD"),
            CreditFact("o2", "p2", "pending", JAN1, 700, 700, "USD"),
            CreditFact("o2", "g2", "granted", FEB1, 700, 700, "USD"),
        ]
    )
    assert (costs["o1"].booked, costs["o1"].pending, costs["o1"].pending_offers) == (0, 5000, 1)
    assert (costs["o2"].booked, costs["o2"].pending) == (700, 0)


def test_a_renewal_restating_the_subscription_is_no_transaction() -> None:
    renewed = [*SUBS, replace(SUBS[-1], at=FEB1 + timedelta(days=2), event_id="renewal")]
    assert upsell_report(renewed, [], CHANGES, PROGRAM).non_members.transactions == 0
    moved = [*SUBS, replace(SUBS[-1], at=FEB1, event_id="annual", interval="year")]
    r = upsell_report(moved, [], CHANGES, PROGRAM)  # same MRR, a year committed
    assert (r.non_members.transactions, r.non_members.upsells) == (1, 1)
    cheaper = [*SUBS, replace(SUBS[-1], at=FEB1, event_id="annual", interval="year", mrr=3_000)]
    assert upsell_report(cheaper, [], CHANGES, PROGRAM).non_members.upsells == 0


def test_a_canceled_account_keeps_no_seats() -> None:
    t0 = JAN1 + timedelta(days=4)
    exposures = [Exposure("o2", "a2", "r", True, t0, (), "training", 0, "USD")]
    [r] = lift_report(exposures, SUBS, [], NOW, PROGRAM)
    seats = next(o for o in r.outcomes if o.outcome == "seats_added")
    assert seats.held_out == -20  # a2 canceled with its 20 seats
