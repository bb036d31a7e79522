"""Applies a batch of product/billing events to account state and publishes
segment transitions to ``segments.changes``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from schemas.events import SegmentChangedData, SegmentEntered, SegmentExited
from services.runtime.worker import Inbound, UnitOfWork
from services.segmenter import domain
from services.segmenter.adapters.db import PostgresAccountRepository

SOURCE = "loyalty/segmenter"
_IDS = uuid.UUID("6f1c2b1e-3f7a-4a55-9d9e-2f1f5e0c7a01")


def transition_event(t: domain.SegmentTransition) -> SegmentEntered | SegmentExited:
    """The transition as an event; its id derives from the cause, so a replay is a no-op."""
    cause = t.cause
    data = SegmentChangedData(
        segment=t.segment, features=t.features, user_id=getattr(cause.data, "user_id", None)
    )
    event_id = str(uuid.uuid5(_IDS, f"{cause.tenant}/{cause.id}/{t.kind}/{t.segment}"))
    common = {
        "id": event_id,
        "source": SOURCE,
        "subject": cause.subject,
        "tenant": cause.tenant,
        "time": cause.time,
        "data": data,
    }
    if t.kind == "entered":
        return SegmentEntered(type="segment.entered", **common)
    return SegmentExited(type="segment.exited", **common)


async def apply_account_events(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    repo = PostgresAccountRepository(uow.conn)
    states = await repo.load((i.event.tenant, i.event.subject) for i in batch)
    touched = {}
    for item in batch:
        key = (item.event.tenant, item.event.subject)
        state, transitions = domain.apply(states.get(key, domain.AccountState()), item.event)
        states[key] = touched[key] = state
        for t in transitions:
            uow.publish("segments.changes", transition_event(t))
    await repo.save(touched)
