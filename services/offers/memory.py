"""Offers storage in memory, with the same JSON round trip as Postgres: for the
simulator and for unit tests of :func:`services.offers.handlers.process`."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from services.offers.adapters.db import dump_env, final_statuses, load_env
from services.offers.domain.records import (
    ALLOWED_FROM,
    AccountBook,
    AccountKey,
    NewOffer,
    StatusChange,
    SuppressionRow,
)


@dataclass
class StoredOffer:
    tenant: str
    account: str
    offer: NewOffer
    status: str
    expires_at: datetime


class MemoryOfferRepository:
    def __init__(self) -> None:
        self.books: dict[AccountKey, tuple[str | None, str]] = {}
        self.offers: dict[str, StoredOffer] = {}
        self.suppressions: dict[tuple[str, str, str, str], SuppressionRow] = {}
        self.clocks: dict[str, datetime] = {}

    async def load(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountBook]:
        out: dict[AccountKey, AccountBook] = {}
        wanted = set(keys)
        for key in wanted:
            if key in self.books:
                env, counts = self.books[key]
                out[key] = AccountBook(env=load_env(env), counts=json.loads(counts))
        for o in sorted(self.offers.values(), key=lambda s: s.offer.event.time):
            key = (o.tenant, o.account)
            if key in wanted:
                out.setdefault(key, AccountBook()).offers.append(
                    replace(o.offer.past, status=o.status)
                )
        return out

    async def save(
        self,
        books: dict[AccountKey, AccountBook],
        offers: list[NewOffer],
        suppressions: list[SuppressionRow],
        changes: list[StatusChange],
    ) -> None:
        for key, book in books.items():
            self.books[key] = (dump_env(book.env), json.dumps(book.counts))
        status = final_statuses(books)
        for o in offers:
            self.offers.setdefault(
                o.decision.offer_id,
                StoredOffer(
                    o.tenant,
                    o.account,
                    copy.deepcopy(o),
                    status[o.decision.offer_id],
                    o.decision.expires_at,
                ),
            )
        for s in suppressions:
            self.suppressions.setdefault((s.tenant, s.account, s.moment, s.suppression.rule), s)
        for c in changes:
            stored = self.offers.get(c.offer_id)
            if stored is not None and stored.status in ALLOWED_FROM[c.status]:
                stored.status = c.status

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        for tenant, t in marks.items():
            self.clocks[tenant] = max(self.clocks.get(tenant, t), t)
        return {t: self.clocks[t] for t in marks}

    async def expire_due(
        self, tenant: str, until: datetime
    ) -> list[tuple[str, str, str, datetime]]:
        due = []
        for oid, o in self.offers.items():
            if o.tenant == tenant and o.status == "issued" and o.expires_at <= until:
                o.status = "expired"
                due.append((oid, o.account, o.offer.decision.rule.name, o.expires_at))
        return sorted(due)
