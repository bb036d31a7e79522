"""Double-entry bookkeeping of rewards (pure: no I/O, no clock).

Ledger accounts are per tenant; customer-level ones carry the account id:

- ``customer_credit:<account>`` — credit the customer holds: the liability
  (credit-normal, so its balance is minus the sum of its entries);
- ``pending_credit:<account>`` — credit waiting for an approver (credit-normal),
  against ``approvals_pending`` (debit-normal);
- ``reward_expense`` — what rewards cost the program (debit-normal): credits at
  their value, other rewards at their discount-equivalent cost;
- ``rewards_in_kind`` — the cost of rewards given as something other than credit
  (credit-normal);
- ``credits_redeemed`` — credit spent on invoices (credit-normal);
- ``breakage`` — credit that expired unspent (credit-normal).

Amounts are signed integer minor units: debit positive, credit negative. Every
transaction sums to zero per currency, or it cannot be built.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from schemas import Money

REWARD_EXPENSE = "reward_expense"
IN_KIND = "rewards_in_kind"
REDEEMED = "credits_redeemed"
BREAKAGE = "breakage"
APPROVALS_PENDING = "approvals_pending"


def customer_credit(account: str) -> str:
    return f"customer_credit:{account}"


def pending_credit(account: str) -> str:
    return f"pending_credit:{account}"


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


def _move(debit: str, credit: str, money: Money) -> tuple[Entry, Entry]:
    return (
        Entry(debit, money.amount, money.currency),
        Entry(credit, -money.amount, money.currency),
    )


def grant(
    txn_id: str, tenant: str, account: str, value: Money | None, cost: Money, what: str
) -> Transaction | None:
    """A grant: credit at its value into the customer's balance, or another reward
    at its cost into ``rewards_in_kind``. None when there is nothing to book (a
    reward that costs nothing)."""
    if value is not None and value.amount > 0:
        entries = _move(REWARD_EXPENSE, customer_credit(account), value)
    elif cost.amount > 0:
        entries = _move(REWARD_EXPENSE, IN_KIND, cost)
    else:
        return None
    return Transaction(txn_id, tenant, f"grant {what}", entries)


def hold(txn_id: str, tenant: str, account: str, amount: Money, what: str) -> Transaction | None:
    """Credit set aside until an approver decides."""
    if amount.amount <= 0:
        return None
    entries = _move(APPROVALS_PENDING, pending_credit(account), amount)
    return Transaction(txn_id, tenant, f"hold for approval {what}", entries)


def release(
    txn_id: str, tenant: str, account: str, amount: Money, then: Transaction | None, what: str
) -> Transaction | None:
    """Undoes a hold, together with the grant that follows it if approved."""
    entries: tuple[Entry, ...] = ()
    if amount.amount > 0:
        entries = _move(pending_credit(account), APPROVALS_PENDING, amount)
    if then is not None:
        entries += then.entries
    if not entries:
        return None
    return Transaction(txn_id, tenant, what, entries)


def redeem(txn_id: str, tenant: str, account: str, amount: Money, invoice: str) -> Transaction:
    return Transaction(
        txn_id,
        tenant,
        f"redeemed on invoice {invoice}",
        _move(customer_credit(account), REDEEMED, amount),
    )


def expire(txn_id: str, tenant: str, account: str, amount: Money, credit_id: str) -> Transaction:
    return Transaction(
        txn_id,
        tenant,
        f"credit {credit_id} expired unspent",
        _move(customer_credit(account), BREAKAGE, amount),
    )


@dataclass(frozen=True, slots=True)
class OpenCredit:
    credit_id: str
    remaining: int
    expires_at: datetime | None


def allocate(credits: list[OpenCredit], amount: int, at: datetime) -> list[tuple[str, int]] | None:
    """Which credits a redemption of ``amount`` at ``at`` spends: oldest expiry first
    (credits that never expire last), the last one partially. None if the credits
    still valid at ``at`` hold less than ``amount``."""
    usable = [c for c in credits if c.remaining > 0 and (c.expires_at is None or c.expires_at > at)]
    usable.sort(key=lambda c: (c.expires_at is None, c.expires_at or at, c.credit_id))
    out: list[tuple[str, int]] = []
    left = amount
    for c in usable:
        if left == 0:
            break
        take = min(c.remaining, left)
        out.append((c.credit_id, take))
        left -= take
    return out if left == 0 else None
