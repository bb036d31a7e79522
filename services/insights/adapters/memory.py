"""The insights facts in memory: for ``loyalty insights report --history`` and
the tests; the same contract as the Postgres store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from services.insights.domain import bundles
from services.insights.domain.bundles import Adoption, BundleCounts, SequenceStat
from services.insights.domain.facts import (
    CreditFact,
    Exposure,
    Fact,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.growth import DayCount, daily_counts

F = TypeVar("F")


@dataclass
class _Tenant:
    facts: dict[tuple[type, str], Fact] = field(default_factory=dict)
    adoptions: dict[tuple[str, str], Adoption] = field(default_factory=dict)
    clock: datetime | None = None
    ready_checked: datetime | None = None
    ready_adoptions: int = 0
    signals: set[tuple[str, str]] = field(default_factory=set)

    def of(self, kind: type[F]) -> list[F]:
        return [f for (k, _), f in self.facts.items() if isinstance(f, kind)]


def _key(f: Fact) -> str:
    return f.offer_id if isinstance(f, Exposure) else getattr(f, "event_id", "")


class MemoryInsightsStore:
    def __init__(self) -> None:
        self.tenants: dict[str, _Tenant] = defaultdict(_Tenant)

    async def add(self, tenant: str, facts: Sequence[Fact]) -> None:
        t = self.tenants[tenant]
        for f in facts:
            if isinstance(f, Adoption):
                k = (f.account, f.feature)
                if k not in t.adoptions or f.at < t.adoptions[k].at:
                    t.adoptions[k] = f
            else:
                t.facts.setdefault((type(f), _key(f)), f)

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for tenant, at in marks.items():
            t = self.tenants[tenant]
            t.clock = out[tenant] = at if t.clock is None else max(t.clock, at)
        return out

    async def clock(self, tenant: str) -> datetime | None:
        return self.tenants[tenant].clock if tenant in self.tenants else None

    async def subscriptions(self, tenant: str) -> list[SubscriptionFact]:
        rows = self.tenants[tenant].of(SubscriptionFact)
        return sorted(rows, key=lambda f: (f.account, f.at, f.event_id))

    async def invoices(self, tenant: str) -> list[InvoiceFact]:
        rows = self.tenants[tenant].of(InvoiceFact)
        return sorted(rows, key=lambda f: (f.at, f.event_id))

    async def segment_changes(
        self, tenant: str, segments: Sequence[str] | None = None
    ) -> list[SegmentChange]:
        rows = [
            f
            for f in self.tenants[tenant].of(SegmentChange)
            if segments is None or f.segment in segments
        ]
        return sorted(rows, key=lambda f: (f.account, f.at, f.event_id))

    async def segment_days(self, tenant: str) -> list[DayCount]:
        return daily_counts(await self.segment_changes(tenant))

    async def exposures(self, tenant: str) -> list[Exposure]:
        rows = self.tenants[tenant].of(Exposure)
        return sorted(rows, key=lambda f: (f.at, f.offer_id))

    async def credits(self, tenant: str) -> list[CreditFact]:
        rows = self.tenants[tenant].of(CreditFact)
        return sorted(rows, key=lambda f: (f.at, f.event_id))

    async def bundle_counts(self, tenant: str, window_days: int, now: datetime) -> BundleCounts:
        return bundles.count_bundles(self.tenants[tenant].adoptions.values(), window_days, now)

    async def ready_accounts(
        self, tenant: str, seq: SequenceStat, now: datetime
    ) -> list[tuple[str, datetime]]:
        return bundles.ready_accounts(self.tenants[tenant].adoptions.values(), seq, now)

    async def adoption_count(self, tenant: str) -> int:
        return len(self.tenants[tenant].adoptions)

    async def readiness_checked(self, tenant: str) -> tuple[datetime | None, int]:
        t = self.tenants[tenant]
        return t.ready_checked, t.ready_adoptions

    async def mark_readiness(self, tenant: str, at: datetime, adoptions: int) -> None:
        t = self.tenants[tenant]
        t.ready_checked, t.ready_adoptions = at, adoptions

    async def claim_signals(
        self, tenant: str, signals: Sequence[tuple[str, str]], at: datetime
    ) -> set[tuple[str, str]]:
        t = self.tenants[tenant]
        new = set(signals) - t.signals
        t.signals |= new
        return new
