"""The facts insights keeps, and which event gives which.

Insights decides nothing: it keeps what the topics said, each fact under the id of
the event that said it, so that a redelivered event adds nothing. Every report is
computed from these facts at read time (``lift.py``, ``revenue.py``,
``growth.py``, ``bundles.py``), which makes the numbers independent of the order
in which partitions were read: a replay gives the same reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.events import (
    CreditExpired,
    CreditGranted,
    CreditPendingApproval,
    CreditRejected,
    Event,
    FeatureUsed,
    InvoicePaid,
    OfferHeldOut,
    OfferIssued,
    SegmentEntered,
    SegmentExited,
    SubscriptionUpdated,
)
from services.insights.domain.bundles import Adoption

CURRENT = frozenset({"active", "trialing", "past_due"})
"""Subscription statuses that count as retained: not canceled, not paused."""


@dataclass(frozen=True)
class SubscriptionFact:
    """An account's subscription as a ``billing.subscription_updated`` set it."""

    account: str
    at: datetime
    event_id: str
    plan: str
    interval: str
    seats: int
    mrr: int
    currency: str
    status: str

    @property
    def current(self) -> bool:
        return self.status in CURRENT


@dataclass(frozen=True)
class InvoiceFact:
    account: str
    at: datetime
    event_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class SegmentChange:
    account: str
    segment: str
    entered: bool
    at: datetime
    event_id: str


@dataclass(frozen=True)
class Exposure:
    """An ``offer.issued`` (treated) or ``offer.held_out`` (held out) at decision time."""

    offer_id: str
    account: str
    rule: str
    holdout: bool
    at: datetime
    segments: tuple[str, ...]
    reward_kind: str
    cost: int
    currency: str


@dataclass(frozen=True)
class CreditFact:
    """A ledger decision about an offer: granted, rejected, pending or expired."""

    offer_id: str
    event_id: str
    outcome: str
    at: datetime
    amount: int
    cost: int
    currency: str


Fact = SubscriptionFact | InvoiceFact | SegmentChange | Exposure | CreditFact | Adoption


def facts_of(event: Event) -> list[Fact]:
    """The facts one event gives (none for the types insights does not read)."""
    a, t, i = event.subject, event.time, event.id
    if isinstance(event, SubscriptionUpdated):
        d = event.data
        return [
            SubscriptionFact(
                a,
                t,
                i,
                d.plan,
                d.interval,
                d.seats_purchased,
                d.mrr.amount,
                d.mrr.currency,
                d.status,
            )
        ]
    if isinstance(event, InvoicePaid):
        return [InvoiceFact(a, t, i, event.data.amount.amount, event.data.amount.currency)]
    if isinstance(event, SegmentEntered | SegmentExited):
        entered = isinstance(event, SegmentEntered)
        return [SegmentChange(a, event.data.segment, entered, t, i)]
    if isinstance(event, OfferIssued | OfferHeldOut):
        o = event.data
        segments = tuple(o.account.segments) if o.account else ()
        return [
            Exposure(
                o.offer_id,
                a,
                o.rule,
                isinstance(event, OfferHeldOut) or o.holdout,
                t,
                segments,
                o.reward.kind,
                o.reward.cost.amount,
                o.reward.cost.currency,
            )
        ]
    if isinstance(event, CreditGranted | CreditRejected | CreditPendingApproval):
        c = event.data
        cost = c.cost.amount if c.cost else 0
        outcome = {
            "credit.granted": "granted",
            "credit.rejected": "rejected",
            "credit.pending_approval": "pending",
        }[event.type]
        return [CreditFact(c.offer_id, i, outcome, t, c.amount.amount, cost, c.amount.currency)]
    if isinstance(event, CreditExpired):
        c2 = event.data
        return [CreditFact(c2.offer_id, i, "expired", t, c2.amount.amount, 0, c2.amount.currency)]
    if isinstance(event, FeatureUsed):
        return [Adoption(a, event.data.feature, t)]
    return []
