"""Turns segment transitions (entered and exited), product, billing and support
events and insights' signals (``bundle.ready``) into offer decisions on
``offers.decisions``: issued, held out, expired, redeemed.

:func:`process` is the whole service logic over a storage protocol, so that the
runtime handler (Postgres) and the simulator (memory) run the same code; the
decisions are the engine's (``domain/engine.py``), an offer's lifecycle is
``domain/lifecycle.py``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from schemas.events import (
    ClockTick,
    ClockWatermark,
    CreditApplied,
    Event,
    SegmentEntered,
    SegmentExited,
)
from services.offers.adapters.db import PostgresOfferRepository
from services.offers.domain import engine, lifecycle
from services.offers.domain.engine import Moment
from services.offers.domain.program import OffersProgram, Rule
from services.offers.domain.records import (
    AccountBook,
    AccountKey,
    NewOffer,
    StatusChange,
    SuppressionRow,
)
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.ticks import complete_rounds, split_ticks


class OfferRepository(Protocol):
    """What :func:`process` needs from storage (Postgres, or memory)."""

    async def load(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountBook]: ...

    async def save(
        self,
        books: dict[AccountKey, AccountBook],
        offers: list[NewOffer],
        suppressions: list[SuppressionRow],
        changes: list[StatusChange],
    ) -> None: ...

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        """Moves each tenant's stream clock forward; returns the clocks."""
        ...

    async def expire_due(
        self, tenant: str, until: datetime
    ) -> list[tuple[str, str, str, datetime]]:
        """Marks the tenant's open offers that expired by ``until`` as expired;
        returns (offer id, account, rule, expires_at) of each."""
        ...


@dataclass
class Result:
    events: list[Event] = field(default_factory=list)
    suppressions: list[SuppressionRow] = field(default_factory=list)


def _cause(event: Event) -> str:
    if isinstance(event, SegmentEntered | SegmentExited):
        return event.data.cause or event.id
    return event.id


async def process(
    repo: OfferRepository,
    program: OffersProgram,
    batch: Sequence[Event],
    rounds: Mapping[str, datetime] | None = None,
) -> Result:
    """Applies a batch in order: one read of the accounts, one write back.

    A clock tick or watermark only moves its tenant's stream clock (offers expire
    by it). ``rounds`` (the runtime handler's) gives per tenant a round of ticks
    read on every input partition; given it, single ticks move nothing, so that
    a partition's backlog is not overtaken by another partition's tick."""
    result = Result()
    marks: dict[str, datetime] = dict(rounds or {})
    accounts: list[Event] = []
    for e in batch:
        if isinstance(e, ClockWatermark) or (isinstance(e, ClockTick) and rounds is None):
            marks[e.tenant] = max(marks.get(e.tenant, e.time), e.time)
        elif not isinstance(e, ClockTick):
            accounts.append(e)
    batch = accounts
    books = await repo.load((e.tenant, e.subject) for e in batch)
    new: list[NewOffer] = []
    changes: list[StatusChange] = []
    # transitions with one cause (one event, one stream day) are one moment
    for (tenant, account, cause), group in itertools.groupby(
        batch, key=lambda e: (e.tenant, e.subject, _cause(e))
    ):
        events = list(group)
        t = max(e.time for e in events)
        marks[tenant] = max(marks.get(tenant, t), t)
        book = books.setdefault((tenant, account), AccountBook())
        expired, events_ = lifecycle.expire(book, tenant, account, t)
        changes += expired
        result.events += events_
        fired: list[tuple[Rule, str]] = []
        user_id: str | None = None
        for event in events:
            user_id = user_id or getattr(event.data, "user_id", None)
            if isinstance(event, SegmentEntered | SegmentExited):
                book.env = engine.snapshot(event.data)
                entering = isinstance(event, SegmentEntered)
                by = program.by_segment if entering else program.by_segment_exit
                fired += [(r, r.trigger.describe()) for r in by.get(event.data.segment, ())]
            else:
                rules = program.by_event.get(event.type)
                if rules:  # the where-fields are compared in their JSON form
                    data = event.data.model_dump(mode="json")
                    fired += engine.counts_after(rules, book.counts, event.type, data)
                if isinstance(event, CreditApplied):
                    redeemed, events_ = lifecycle.redeem(book, tenant, event)
                    changes += redeemed
                    result.events += events_
        if not fired:
            continue
        moment = Moment(
            tenant=tenant,
            account=account,
            key=cause,
            time=t,
            user_id=user_id,
            fired=tuple(fired),
            env=book.env if book.env is not None else engine.UNKNOWN,
        )
        outcome = engine.decide(program, moment, book.offers)
        result.suppressions += [
            SuppressionRow(tenant, account, cause, t, s) for s in outcome.suppressions
        ]
        d = outcome.decision
        if d is None:
            continue
        event = lifecycle.decision_event(tenant, account, t, user_id, d)
        result.events.append(event)
        offer = NewOffer(tenant, account, d, event, cause)
        new.append(offer)
        book.offers.append(offer.past)
    await repo.save(books, new, result.suppressions, changes)
    for tenant, clock in (await repo.advance(marks)).items():
        for oid, account, rule_name, at in await repo.expire_due(tenant, clock):
            result.events.append(
                lifecycle.status_event(tenant, account, oid, rule_name, "expired", at)
            )
    return result


@dataclass
class OffersHandler:
    """The runtime handler: runs the batch through :func:`process` in Postgres; its
    clock ticks count towards rounds (``services/runtime/ticks.py``), and only a
    round read on every input partition moves a tenant's clock."""

    program: OffersProgram

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        _, clocks = split_ticks(batch)
        rounds = await complete_rounds(uow.conn, clocks)
        result = await process(
            PostgresOfferRepository(uow.conn), self.program, [i.event for i in batch], rounds
        )
        for event in result.events:
            uow.publish("offers.decisions", event)
