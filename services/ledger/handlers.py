"""Books issued offers and publishes credit decisions on ``credits.decisions``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from schemas.events import CreditGranted, CreditGrantedData, OfferIssued
from services.ledger import domain
from services.ledger.adapters.db import PostgresLedgerRepository
from services.runtime.worker import Inbound, UnitOfWork

SOURCE = "loyalty/ledger"
_IDS = uuid.UUID("a3d1c7e2-9b44-4f0e-b6c5-7e2d9f1a0c03")


async def apply_offer_decisions(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    repo = PostgresLedgerRepository(uow.conn)
    issued = [i.event for i in batch if isinstance(i.event, OfferIssued)]
    if not issued:
        return
    done = await repo.granted_offers(o.data.offer_id for o in issued)
    grants: list[tuple[domain.CreditGrant, str, datetime]] = []
    for offer in issued:
        if offer.data.offer_id in done:
            continue  # keyed by offer id: a second copy of an offer never books twice
        # one credit per offer, named by it: billing's credit_applied then names the
        # offer too, which is how the offers service learns it was redeemed
        credit_id = offer.data.offer_id
        grant = domain.grant_for(offer, credit_id)
        if grant is None:
            continue
        done.add(offer.data.offer_id)
        grants.append((grant, offer.subject, offer.time))
        uow.publish(
            "credits.decisions",
            CreditGranted(
                id=str(uuid.uuid5(_IDS, f"{offer.tenant}/{credit_id}")),
                source=SOURCE,
                type="credit.granted",
                subject=offer.subject,
                tenant=offer.tenant,
                time=offer.time,
                data=CreditGrantedData(
                    credit_id=credit_id,
                    offer_id=offer.data.offer_id,
                    amount=grant.amount,
                    expires_at=offer.data.expires_at,
                ),
            ),
        )
    await repo.book_grants(grants)
