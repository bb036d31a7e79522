"""The ledger's pure core: every transaction balances or cannot be built."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import Money
from schemas.events import OfferIssued, OfferIssuedData, Reward
from services.ledger.domain import Entry, Transaction, UnbalancedTransaction, grant_for


def offer(amount: int | None, currency: str = "USD") -> OfferIssued:
    value = Money(amount=amount, currency=currency) if amount is not None else None
    return OfferIssued(
        id="o-1",
        source="s",
        type="offer.issued",
        subject="acct-1",
        tenant="t",
        time=datetime(2026, 11, 1, tzinfo=UTC),
        data=OfferIssuedData(
            offer_id="o-1",
            rule="r",
            reason="why",
            reward=Reward(
                kind="service_credit",
                value=value,
                cost=Money(amount=amount or 0, currency=currency),
            ),
        ),
    )


@given(st.integers(1, 10**12), st.sampled_from(["USD", "EUR", "JPY"]))
def test_a_grant_balances_per_currency(amount: int, currency: str) -> None:
    grant = grant_for(offer(amount, currency), "c-1")
    assert grant is not None
    assert sum(e.amount for e in grant.transaction.entries) == 0
    assert {e.currency for e in grant.transaction.entries} == {currency}
    credit = [e for e in grant.transaction.entries if e.ledger_account.startswith("customer")]
    assert [e.amount for e in credit] == [-amount]  # the liability grows by the grant


def test_non_monetary_rewards_grant_no_credit() -> None:
    assert grant_for(offer(None), "c") is None


@given(st.lists(st.integers(-(10**9), 10**9).filter(bool), min_size=2, max_size=6))
def test_unbalanced_or_mixed_currency_transactions_are_refused(amounts: list[int]) -> None:
    entries = tuple(Entry(f"a{i}", a, "USD") for i, a in enumerate(amounts))
    if sum(amounts) != 0:
        with pytest.raises(UnbalancedTransaction):
            Transaction("x", "t", "d", entries)
    mixed = (Entry("a", 5, "USD"), Entry("b", -5, "EUR"))
    with pytest.raises(UnbalancedTransaction):
        Transaction("x", "t", "d", mixed)
