"""An offer's lifecycle as pure functions: the events of a decision, of a status
change (accepted, declined, expired, redeemed), and what time and redemptions do
to an account's offers. The service's handler and API, and the in-memory
simulation, all go through these."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from schemas.events import (
    CreditApplied,
    Event,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferHeldOut,
    OfferIssued,
    OfferIssuedData,
    OfferRedeemed,
    OfferStatusData,
)
from services.offers.domain.engine import Decision
from services.offers.domain.records import ALLOWED_FROM, AccountBook, StatusChange

SOURCE = "loyalty/offers"
_IDS = uuid.UUID("5d0f7f2e-8d0a-4b8e-9a3c-1e2f3a4b5c06")
STATUS_EVENTS: dict[str, type[Event]] = {
    "accepted": OfferAccepted,
    "declined": OfferDeclined,
    "expired": OfferExpired,
    "redeemed": OfferRedeemed,
}


def decision_event(
    tenant: str, account: str, t: datetime, user_id: str | None, d: Decision
) -> OfferIssued | OfferHeldOut:
    data = OfferIssuedData(
        offer_id=d.offer_id,
        rule=d.rule.name,
        reward=d.reward,
        user_id=user_id,
        expires_at=d.expires_at,
        reason=d.reason,
        explanation=d.explanation,
        holdout=d.holdout,
        account=d.account,
    )
    common: dict[str, Any] = {
        "source": SOURCE,
        "subject": account,
        "tenant": tenant,
        "time": t,
        "data": data,
    }
    if d.holdout:
        return OfferHeldOut(id=d.offer_id, type="offer.held_out", **common)
    return OfferIssued(id=d.offer_id, type="offer.issued", **common)


def status_event(
    tenant: str,
    account: str,
    offer_id: str,
    rule: str,
    status: str,
    at: datetime,
    actor: str | None = None,
    comment: str | None = None,
) -> Event:
    model = STATUS_EVENTS[status]
    return model(
        id=str(uuid.uuid5(_IDS, f"{offer_id}/{status}")),
        source=SOURCE,
        type=f"offer.{status}",
        subject=account,
        tenant=tenant,
        time=at,
        data=OfferStatusData(
            offer_id=offer_id,
            rule=rule,
            status=status,
            actor=actor,
            comment=comment,
        ),
    )


def expire(
    book: AccountBook, tenant: str, account: str, t: datetime
) -> tuple[list[StatusChange], list[Event]]:
    """Before anything happens at ``t``: the account's offers that expired by then
    (marked in ``book``), as status changes and ``offer.expired`` events."""
    changes = []
    events: list[Event] = []
    for i, p in enumerate(book.offers):
        if p.status == "issued" and p.expires_at <= t:
            book.offers[i] = replace(p, status="expired")
            changes.append(StatusChange(tenant, p.offer_id, "expired", p.expires_at))
            events.append(
                status_event(tenant, account, p.offer_id, p.rule, "expired", p.expires_at)
            )
    return changes, events


def redeem(
    book: AccountBook, tenant: str, event: CreditApplied
) -> tuple[list[StatusChange], list[Event]]:
    """A credit applied on an invoice redeems the offer it came from (the ledger
    names credits by their offer id): marked in ``book``, with ``offer.redeemed``."""
    for i, p in enumerate(book.offers):
        if p.offer_id == event.data.credit_id and p.status in ALLOWED_FROM["redeemed"]:
            book.offers[i] = replace(p, status="redeemed")
            return [StatusChange(tenant, p.offer_id, "redeemed", event.time)], [
                status_event(tenant, event.subject, p.offer_id, p.rule, "redeemed", event.time)
            ]
    return [], []
