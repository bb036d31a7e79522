"""Account state in Postgres, read and written in bulk (one round trip each per batch)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import Money
from services.segmenter.domain import AccountState

AccountKey = tuple[str, str]


class PostgresAccountRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def load(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountState]:
        wanted = sorted(set(keys))
        rows = await self.conn.execute(
            text(
                "SELECT a.tenant, a.account, seats_purchased, seats_used, mrr_amount, mrr_currency,"
                " plan, billing_interval, renewal_date, segments FROM accounts a"
                " JOIN unnest(CAST(:t AS text[]), CAST(:a AS text[])) AS k(tenant, account)"
                " ON a.tenant = k.tenant AND a.account = k.account FOR UPDATE OF a"
            ),
            {"t": [k[0] for k in wanted], "a": [k[1] for k in wanted]},
        )
        found: dict[AccountKey, AccountState] = {}
        for t, a, sp, su, amount, cur, plan, interval, renewal, segs in rows.all():
            found[(t, a)] = AccountState(
                seats_purchased=sp,
                seats_used=su,
                mrr=Money(amount=amount, currency=cur) if amount is not None else None,
                plan=plan,
                interval=interval,
                renewal_date=renewal,
                segments=frozenset(segs),
            )
        return found

    async def save(self, states: dict[AccountKey, AccountState]) -> None:
        if not states:
            return
        await self.conn.execute(
            text(
                "INSERT INTO accounts (tenant, account, seats_purchased, seats_used, mrr_amount,"
                " mrr_currency, plan, billing_interval, renewal_date, segments, updated_at)"
                " VALUES (:t, :a, :sp, :su, :amount, :cur, :plan, :interval, :renewal, :segs,"
                " now())"
                " ON CONFLICT (tenant, account) DO UPDATE SET"
                " seats_purchased = EXCLUDED.seats_purchased, seats_used = EXCLUDED.seats_used,"
                " mrr_amount = EXCLUDED.mrr_amount, mrr_currency = EXCLUDED.mrr_currency,"
                " plan = EXCLUDED.plan, billing_interval = EXCLUDED.billing_interval,"
                " renewal_date = EXCLUDED.renewal_date, segments = EXCLUDED.segments,"
                " updated_at = now()"
            ),
            [
                {
                    "t": t,
                    "a": a,
                    "sp": s.seats_purchased,
                    "su": s.seats_used,
                    "amount": s.mrr.amount if s.mrr else None,
                    "cur": s.mrr.currency if s.mrr else None,
                    "plan": s.plan,
                    "interval": s.interval,
                    "renewal": s.renewal_date,
                    "segs": sorted(s.segments),
                }
                for (t, a), s in states.items()
            ],
        )
