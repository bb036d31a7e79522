"""The ledger's pure core: every transaction balances or cannot be built; caps
bind in a fixed order with their headroom; approvals ask by value, and above the
second threshold for two different approvers; redemptions spend the oldest expiry
first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import Money
from schemas.events import AccountContext, OfferIssued, OfferIssuedData, Reward
from services.common.program import ProgramError
from services.ledger.domain import books
from services.ledger.domain.books import Entry, OpenCredit, Transaction, UnbalancedTransaction
from services.ledger.domain.decide import (
    BudgetKey,
    GrantRequest,
    approvals_needed,
    decide,
    fmt,
    needs,
    rooms,
)
from services.ledger.domain.program import load_ledger_program
from services.ledger.domain.settle import Approval, approval_step, settle

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def usd(amount: int) -> Money:
    return Money(amount=amount, currency="USD")


def offer(
    amount: int | None,
    currency: str = "USD",
    kind: str = "service_credit",
    cost: int | None = None,
    arr: int | None = 1_000_000,
    segments: tuple[str, ...] = ("tier_gold",),
) -> OfferIssued:
    value = Money(amount=amount, currency=currency) if amount is not None else None
    return OfferIssued(
        id="o-1",
        source="s",
        type="offer.issued",
        subject="acct-1",
        tenant="t",
        time=T0,
        data=OfferIssuedData(
            offer_id="o-1",
            rule="r",
            reason="why",
            reward=Reward(
                kind=kind,  # type: ignore[arg-type]
                value=value,
                cost=Money(amount=cost if cost is not None else amount or 0, currency=currency),
            ),
            account=AccountContext(
                arr=Money(amount=arr, currency=currency) if arr is not None else None,
                segments=list(segments),
            ),
        ),
    )


PROGRAM = load_ledger_program(
    {
        "segments": {"tier_gold": {}, "tier_silver": {}},
        "ledger": {
            "caps": {
                "account": {"percent_of_arr": 5, "floor": usd(1000).model_dump()},
                "by_tier": {"tier_gold": usd(40_000).model_dump()},
                "program": usd(100_000).model_dump(),
                "by_reward": {"discount": usd(20_000).model_dump()},
                "liability": usd(30_000).model_dump(),
            },
            "approvals": {
                "above": usd(25_000).model_dump(),
                "account_over": usd(45_000).model_dump(),
                "second_approver_above": usd(28_000).model_dump(),
            },
        },
    }
)


def room(req: GrantRequest, **left: int) -> dict[BudgetKey, int]:
    """Headroom per budget: plenty unless named (program, tier, reward, liability)."""
    out = {}
    for n in needs(PROGRAM, req, T0):
        short = n.key.name.split(":")[0]
        out[n.key] = left.get(short, 10**9)
    return out


@given(st.integers(1, 10**12), st.sampled_from(["USD", "EUR", "JPY"]))
def test_a_grant_balances_per_currency(amount: int, currency: str) -> None:
    txn = books.grant("g", "t", "a", Money(amount=amount, currency=currency), usd(1), "x")
    assert txn is not None
    assert sum(e.amount for e in txn.entries) == 0
    assert {e.currency for e in txn.entries} == {currency}
    credit = [e for e in txn.entries if e.ledger_account.startswith("customer")]
    assert [e.amount for e in credit] == [-amount]  # the liability grows by the grant


def test_other_rewards_are_booked_at_cost_and_free_ones_not_at_all() -> None:
    txn = books.grant("g", "t", "a", None, usd(700), "training")
    assert txn is not None
    assert {e.ledger_account: e.amount for e in txn.entries} == {
        books.REWARD_EXPENSE: 700,
        books.IN_KIND: -700,
    }
    assert books.grant("g", "t", "a", None, usd(0), "beta") is None


@given(st.lists(st.integers(-(10**9), 10**9).filter(bool), min_size=2, max_size=6))
def test_unbalanced_or_mixed_currency_transactions_are_refused(amounts: list[int]) -> None:
    entries = tuple(Entry(f"a{i}", a, "USD") for i, a in enumerate(amounts))
    if sum(amounts) != 0:
        with pytest.raises(UnbalancedTransaction):
            Transaction("x", "t", "d", entries)
    mixed = (Entry("a", 5, "USD"), Entry("b", -5, "EUR"))
    with pytest.raises(UnbalancedTransaction):
        Transaction("x", "t", "d", mixed)


def test_an_approved_hold_releases_and_grants_in_one_transaction() -> None:
    grant = books.grant("g", "t", "a", usd(500), usd(500), "x")
    txn = books.release("r", "t", "a", usd(500), grant, "approved")
    assert txn is not None
    by_account: dict[str, int] = {}
    for e in txn.entries:
        by_account[e.ledger_account] = by_account.get(e.ledger_account, 0) + e.amount
    assert by_account == {
        books.pending_credit("a"): 500,
        books.APPROVALS_PENDING: -500,
        books.REWARD_EXPENSE: 500,
        books.customer_credit("a"): -500,
    }


def test_caps_bind_in_order_with_their_headroom() -> None:
    req = GrantRequest.of(offer(10_000))
    assert decide(PROGRAM, req, T0, 0, room(req)).outcome == "grant"
    # 5 % of 10,000.00 USD ARR = 500.00 USD a year; 450.00 already spent
    v = decide(PROGRAM, req, T0, 45_000, room(req))
    assert (v.outcome, v.cap, v.headroom) == ("reject", "account cap", usd(5_000))
    v = decide(PROGRAM, req, T0, 0, room(req, tier=9_999))
    assert (v.outcome, v.cap, v.headroom) == ("reject", "tier_gold cap", usd(9_999))
    assert "has 99.99 USD left; this needs 100.00 USD" in v.reason
    v = decide(PROGRAM, req, T0, 0, room(req, tier=9_999, program=0))
    assert v.cap == "tier_gold cap"  # the first in order is reported
    v = decide(PROGRAM, req, T0, 0, room(req, liability=50))
    assert (v.cap, v.headroom) == ("liability ceiling", usd(50))


def test_the_caps_headroom_an_approver_sees() -> None:
    req = GrantRequest.of(offer(10_000))
    used = {n.key: 35_000 for n in needs(PROGRAM, req, T0) if n.key.name.startswith("tier")}
    shown = [
        (r.cap, r.period, r.limit, r.used, r.left, r.needs, r.binds)
        for r in rooms(PROGRAM, req, T0, used, 45_000)
    ]
    assert shown == [
        ("account cap", "rolling", usd(50_000), 45_000, 5_000, 10_000, True),
        ("tier_gold cap", "2026-11", usd(40_000), 35_000, 5_000, 10_000, True),
        ("program cap", "2026-11", usd(100_000), 0, 100_000, 10_000, False),
        ("liability ceiling", "-", usd(30_000), 0, 30_000, 10_000, False),
    ]
    over = rooms(PROGRAM, req, T0, {n.key: 10**9 for n in needs(PROGRAM, req, T0)}, 0)
    assert [r.left for r in over[1:]] == [0, 0, 0]  # used past the cap: nothing left


@given(
    st.integers(0, 60_000),
    st.integers(0, 50_000),
    st.integers(0, 110_000),
    st.integers(0, 40_000),
    st.integers(1, 30_000),
)
def test_headroom_binds_exactly_where_a_decision_would_refuse(
    account: int, tier: int, program: int, liability: int, amount: int
) -> None:
    req = GrantRequest.of(offer(amount))
    by_name = {"tier": tier, "program": program, "liability": liability}
    used = {n.key: by_name[n.key.name.split(":")[0]] for n in needs(PROGRAM, req, T0)}
    shown = rooms(PROGRAM, req, T0, used, account)
    left = {n.key: r.left for n, r in zip(needs(PROGRAM, req, T0), shown[1:], strict=True)}
    verdict = decide(PROGRAM, req, T0, account, left, approved=True)
    binding = [r.cap for r in shown if r.binds]
    assert verdict.outcome == ("reject" if binding else "grant")
    assert verdict.cap == (binding[0] if binding else None)


def test_the_account_cap_uses_the_floor_without_arr_and_refuses_other_currencies() -> None:
    req = GrantRequest.of(offer(1_500, arr=None))
    v = decide(PROGRAM, req, T0, 0, room(req))
    assert (v.cap, v.headroom) == ("account cap", usd(1_000))
    eur = GrantRequest.of(offer(100, currency="EUR"))
    v = decide(PROGRAM, eur, T0, 0, {})
    assert v.outcome == "reject" and "in USD; a EUR grant" in v.reason


def test_approval_is_asked_above_a_value_or_an_account_total() -> None:
    big = GrantRequest.of(offer(26_000, arr=10_000_000))
    assert decide(PROGRAM, big, T0, 0, room(big)).outcome == "pending"
    assert decide(PROGRAM, big, T0, 0, room(big), approved=True).outcome == "grant"
    small = GrantRequest.of(offer(10_000, arr=10_000_000))
    v = decide(PROGRAM, small, T0, 40_000, room(small))
    assert v.outcome == "pending" and "500.00 USD in the window, over 450.00 USD" in v.reason


def test_above_the_second_threshold_a_hold_needs_two_different_approvers() -> None:
    big = GrantRequest.of(offer(28_001, arr=10_000_000))
    held = settle(PROGRAM, big, decide(PROGRAM, big, T0, 0, room(big)), T0, 0, offer(28_001))
    assert [d["approvals_needed"] for d in held.decisions] == [2]
    at_it = GrantRequest.of(offer(28_000, arr=10_000_000))  # not above: one approver
    assert decide(PROGRAM, at_it, T0, 0, room(at_it)).outcome == "pending"
    assert approvals_needed(PROGRAM, at_it) == 1
    assert approvals_needed(PROGRAM, GrantRequest.of(offer(90_000, currency="EUR"))) == 1
    one = load_ledger_program({"ledger": {"approvals": {"above": usd(1).model_dump()}}})
    assert approvals_needed(one, big) == 1  # unset: one approver, as before


def test_an_approval_step_counts_different_approvers_only() -> None:
    assert approval_step(1, [], "alice") == "decide"
    assert approval_step(2, [], "alice") == "recorded"
    assert approval_step(2, ["alice"], "alice") == "repeat"
    assert approval_step(2, ["alice"], "bob") == "decide"


def test_a_four_eyes_grant_books_both_approvers() -> None:
    o = offer(30_000, arr=10_000_000)
    req = GrantRequest.of(o)
    verdict = decide(PROGRAM, req, T0, 0, room(req), approved=True)
    done = settle(PROGRAM, req, verdict, T0, 0, o, Approval("bob@x", "ok", ("alice@x",)))
    ((txn, _),) = done.txns
    assert txn.description.endswith("by alice@x, then bob@x")
    assert done.event.data.actor == "bob@x"  # type: ignore[union-attr]
    assert [(a["action"], a["actor"], a["outcome"]) for a in done.audit] == [
        ("approve", "bob@x", "granted")
    ]


def test_needs_name_the_month_the_tier_and_the_liability() -> None:
    req = GrantRequest.of(offer(2_000, kind="discount"))
    assert [(n.key.name, n.key.period, n.amount) for n in needs(PROGRAM, req, T0)] == [
        ("reward:discount", "2026-11", 2_000),
        ("tier:tier_gold", "2026-11", 2_000),
        ("program", "2026-11", 2_000),
    ]  # a discount is not credit: no liability
    credit = GrantRequest.of(offer(2_000, cost=1_500, segments=()))
    assert [(n.key.name, n.amount) for n in needs(PROGRAM, credit, T0)] == [
        ("program", 1_500),
        ("liability", 2_000),
    ]


def test_redemptions_spend_the_oldest_expiry_first_and_never_too_much() -> None:
    credits = [
        OpenCredit("late", 500, T0 + timedelta(days=60)),
        OpenCredit("never", 500, None),
        OpenCredit("soon", 300, T0 + timedelta(days=10)),
        OpenCredit("gone", 900, T0 - timedelta(days=1)),
    ]
    assert books.allocate(credits, 700, T0) == [("soon", 300), ("late", 400)]
    assert books.allocate(credits, 1_300, T0) == [("soon", 300), ("late", 500), ("never", 500)]
    assert books.allocate(credits, 1_301, T0) is None  # "gone" expired: not spendable
    assert books.allocate(credits, 500, T0 + timedelta(days=30)) == [("late", 500)]


def test_bad_ledger_sections_are_refused_one_line_per_problem() -> None:
    with pytest.raises(ProgramError) as err:
        load_ledger_program(
            {
                "segments": {},
                "ledger": {
                    "credits_expire_in": "soon",
                    "caps": {
                        "by_tier": {"tier_x": usd(1).model_dump()},
                        "by_reward": {"gold_bars": usd(1).model_dump()},
                        "program": {"amount": -5, "currency": "USD"},
                    },
                    "approvals": {"second_approver_above": {"amount": -1, "currency": "USD"}},
                },
            }
        )
    problems = "\n".join(err.value.problems)
    assert "credits_expire_in" in problems
    assert "unknown segment 'tier_x'" in problems
    assert "unknown reward 'gold_bars'" in problems
    assert "caps.program: a negative amount (-5)" in problems
    assert "approvals.second_approver_above: a negative amount (-1)" in problems


def test_money_formats_for_people() -> None:
    assert fmt(usd(123_456)) == "1,234.56 USD"
    assert fmt(Money(amount=1500, currency="JPY")) == "1,500 JPY"
