"""Turns segment transitions into offers published on ``offers.decisions``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from schemas.events import OfferIssued, OfferIssuedData, SegmentEntered
from services.offers import domain
from services.offers.adapters.db import AccountKey, PostgresOfferRepository
from services.runtime.worker import Inbound, UnitOfWork

SOURCE = "loyalty/offers"
_IDS = uuid.UUID("0b7e4a9c-5a43-4d8e-8a51-6b0b3c1f2d02")


async def apply_segment_changes(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    repo = PostgresOfferRepository(uow.conn)
    entered = [i.event for i in batch if isinstance(i.event, SegmentEntered)]
    if not entered:
        return
    open_rules = await repo.open_rules((e.tenant, e.subject) for e in entered)
    new_rows: list[tuple[str, AccountKey, domain.OfferDecision, str, datetime]] = []
    for event in entered:
        key = (event.tenant, event.subject)
        decision = domain.decide(event, frozenset(open_rules.get(key, set())))
        if decision is None:
            continue
        open_rules.setdefault(key, set()).add(decision.rule)
        offer_id = str(uuid.uuid5(_IDS, f"{event.tenant}/{event.id}/{decision.rule}"))
        new_rows.append((offer_id, key, decision, event.id, event.time))
        uow.publish(
            "offers.decisions",
            OfferIssued(
                id=offer_id,
                source=SOURCE,
                type="offer.issued",
                subject=event.subject,
                tenant=event.tenant,
                time=event.time,
                data=OfferIssuedData(
                    offer_id=offer_id,
                    rule=decision.rule,
                    reward=decision.reward,
                    user_id=decision.user_id,
                    reason=decision.reason,
                ),
            ),
        )
    await repo.add(new_rows)
