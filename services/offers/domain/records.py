"""What the offers service keeps per account and writes per batch (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.events import OfferHeldOut, OfferIssued
from services.offers.domain.engine import Decision, PastOffer, Suppression

AccountKey = tuple[str, str]
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "accepted": ("issued",),
    "declined": ("issued",),
    "expired": ("issued",),
    "redeemed": ("issued", "accepted"),
}
"""Each later status, with the statuses an offer may reach it from."""


@dataclass
class AccountBook:
    """Per account: the facts of its last transition, how often each event rule
    matched, and every offer it was made (the contact policy is bounded, so few)."""

    env: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    offers: list[PastOffer] = field(default_factory=list)


@dataclass(frozen=True)
class NewOffer:
    tenant: str
    account: str
    decision: Decision
    event: OfferIssued | OfferHeldOut
    moment: str

    @property
    def past(self) -> PastOffer:
        d = self.decision
        status = "held_out" if d.holdout else "issued"
        return PastOffer(
            d.offer_id, d.rule.name, status, self.event.time, d.expires_at, self.moment
        )


@dataclass(frozen=True)
class SuppressionRow:
    tenant: str
    account: str
    moment: str
    at: datetime
    suppression: Suppression


@dataclass(frozen=True)
class StatusChange:
    tenant: str
    offer_id: str
    status: str
    at: datetime
    actor: str | None = None
    comment: str | None = None
