"""What insights needs from storage; Postgres (``adapters/postgres.py``) and
memory (``adapters/memory.py``) both pass ``tests/integration/test_insights_store.py``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.insights.domain.bundles import BundleCounts, SequenceStat
from services.insights.domain.facts import (
    CreditFact,
    Exposure,
    Fact,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.growth import DayCount


class InsightsStore(Protocol):
    async def add(self, tenant: str, facts: Sequence[Fact]) -> None:
        """Keeps the facts; one already kept (same event id) is not kept twice,
        and an adoption keeps its earliest time."""
        ...

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        """Moves each tenant's stream clock forward (never back); returns them."""
        ...

    async def clock(self, tenant: str) -> datetime | None: ...

    async def subscriptions(self, tenant: str) -> list[SubscriptionFact]: ...

    async def invoices(self, tenant: str) -> list[InvoiceFact]: ...

    async def segment_changes(
        self, tenant: str, segments: Sequence[str] | None = None
    ) -> list[SegmentChange]: ...

    async def segment_days(self, tenant: str) -> list[DayCount]: ...

    async def exposures(self, tenant: str) -> list[Exposure]: ...

    async def credits(self, tenant: str) -> list[CreditFact]: ...

    async def bundle_counts(self, tenant: str, window_days: int, now: datetime) -> BundleCounts: ...

    async def ready_accounts(
        self, tenant: str, seq: SequenceStat, now: datetime
    ) -> list[tuple[str, datetime]]: ...

    async def adoption_count(self, tenant: str) -> int: ...

    async def readiness_checked(self, tenant: str) -> tuple[datetime | None, int]:
        """The stream day readiness was last checked for, and how many adoptions
        the tenant had then."""
        ...

    async def mark_readiness(self, tenant: str, at: datetime, adoptions: int) -> None: ...

    async def claim_signals(
        self, tenant: str, signals: Sequence[tuple[str, str]], at: datetime
    ) -> set[tuple[str, str]]:
        """Records (account, sequence) pairs; returns those not recorded before."""
        ...
