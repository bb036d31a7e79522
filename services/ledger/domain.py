"""Double-entry bookkeeping of rewards (pure: no I/O, no clock).

Ledger accounts are named ``<kind>`` per tenant, with the customer account for
customer-level ones:

- ``customer_credit:<account>`` — credit the customer holds (a liability, credit-normal);
- ``reward_expense`` — what rewards cost the program (debit-normal).

Amounts are signed integer minor units: debit positive, credit negative. Every
transaction sums to zero per currency, or it cannot be built.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from schemas import Money
from schemas.events import OfferIssued

REWARD_EXPENSE = "reward_expense"


def customer_credit(account: str) -> str:
    return f"customer_credit:{account}"


class UnbalancedTransaction(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Entry:
    ledger_account: str
    amount: int  # debit > 0, credit < 0, minor units
    currency: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """An immutable, balanced set of entries."""

    txn_id: str
    tenant: str
    description: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise UnbalancedTransaction(f"{self.txn_id}: a transaction needs two entries")
        totals: dict[str, int] = defaultdict(int)
        for e in self.entries:
            if e.amount == 0:
                raise UnbalancedTransaction(f"{self.txn_id}: zero entry on {e.ledger_account}")
            totals[e.currency] += e.amount
        unbalanced = {c: t for c, t in totals.items() if t != 0}
        if unbalanced:
            raise UnbalancedTransaction(f"{self.txn_id}: does not balance: {unbalanced}")


@dataclass(frozen=True, slots=True)
class CreditGrant:
    credit_id: str
    offer_id: str
    amount: Money
    transaction: Transaction


def grant_for(offer: OfferIssued, credit_id: str) -> CreditGrant | None:
    """The credit an issued offer grants: its monetary value, booked as expense
    against the customer's credit balance. None for non-monetary rewards."""
    value = offer.data.reward.value
    if value is None or value.amount <= 0:
        return None
    txn = Transaction(
        txn_id=credit_id,
        tenant=offer.tenant,
        description=f"grant {offer.data.reward.kind} for offer {offer.data.offer_id}"
        f" ({offer.data.rule})",
        entries=(
            Entry(REWARD_EXPENSE, value.amount, value.currency),
            Entry(customer_credit(offer.subject), -value.amount, value.currency),
        ),
    )
    return CreditGrant(
        credit_id=credit_id, offer_id=offer.data.offer_id, amount=value, transaction=txn
    )
