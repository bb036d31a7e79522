"""The insights facts in Postgres (schema ``insights``): appended with
``ON CONFLICT DO NOTHING`` under the event's id, so that a redelivery adds
nothing; bundle counts are aggregated inside Postgres (``bundles_sql.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.insights.adapters import bundles_sql
from services.insights.domain.bundles import Adoption, BundleCounts, SequenceStat
from services.insights.domain.facts import (
    CreditFact,
    Exposure,
    Fact,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.growth import DayCount

_INSERTS: dict[type, str] = {
    SubscriptionFact: (
        "INSERT INTO subscriptions (tenant, event_id, account, at, plan, interval, seats, mrr,"
        " currency, status) VALUES (:tenant, :event_id, :account, :at, :plan, :interval,"
        " :seats, :mrr, :currency, :status) ON CONFLICT DO NOTHING"
    ),
    InvoiceFact: (
        "INSERT INTO invoices (tenant, event_id, account, at, amount, currency)"
        " VALUES (:tenant, :event_id, :account, :at, :amount, :currency) ON CONFLICT DO NOTHING"
    ),
    SegmentChange: (
        "INSERT INTO segment_changes (tenant, event_id, account, segment, entered, at)"
        " VALUES (:tenant, :event_id, :account, :segment, :entered, :at) ON CONFLICT DO NOTHING"
    ),
    Exposure: (
        "INSERT INTO exposures (tenant, offer_id, account, rule, holdout, at, segments,"
        " reward_kind, cost, currency) VALUES (:tenant, :offer_id, :account, :rule, :holdout,"
        " :at, :segments, :reward_kind, :cost, :currency) ON CONFLICT DO NOTHING"
    ),
    CreditFact: (
        "INSERT INTO credit_decisions (tenant, event_id, offer_id, outcome, at, amount, cost,"
        " currency) VALUES (:tenant, :event_id, :offer_id, :outcome, :at, :amount, :cost,"
        " :currency) ON CONFLICT DO NOTHING"
    ),
    Adoption: (
        "INSERT INTO adoptions (tenant, account, feature, adopted_at)"
        " VALUES (:tenant, :account, :feature, :at) ON CONFLICT (tenant, account, feature)"
        " DO UPDATE SET adopted_at = LEAST(adoptions.adopted_at, EXCLUDED.adopted_at)"
        " WHERE EXCLUDED.adopted_at < adoptions.adopted_at"
    ),
}


def _row(tenant: str, fact: Fact) -> dict[str, Any]:
    row = dict(fact.__dict__)
    if isinstance(fact, Exposure):
        row["segments"] = list(fact.segments)
    row["tenant"] = tenant
    return row


class PostgresInsightsStore:
    """:class:`~services.insights.ports.InsightsStore` on one connection (the
    batch's transaction, or a read-only one for the API)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, tenant: str, facts: Sequence[Fact]) -> None:
        rows: dict[type, list[dict[str, Any]]] = {}
        for f in facts:
            rows.setdefault(type(f), []).append(_row(tenant, f))
        for kind, batch in rows.items():
            if kind is Adoption:  # the earliest per key first, so one statement suffices
                best: dict[tuple[str, str], dict[str, Any]] = {}
                for r in batch:
                    k = (r["account"], r["feature"])
                    if k not in best or r["at"] < best[k]["at"]:
                        best[k] = r
                batch = [best[k] for k in sorted(best)]
            await self.conn.execute(text(_INSERTS[kind]), batch)

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for tenant in sorted(marks):
            row = await self.conn.execute(
                text(
                    "INSERT INTO clocks (tenant, stream_time) VALUES (:t, :at)"
                    " ON CONFLICT (tenant) DO UPDATE SET"
                    " stream_time = GREATEST(clocks.stream_time, EXCLUDED.stream_time)"
                    " RETURNING stream_time"
                ),
                {"t": tenant, "at": marks[tenant]},
            )
            out[tenant] = row.scalar_one()
        return out

    async def clock(self, tenant: str) -> datetime | None:
        return (
            await self.conn.execute(
                text("SELECT stream_time FROM clocks WHERE tenant = :t"), {"t": tenant}
            )
        ).scalar_one_or_none()

    async def _select(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return list((await self.conn.execute(text(sql), params)).all())

    async def subscriptions(self, tenant: str) -> list[SubscriptionFact]:
        rows = await self._select(
            "SELECT account, at, event_id, plan, interval, seats, mrr, currency, status"
            " FROM subscriptions WHERE tenant = :t ORDER BY account, at, event_id",
            {"t": tenant},
        )
        return [SubscriptionFact(*r) for r in rows]

    async def invoices(self, tenant: str) -> list[InvoiceFact]:
        rows = await self._select(
            "SELECT account, at, event_id, amount, currency FROM invoices WHERE tenant = :t"
            " ORDER BY at, event_id",
            {"t": tenant},
        )
        return [InvoiceFact(*r) for r in rows]

    async def segment_changes(
        self, tenant: str, segments: Sequence[str] | None = None
    ) -> list[SegmentChange]:
        where = "" if segments is None else " AND segment = ANY(:s)"
        rows = await self._select(
            "SELECT account, segment, entered, at, event_id FROM segment_changes"
            f" WHERE tenant = :t{where} ORDER BY account, at, event_id",
            {"t": tenant, "s": list(segments or [])},
        )
        return [SegmentChange(*r) for r in rows]

    async def segment_days(self, tenant: str) -> list[DayCount]:
        rows = await self._select(
            "SELECT segment, (at AT TIME ZONE 'UTC')::date AS day,"
            " count(*) FILTER (WHERE entered), count(*) FILTER (WHERE NOT entered)"
            " FROM segment_changes WHERE tenant = :t GROUP BY 1, 2 ORDER BY 1, 2",
            {"t": tenant},
        )
        return [DayCount(*r) for r in rows]

    async def exposures(self, tenant: str) -> list[Exposure]:
        rows = await self._select(
            "SELECT offer_id, account, rule, holdout, at, segments, reward_kind, cost, currency"
            " FROM exposures WHERE tenant = :t ORDER BY at, offer_id",
            {"t": tenant},
        )
        return [Exposure(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), *r[6:]) for r in rows]

    async def credits(self, tenant: str) -> list[CreditFact]:
        rows = await self._select(
            "SELECT offer_id, event_id, outcome, at, amount, cost, currency"
            " FROM credit_decisions WHERE tenant = :t ORDER BY at, event_id",
            {"t": tenant},
        )
        return [CreditFact(*r) for r in rows]

    async def bundle_counts(self, tenant: str, window_days: int, now: datetime) -> BundleCounts:
        return await bundles_sql.bundle_counts(self.conn, tenant, window_days, now)

    async def ready_accounts(
        self, tenant: str, seq: SequenceStat, now: datetime
    ) -> list[tuple[str, datetime]]:
        return await bundles_sql.ready_accounts(self.conn, tenant, seq, now)

    async def adoption_count(self, tenant: str) -> int:
        return int(
            (
                await self.conn.execute(
                    text("SELECT count(*) FROM adoptions WHERE tenant = :t"), {"t": tenant}
                )
            ).scalar_one()
        )

    async def readiness_checked(self, tenant: str) -> tuple[datetime | None, int]:
        row = (
            await self.conn.execute(
                text("SELECT ready_checked, ready_adoptions FROM clocks WHERE tenant = :t"),
                {"t": tenant},
            )
        ).one_or_none()
        return (None, 0) if row is None else (row[0], int(row[1]))

    async def mark_readiness(self, tenant: str, at: datetime, adoptions: int) -> None:
        await self.conn.execute(
            text("UPDATE clocks SET ready_checked = :at, ready_adoptions = :n WHERE tenant = :t"),
            {"t": tenant, "at": at, "n": adoptions},
        )

    async def claim_signals(
        self, tenant: str, signals: Sequence[tuple[str, str]], at: datetime
    ) -> set[tuple[str, str]]:
        if not signals:
            return set()
        rows = await self._select(
            "INSERT INTO signals_sent (tenant, account, sequence, at)"
            " SELECT :t, a, s, :at FROM unnest(CAST(:a AS text[]), CAST(:s AS text[])) AS x(a, s)"
            " ON CONFLICT DO NOTHING RETURNING account, sequence",
            {"t": tenant, "at": at, "a": [a for a, _ in signals], "s": [s for _, s in signals]},
        )
        return {(r[0], r[1]) for r in rows}
