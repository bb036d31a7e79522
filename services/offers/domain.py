"""Offer decisions (pure: no I/O, no clock, no randomness).

First version: one rule. Entering ``expansion_ready`` earns a service credit of
10 % of MRR, unless the account already holds an open offer of that rule.
Amounts are floored to whole minor units (never round money up in the customer's
favour by accident: the cap math later relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Money
from schemas.events import Reward, SegmentEntered

SEAT_EXPANSION_RULE = "seat_expansion_credit"
SEAT_EXPANSION_PERCENT = 10


@dataclass(frozen=True, slots=True)
class OfferDecision:
    rule: str
    reward: Reward
    user_id: str | None
    reason: str


def percent_of(money: Money, percent: int) -> Money:
    return Money(amount=money.amount * percent // 100, currency=money.currency)


def decide(event: SegmentEntered, open_rules: frozenset[str]) -> OfferDecision | None:
    """The offer ``event`` earns, given the rules the account has open offers of."""
    data = event.data
    if data.segment != "expansion_ready" or SEAT_EXPANSION_RULE in open_rules:
        return None
    mrr = data.features.mrr
    if mrr is None or mrr.amount <= 0:
        return None
    value = percent_of(mrr, SEAT_EXPANSION_PERCENT)
    if value.amount <= 0:
        return None
    f = data.features
    return OfferDecision(
        rule=SEAT_EXPANSION_RULE,
        reward=Reward(kind="service_credit", value=value, cost=value),
        user_id=data.user_id,
        reason=(
            f"entered expansion_ready at seat use {f.seats_used}/{f.seats_purchased}:"
            f" service credit of {SEAT_EXPANSION_PERCENT}% of MRR"
        ),
    )
