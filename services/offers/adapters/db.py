"""Offers in Postgres."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.offers.domain import OfferDecision

AccountKey = tuple[str, str]


class PostgresOfferRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def open_rules(self, keys: Iterable[AccountKey]) -> dict[AccountKey, set[str]]:
        wanted = sorted(set(keys))
        rows = await self.conn.execute(
            text(
                "SELECT o.tenant, o.account, o.rule FROM offers o"
                " JOIN unnest(CAST(:t AS text[]), CAST(:a AS text[])) AS k(tenant, account)"
                " ON o.tenant = k.tenant AND o.account = k.account WHERE o.status = 'issued'"
            ),
            {"t": [k[0] for k in wanted], "a": [k[1] for k in wanted]},
        )
        out: dict[AccountKey, set[str]] = {}
        for t, a, rule in rows.all():
            out.setdefault((t, a), set()).add(rule)
        return out

    async def add(self, rows: list[tuple[str, AccountKey, OfferDecision, str, datetime]]) -> None:
        if not rows:
            return
        await self.conn.execute(
            text(
                "INSERT INTO offers (offer_id, tenant, account, rule, status, reward_kind,"
                " value_amount, cost_amount, currency, user_id, reason, cause_event, issued_at)"
                " VALUES (:id, :t, :a, :rule, 'issued', :kind, :value, :cost, :cur, :user,"
                " :reason, :cause, :at)"
            ),
            [
                {
                    "id": offer_id,
                    "t": t,
                    "a": a,
                    "rule": d.rule,
                    "kind": d.reward.kind,
                    "value": d.reward.value.amount if d.reward.value else None,
                    "cost": d.reward.cost.amount,
                    "cur": d.reward.cost.currency,
                    "user": d.user_id,
                    "reason": d.reason,
                    "cause": cause,
                    "at": at,
                }
                for offer_id, (t, a), d, cause, at in rows
            ],
        )
