"""Drives the ledger's real handler and approval code against a real, migrated
Postgres without a broker: each call is one batch in one transaction, exactly as
the consumer worker runs it. Also builds the events the ledger reads."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import Event, Money
from schemas.events import (
    AccountContext,
    CreditApplied,
    CreditAppliedData,
    InvoicePaid,
    InvoicePaidData,
    OfferIssued,
    OfferIssuedData,
    Reward,
)
from services.ledger.app import spec
from services.ledger.domain.program import LedgerProgram
from services.ledger.handlers import LedgerHandler
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.codec import decode, encode
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate
from services.runtime.topics import TopicNames

NAMES = TopicNames("")


def usd(amount: int) -> Money:
    return Money(amount=amount, currency="USD")


def offer_issued(
    tenant: str,
    account: str,
    offer_id: str,
    at: datetime,
    *,
    kind: str = "service_credit",
    value: int | None = None,
    cost: int | None = None,
    arr: int | None = 10_000_000,
    segments: Sequence[str] = (),
    days: int | None = None,
) -> OfferIssued:
    credit = kind in ("service_credit", "renewal_credit")
    return OfferIssued(
        id=offer_id,
        source="test",
        type="offer.issued",
        subject=account,
        tenant=tenant,
        time=at,
        data=OfferIssuedData(
            offer_id=offer_id,
            rule=f"rule_{kind}",
            reason="test",
            reward=Reward(
                kind=kind,  # type: ignore[arg-type]
                value=usd(value) if credit and value is not None else None,
                cost=usd(cost if cost is not None else value or 0),
                days=days,
            ),
            account=AccountContext(
                arr=usd(arr) if arr is not None else None, segments=list(segments)
            ),
        ),
    )


def credit_applied(
    tenant: str, account: str, event_id: str, credit_id: str, amount: int, at: datetime
) -> CreditApplied:
    return CreditApplied(
        id=event_id,
        source="billing",
        type="billing.credit_applied",
        subject=account,
        tenant=tenant,
        time=at,
        data=CreditAppliedData(
            credit_id=credit_id, invoice_id=f"inv-{event_id}", amount=usd(amount)
        ),
    )


def tick(tenant: str, account: str, event_id: str, at: datetime) -> InvoicePaid:
    """Any event moves its partition's stream clock; an invoice will do."""
    return InvoicePaid(
        id=event_id,
        source="billing",
        type="billing.invoice_paid",
        subject=account,
        tenant=tenant,
        time=at,
        data=InvoicePaidData(invoice_id=event_id, amount=usd(100)),
    )


def topic_of(event: Event) -> str:
    family = event.type.split(".")[0]
    return {"offer": "offers.decisions", "segment": "segments.changes"}.get(
        family, f"events.{family}"
    )


async def ledger_engine(url: str) -> AsyncEngine:
    engine = create_engine(url, "ledger", pool_size=10)
    migrations = spec().migrations
    assert migrations is not None
    await migrate(engine, "ledger", {"runtime": RUNTIME_MIGRATIONS, "ledger": migrations})
    return engine


@dataclass
class Harness:
    engine: AsyncEngine
    program: LedgerProgram
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (event id, reason)
    _offsets: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def handler(self) -> LedgerHandler:
        return LedgerHandler(self.program)

    async def apply(
        self, events: Sequence[Event], partition: int | Sequence[int] = 0
    ) -> list[tuple[str, str]]:
        """One batch (from one partition, or each event from its own of
        ``partition``); returns what it dead-lettered, with the reasons."""
        items = []
        parts = [partition] * len(events) if isinstance(partition, int) else list(partition)
        for e, part in zip(events, parts, strict=True):
            m = encode(e)
            offset = next(self._offsets)
            record = ConsumerRecord(
                topic_of(e), part, offset, 0, 0, m.key, m.value, None, 0, 0, m.headers
            )
            items.append(Inbound(e, topic_of(e), part, offset, record))  # type: ignore[arg-type]
        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, NAMES, "ledger")
            await self.handler(uow, items)
            await uow.flush()
        out = [(i.event.id, why) for i, why in uow.rejected]
        self.rejected += out
        return out

    def runtime(self) -> Any:
        """What the approval endpoint needs of a runtime (no relay to wake here)."""
        return SimpleNamespace(
            engine=self.engine,
            names=NAMES,
            spec=SimpleNamespace(name="ledger"),
            relay=SimpleNamespace(wake=lambda: None),
        )

    async def published(self, tenant: str | None = None) -> list[Any]:
        """Every credit decision queued in the outbox, in order."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT value, headers FROM outbox WHERE topic = 'credits.decisions'"
                        " ORDER BY id"
                    )
                )
            ).all()
        out = []
        for value, headers in rows:
            hs = [
                (k, base64.b64decode(v))
                for k, v in (json.loads(headers) if isinstance(headers, str) else headers)
            ]
            event = decode(value, hs)
            if tenant is None or event.tenant == tenant:
                out.append(event)
        return out

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(text(sql), params)]
