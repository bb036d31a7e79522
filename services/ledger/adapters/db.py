"""The ledger in Postgres: append-only transactions and entries, credits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.domain import CreditGrant


class PostgresLedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def granted_offers(self, offer_ids: Iterable[str]) -> set[str]:
        rows = await self.conn.execute(
            text("SELECT offer_id FROM credits WHERE offer_id = ANY(:ids)"),
            {"ids": list(offer_ids)},
        )
        return {r[0] for r in rows.all()}

    async def book_grants(self, grants: list[tuple[CreditGrant, str, datetime]]) -> None:
        """Books each grant's transaction and its credit; ``(grant, account, at)``."""
        if not grants:
            return
        await self.conn.execute(
            text(
                "INSERT INTO transactions (txn_id, tenant, description, booked_at)"
                " VALUES (:id, :t, :d, :at)"
            ),
            [
                {
                    "id": g.transaction.txn_id,
                    "t": g.transaction.tenant,
                    "d": g.transaction.description,
                    "at": at,
                }
                for g, _, at in grants
            ],
        )
        await self.conn.execute(
            text(
                "INSERT INTO entries (txn_id, line, tenant, ledger_account, amount, currency)"
                " VALUES (:id, :line, :t, :acct, :amount, :cur)"
            ),
            [
                {
                    "id": g.transaction.txn_id,
                    "line": n,
                    "t": g.transaction.tenant,
                    "acct": e.ledger_account,
                    "amount": e.amount,
                    "cur": e.currency,
                }
                for g, _, _ in grants
                for n, e in enumerate(g.transaction.entries)
            ],
        )
        await self.conn.execute(
            text(
                "INSERT INTO credits (credit_id, offer_id, tenant, account, amount, currency,"
                " granted_at) VALUES (:id, :offer, :t, :a, :amount, :cur, :at)"
            ),
            [
                {
                    "id": g.credit_id,
                    "offer": g.offer_id,
                    "t": g.transaction.tenant,
                    "a": account,
                    "amount": g.amount.amount,
                    "cur": g.amount.currency,
                    "at": at,
                }
                for g, account, at in grants
            ],
        )
