"""Offers in Postgres: the offers themselves (one row each, the decision as
published), the per-account book, suppressions and the tenants' stream clocks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.offers.domain.engine import PastOffer
from services.offers.domain.program import FEATURE_KINDS
from services.offers.domain.records import (
    ALLOWED_FROM,
    AccountBook,
    AccountKey,
    NewOffer,
    StatusChange,
    SuppressionRow,
)

_KEYS = (
    " JOIN unnest(CAST(:t AS text[]), CAST(:a AS text[])) AS k(tenant, account)"
    " ON x.tenant = k.tenant AND x.account = k.account"
)


def dump_env(env: dict[str, Any] | None) -> str | None:
    if env is None:
        return None
    return json.dumps({k: sorted(v) if isinstance(v, frozenset) else v for k, v in env.items()})


def load_env(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    env: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw)
    for name, kind in FEATURE_KINDS.items():
        if kind == "set":
            env[name] = frozenset(env.get(name) or ())
    return env


def final_statuses(books: dict[AccountKey, AccountBook]) -> dict[str, str]:
    return {p.offer_id: p.status for b in books.values() for p in b.offers}


class PostgresOfferRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def load(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountBook]:
        wanted = sorted(set(keys))
        params = {"t": [k[0] for k in wanted], "a": [k[1] for k in wanted]}
        books: dict[AccountKey, AccountBook] = {}
        rows = await self.conn.execute(
            text("SELECT x.tenant, x.account, x.env, x.counts FROM offer_accounts x" + _KEYS),
            params,
        )
        for t, a, env, counts in rows.all():
            books[(t, a)] = AccountBook(env=load_env(env), counts=dict(counts))
        rows = await self.conn.execute(
            text(
                "SELECT x.tenant, x.account, x.offer_id, x.rule, x.status, x.issued_at,"
                " x.expires_at, x.cause_event FROM offers x" + _KEYS + " ORDER BY x.issued_at"
            ),
            params,
        )
        for t, a, oid, rule, status, issued, expires, moment in rows.all():
            books.setdefault((t, a), AccountBook()).offers.append(
                PastOffer(oid, rule, status, issued, expires, moment)
            )
        return books

    async def save(
        self,
        books: dict[AccountKey, AccountBook],
        offers: list[NewOffer],
        suppressions: list[SuppressionRow],
        changes: list[StatusChange],
    ) -> None:
        if books:
            await self.conn.execute(
                text(
                    "INSERT INTO offer_accounts (tenant, account, env, counts)"
                    " VALUES (:t, :a, CAST(:env AS jsonb), CAST(:counts AS jsonb))"
                    " ON CONFLICT (tenant, account) DO UPDATE"
                    " SET env = excluded.env, counts = excluded.counts"
                ),
                [
                    {"t": t, "a": a, "env": dump_env(b.env), "counts": json.dumps(b.counts)}
                    for (t, a), b in sorted(books.items())
                ],
            )
        # earlier offers first: one that expired at this batch's moments must leave
        # 'issued' before a new open offer of its rule is written (one open per rule);
        # the batch's new offers are written in their final status below
        await self.update_statuses(changes)
        status = final_statuses(books)
        if offers:
            await self.conn.execute(
                text(
                    "INSERT INTO offers (offer_id, tenant, account, rule, status, reward_kind,"
                    " value_amount, cost_amount, currency, user_id, reason, cause_event,"
                    " issued_at, expires_at, holdout, decision, updated_at)"
                    " VALUES (:id, :t, :a, :rule, :status, :kind, :value, :cost, :cur, :user,"
                    " :reason, :moment, :at, :expires, :holdout, CAST(:decision AS jsonb), :at)"
                    " ON CONFLICT (offer_id) DO NOTHING"
                ),
                [_offer_row(o, status) for o in offers],
            )
        if suppressions:
            await self.conn.execute(
                text(
                    "INSERT INTO offer_suppressions (tenant, account, moment, rule, outcome,"
                    " reason, at) VALUES (:t, :a, :m, :rule, :outcome, :reason, :at)"
                    " ON CONFLICT DO NOTHING"
                ),
                [
                    {
                        "t": s.tenant,
                        "a": s.account,
                        "m": s.moment,
                        "rule": s.suppression.rule,
                        "outcome": s.suppression.outcome,
                        "reason": s.suppression.reason,
                        "at": s.at,
                    }
                    for s in suppressions
                ],
            )

    async def update_statuses(self, changes: list[StatusChange]) -> None:
        """Moves each offer to its new status if it may reach it from where it is."""
        if not changes:
            return
        await self.conn.execute(
            text(
                "UPDATE offers SET status = :s, updated_at = :at, actor = :actor,"
                " comment = :comment"
                " WHERE tenant = :t AND offer_id = :id AND status = ANY(:allowed)"
            ),
            [
                {
                    "s": c.status,
                    "at": c.at,
                    "actor": c.actor,
                    "comment": c.comment,
                    "t": c.tenant,
                    "id": c.offer_id,
                    "allowed": list(ALLOWED_FROM[c.status]),
                }
                for c in changes
            ],
        )

    async def advance(self, marks: dict[str, datetime]) -> dict[str, datetime]:
        if not marks:
            return {}
        rows = await self.conn.execute(
            text(
                "INSERT INTO offer_clocks (tenant, watermark)"
                " SELECT * FROM unnest(CAST(:t AS text[]), CAST(:w AS timestamptz[]))"
                " ON CONFLICT (tenant) DO UPDATE"
                " SET watermark = GREATEST(offer_clocks.watermark, excluded.watermark)"
                " RETURNING tenant, watermark"
            ),
            {"t": sorted(marks), "w": [marks[t] for t in sorted(marks)]},
        )
        return {t: w for t, w in rows.all()}

    async def clock(self, tenant: str) -> datetime | None:
        row = await self.conn.execute(
            text("SELECT watermark FROM offer_clocks WHERE tenant = :t"), {"t": tenant}
        )
        found: datetime | None = row.scalar()
        return found

    async def expire_due(
        self, tenant: str, until: datetime
    ) -> list[tuple[str, str, str, datetime]]:
        rows = await self.conn.execute(
            text(
                "UPDATE offers SET status = 'expired', updated_at = expires_at"
                " WHERE tenant = :t AND status = 'issued' AND expires_at <= :until"
                " RETURNING offer_id, account, rule, expires_at"
            ),
            {"t": tenant, "until": until},
        )
        return sorted((r[0], r[1], r[2], r[3]) for r in rows.all())

    async def account_offers(self, tenant: str, account: str) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT offer_id, rule, status, decision, actor, comment, issued_at,"
                " expires_at, updated_at FROM offers"
                " WHERE tenant = :t AND account = :a ORDER BY issued_at, offer_id"
            ),
            {"t": tenant, "a": account},
        )
        return [dict(r._mapping) for r in rows.all()]

    async def offer(self, tenant: str, offer_id: str, lock: bool = False) -> dict[str, Any] | None:
        row = await self.conn.execute(
            text(
                "SELECT offer_id, account, rule, status, decision, actor, comment, issued_at,"
                " expires_at, updated_at FROM offers WHERE tenant = :t AND offer_id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"t": tenant, "id": offer_id},
        )
        found = row.first()
        return dict(found._mapping) if found is not None else None

    async def account_suppressions(self, tenant: str, account: str) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT moment, rule, outcome, reason, at FROM offer_suppressions"
                " WHERE tenant = :t AND account = :a ORDER BY at, rule"
            ),
            {"t": tenant, "a": account},
        )
        return [dict(r._mapping) for r in rows.all()]

    async def summary(self, tenant: str) -> tuple[list[Any], list[Any]]:
        """Per rule and status: offers and cost; per rule and reason: suppressions."""
        offers = await self.conn.execute(
            text(
                "SELECT rule, status, count(*), sum(cost_amount), currency FROM offers"
                " WHERE tenant = :t GROUP BY rule, status, currency ORDER BY rule, status"
            ),
            {"t": tenant},
        )
        suppressed = await self.conn.execute(
            text(
                "SELECT rule, outcome, reason, count(*)"
                " FROM offer_suppressions WHERE tenant = :t GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            {"t": tenant},
        )
        return list(offers.all()), list(suppressed.all())


def _offer_row(o: NewOffer, status: dict[str, str]) -> dict[str, Any]:
    d = o.decision
    return {
        "id": d.offer_id,
        "t": o.tenant,
        "a": o.account,
        "rule": d.rule.name,
        "status": status.get(d.offer_id, "held_out" if d.holdout else "issued"),
        "kind": d.reward.kind,
        "value": d.reward.value.amount if d.reward.value else None,
        "cost": d.reward.cost.amount,
        "cur": d.reward.cost.currency,
        "user": o.event.data.user_id,
        "reason": d.reason,
        "moment": o.moment,
        "at": o.event.time,
        "expires": d.expires_at,
        "holdout": d.holdout,
        "decision": o.event.data.model_dump_json(),
    }
