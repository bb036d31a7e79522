"""The ledger in Postgres: append-only transactions and entries, credits,
decisions, approvals' audit, redemptions, clocks and account profiles."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.domain.books import Transaction
from services.ledger.domain.decide import BudgetKey

AccountKey = tuple[str, str]  # (tenant, account)
_OFFERS = "unnest(CAST(:t AS text[]), CAST(:o AS text[]))"
_ACCOUNTS = "unnest(CAST(:t AS text[]), CAST(:a AS text[]))"
_CLOCKS = "unnest(CAST(:t AS text[]), CAST(:p AS int[]), CAST(:at AS timestamptz[]))"


class PostgresLedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = await self.conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]

    async def _insert(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(text(sql), list(rows))

    # ------------------------------------------------------------ decisions

    async def decided(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(tenant, offer_id)`` already have a decision."""
        keys = list(keys)
        if not keys:
            return set()
        rows = await self.conn.execute(
            text(
                "SELECT tenant, offer_id FROM decisions"
                " WHERE (tenant, offer_id) IN (SELECT * FROM " + _OFFERS + ")"
            ),
            {"t": [k[0] for k in keys], "o": [k[1] for k in keys]},
        )
        return {(r[0], r[1]) for r in rows}

    async def account_costs(
        self, accounts: Iterable[AccountKey], since: datetime
    ) -> dict[AccountKey, list[tuple[datetime, int, str]]]:
        """Each account's granted costs decided after ``since``: (at, cost, currency)."""
        accounts = list(accounts)
        out: dict[AccountKey, list[tuple[datetime, int, str]]] = {a: [] for a in accounts}
        if not accounts:
            return out
        rows = await self.conn.execute(
            text(
                "SELECT tenant, account, decided_at, cost, currency FROM decisions"
                " WHERE (tenant, account) IN (SELECT * FROM " + _ACCOUNTS + ")"
                " AND status = 'granted' AND decided_at > :since"
            ),
            {"t": [a[0] for a in accounts], "a": [a[1] for a in accounts], "since": since},
        )
        for tenant, account, at, cost, currency in rows:
            out[(tenant, account)].append((at, cost, currency))
        return out

    async def insert_decisions(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert(
            "INSERT INTO decisions (tenant, offer_id, account, partition, rule, kind, status,"
            " value, value_currency, cost, currency, cap, headroom, reason, tier, segments, arr,"
            " offered_at, decided_at, approval_expires_at, approvals_needed, actor, comment,"
            " offer, answer) VALUES (:tenant, :offer_id, :account, :partition, :rule, :kind,"
            " :status, :value, :value_currency, :cost, :currency, :cap, :headroom, :reason,"
            " :tier, :segments, :arr, :offered_at, :decided_at, :approval_expires_at,"
            " :approvals_needed, :actor, :comment, CAST(:offer AS jsonb), CAST(:answer AS jsonb))",
            rows,
        )

    async def update_decisions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Settles pending decisions: status, cap, reason, who, when, the answer."""
        await self._insert(
            "UPDATE decisions SET status = :status, cap = :cap, headroom = :headroom,"
            " reason = :reason, decided_at = :decided_at, actor = :actor, comment = :comment,"
            " answer = CAST(:answer AS jsonb) WHERE tenant = :tenant AND offer_id = :offer_id",
            rows,
        )

    async def decision(
        self, tenant: str, offer_id: str, lock: bool = False
    ) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT * FROM decisions WHERE tenant = :t AND offer_id = :o"
            + (" FOR UPDATE" if lock else ""),
            {"t": tenant, "o": offer_id},
        )
        return rows[0] if rows else None

    async def approvers(self, tenant: str, offer_id: str) -> list[str]:
        """Who approved a decision, first first (the audit's approvals, each holder once)."""
        rows = await self.conn.execute(
            text(
                "SELECT actor FROM approval_audit WHERE tenant = :t AND offer_id = :o"
                " AND action = 'approve' ORDER BY id"
            ),
            {"t": tenant, "o": offer_id},
        )
        return list(dict.fromkeys(r[0] for r in rows))

    async def last_action(self, tenant: str, offer_id: str) -> str | None:
        """The newest human or expiry action on a decision (not its request)."""
        rows = await self.conn.execute(
            text(
                "SELECT action FROM approval_audit WHERE tenant = :t AND offer_id = :o"
                " AND action <> 'requested' ORDER BY id DESC LIMIT 1"
            ),
            {"t": tenant, "o": offer_id},
        )
        return rows.scalar_one_or_none()

    async def due_approvals(self, clocks: dict[tuple[str, int], datetime]) -> list[dict[str, Any]]:
        """Pending decisions whose approval window closed in their partition's stream time."""
        return await self._due(
            "decisions",
            "x.status = 'pending' AND x.approval_expires_at <= c.at",
            "x.tenant, x.offer_id",
            clocks,
        )

    async def _due(
        self, table: str, due: str, order: str, clocks: dict[tuple[str, int], datetime]
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` (as ``x``) that their (tenant, partition) clock ``c`` made
        due, locked in ``order``."""
        if not clocks:
            return []
        keys = list(clocks)
        return await self._rows(
            f"SELECT x.* FROM {table} x JOIN {_CLOCKS} AS c(tenant, partition, at)"
            f" ON x.tenant = c.tenant AND x.partition = c.partition WHERE {due}"
            f" ORDER BY {order} FOR UPDATE OF x",
            {
                "t": [k[0] for k in keys],
                "p": [k[1] for k in keys],
                "at": [clocks[k] for k in keys],
            },
        )

    async def audit(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert(
            "INSERT INTO approval_audit (tenant, offer_id, action, actor, comment, outcome,"
            " detail) VALUES (:tenant, :offer_id, :action, :actor, :comment, :outcome, :detail)",
            rows,
        )

    # ------------------------------------------------------------ books

    async def book(self, txns: Sequence[tuple[Transaction, datetime]]) -> None:
        """Appends balanced transactions, each booked at its stream time."""
        await self._insert(
            "INSERT INTO transactions (txn_id, tenant, description, booked_at)"
            " VALUES (:id, :t, :d, :at)",
            [{"id": t.txn_id, "t": t.tenant, "d": t.description, "at": at} for t, at in txns],
        )
        await self._insert(
            "INSERT INTO entries (txn_id, line, tenant, ledger_account, amount, currency)"
            " VALUES (:id, :line, :t, :acct, :amount, :cur)",
            [
                {
                    "id": t.txn_id,
                    "line": n,
                    "t": t.tenant,
                    "acct": e.ledger_account,
                    "amount": e.amount,
                    "cur": e.currency,
                }
                for t, _ in txns
                for n, e in enumerate(t.entries)
            ],
        )

    async def insert_credits(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert(
            "INSERT INTO credits (credit_id, offer_id, tenant, account, amount, currency,"
            " granted_at, expires_at, partition, kind, tier) VALUES (:credit_id, :offer_id,"
            " :tenant, :account, :amount, :currency, :granted_at, :expires_at, :partition,"
            " :kind, :tier)",
            rows,
        )

    async def credit(self, tenant: str, credit_id: str) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT * FROM credits WHERE tenant = :t AND credit_id = :c",
            {"t": tenant, "c": credit_id},
        )
        return rows[0] if rows else None

    async def open_credits(self, accounts: Iterable[AccountKey]) -> list[dict[str, Any]]:
        """The accounts' credits with something left, locked (in id order)."""
        accounts = list(accounts)
        if not accounts:
            return []
        return await self._rows(
            "SELECT * FROM credits WHERE (tenant, account) IN (SELECT * FROM " + _ACCOUNTS + ")"
            " AND redeemed + expired < amount ORDER BY credit_id FOR UPDATE",
            {"t": [a[0] for a in accounts], "a": [a[1] for a in accounts]},
        )

    async def due_credits(self, clocks: dict[tuple[str, int], datetime]) -> list[dict[str, Any]]:
        """Open credits whose expiry their partition's stream time has passed, locked."""
        return await self._due(
            "credits",
            "x.redeemed + x.expired < x.amount AND x.expires_at <= c.at",
            "x.credit_id",
            clocks,
        )

    async def spend_credits(self, moves: Sequence[tuple[str, str, str, int]]) -> None:
        """Records ``(txn_id, credit_id, redeemed|expired, amount)`` and updates the credits."""
        await self._insert(
            "INSERT INTO credit_moves (txn_id, credit_id, kind, amount)"
            " VALUES (:txn, :credit, :kind, :amount)",
            [{"txn": t, "credit": c, "kind": k, "amount": a} for t, c, k, a in moves],
        )
        for kind in ("redeemed", "expired"):
            rows = [{"c": c, "a": a} for _, c, k, a in moves if k == kind]
            await self._insert(
                f"UPDATE credits SET {kind} = {kind} + :a WHERE credit_id = :c", rows
            )

    async def insert_redemptions(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert(
            "INSERT INTO redemptions (tenant, event_id, account, credit_id, invoice_id, amount,"
            " currency, at) VALUES (:tenant, :event_id, :account, :credit_id, :invoice_id,"
            " :amount, :currency, :at)",
            rows,
        )

    # ------------------------------------------------------------ clocks, profiles

    async def advance(
        self, marks: dict[tuple[str, int], datetime]
    ) -> dict[tuple[str, int], datetime]:
        """Moves each (tenant, partition) stream clock forward; returns the clocks."""
        if not marks:
            return {}
        keys = sorted(marks)
        rows = await self.conn.execute(
            text(
                "INSERT INTO ledger_clocks (tenant, partition, at)"
                " SELECT * FROM " + _CLOCKS + " ON CONFLICT (tenant, partition)"
                " DO UPDATE SET at = GREATEST(ledger_clocks.at, EXCLUDED.at)"
                " RETURNING tenant, partition, at"
            ),
            {
                "t": [k[0] for k in keys],
                "p": [k[1] for k in keys],
                "at": [marks[k] for k in keys],
            },
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def clocks(self, tenant: str) -> dict[int, datetime]:
        """The tenant's stream time per partition."""
        rows = await self.conn.execute(
            text("SELECT partition, at FROM ledger_clocks WHERE tenant = :t"), {"t": tenant}
        )
        return {partition: at for partition, at in rows}

    async def budgets_used(self, tenant: str) -> dict[BudgetKey, int]:
        """What each of the tenant's budgets has used, all partitions' leases together."""
        rows = await self.conn.execute(
            text(
                "SELECT name, period, currency, sum(used) FROM budget_leases WHERE tenant = :t"
                " GROUP BY name, period, currency"
            ),
            {"t": tenant},
        )
        return {BudgetKey(tenant, n, p, c): int(total) for n, p, c, total in rows}

    async def clock(self, tenant: str, partition: int) -> datetime | None:
        rows = await self.conn.execute(
            text("SELECT at FROM ledger_clocks WHERE tenant = :t AND partition = :p"),
            {"t": tenant, "p": partition},
        )
        return rows.scalar_one_or_none()

    async def save_profiles(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert(
            "INSERT INTO account_profiles (tenant, account, arr, currency, segments, as_of)"
            " VALUES (:tenant, :account, :arr, :currency, :segments, :as_of)"
            " ON CONFLICT (tenant, account) DO UPDATE SET arr = EXCLUDED.arr,"
            " currency = EXCLUDED.currency, segments = EXCLUDED.segments,"
            " as_of = EXCLUDED.as_of WHERE account_profiles.as_of <= EXCLUDED.as_of",
            rows,
        )
