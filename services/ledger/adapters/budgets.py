"""Shared budgets that hold under concurrency without one hot row.

A budget (one cap, one period, one currency) is a central row saying how much of
the cap has been leased out, plus one lease per partition saying how much of its
slices that partition has used. A transaction that grants for partition ``p``:

1. locks ``p``'s lease rows for the budgets its batch needs (in key order); only
   the owner of ``p`` — or an approver acting for ``p`` — ever locks them, so
   this does not contend;
2. if a lease holds less than the batch may need, takes a slice from the central
   row (locked for the rest of the transaction, so rarely: a slice is
   ``slice_percent`` of the cap, or what is needed if that is more);
3. if the central row is exhausted, pools what the other partitions' leases have
   not used into its own (waiting for their locks, so it sees every unit left —
   which is why a cap is reached exactly when demand exceeds it). Once a
   transaction has pooled a budget, a later short grant of another of its batch's
   partitions takes the units from the leases the transaction holds.

Every step is a row lock inside the batch's transaction, so no interleaving can
lease out more than the cap: the sum of ``leased`` over the leases never exceeds
the central ``allocated``, which never exceeds the cap, and ``used <= leased`` is
a CHECK. A lock cycle between a pooling transaction and an owner waiting for the
central row is possible at exhaustion only; Postgres breaks it and the worker
retries the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.domain.decide import BudgetKey

LeaseKey = tuple[BudgetKey, int]  # (budget, partition)


@dataclass
class _Lease:
    leased: int
    used: int
    dirty: bool = False

    @property
    def free(self) -> int:
        return self.leased - self.used


class LeasedBudgets:
    """One transaction's leases; read with :meth:`free`, spend with :meth:`use`."""

    def __init__(self, conn: AsyncConnection, slice_percent: float) -> None:
        self.conn = conn
        self.slice_percent = slice_percent
        self._leases: dict[LeaseKey, _Lease] = {}
        # central rows this transaction has locked: (allocated, changed since read).
        # Locked, nobody else can move them, so they are read once and written once.
        self._central: dict[BudgetKey, list[int]] = {}
        # budgets this transaction pooled: it then holds every unit left of them
        # (the central row and every lease that had some), so a second grant that
        # is short need not ask the database again; it lends from the leases this
        # transaction holds (a batch spans partitions: the units pooled into one
        # partition's lease are lent to another's, see _gather)
        self._pooled_keys: set[BudgetKey] = set()
        self.topups = 0
        self.pooled = 0

    def free(self, key: BudgetKey, partition: int) -> int:
        lease = self._leases.get((key, partition))
        return lease.free if lease else 0

    def use(self, key: BudgetKey, partition: int, amount: int) -> None:
        lease = self._leases[(key, partition)]
        if amount > lease.free:
            raise ValueError(f"{key} in partition {partition}: {amount} > {lease.free} free")
        lease.used += amount
        lease.dirty = True

    def give_back(self, key: BudgetKey, partition: int, amount: int) -> None:
        """Returns spent budget (redeemed or expired credit under the liability
        ceiling) to the partition's lease. Clamped at what the lease has used:
        credit granted before the ceiling existed frees nothing."""
        lease = self._leases[(key, partition)]
        lease.used = max(lease.used - amount, 0)
        lease.dirty = True

    async def prepare(self, demands: dict[LeaseKey, tuple[int, int]]) -> None:
        """Locks the leases of ``demands`` (key -> (cap, most the transaction may
        need)), in key order, and tops up from the central rows those that hold
        less. Pooling waits for :meth:`ensure`: only a grant that is short pools."""
        todo = sorted(k for k in demands if k not in self._leases)
        if todo:
            await self._lock(todo)
        for key, partition in sorted(demands):
            cap, need = demands[(key, partition)]
            if need > self.free(key, partition):
                await self._top_up(key, partition, cap, need - self.free(key, partition))

    async def ensure(self, key: BudgetKey, partition: int, cap: int, need: int) -> int:
        """What the partition's lease has free after trying to make it ``need``."""
        if (key, partition) not in self._leases:
            await self._lock([(key, partition)])
        if need > self.free(key, partition):
            await self._top_up(key, partition, cap, need - self.free(key, partition))
        if need > self.free(key, partition):
            if key in self._pooled_keys:
                # pooled for another partition of this batch: every unit left is in
                # the leases this transaction holds, so lend from them
                self._gather(key, partition)
            else:
                await self._pool(key, partition)
        return self.free(key, partition)

    async def _lock(self, keys: list[LeaseKey]) -> None:
        """Locks (creating if needed) the leases of ``keys``, in one statement each."""
        ordered = sorted(
            keys, key=lambda k: (k[0].tenant, k[0].name, k[0].period, k[0].currency, k[1])
        )
        params = {
            "t": [k.tenant for k, _ in ordered],
            "n": [k.name for k, _ in ordered],
            "p": [k.period for k, _ in ordered],
            "c": [k.currency for k, _ in ordered],
            "part": [part for _, part in ordered],
        }
        keys_sql = (
            "unnest(CAST(:t AS text[]), CAST(:n AS text[]), CAST(:p AS text[]),"
            " CAST(:c AS text[]), CAST(:part AS int[]))"
        )
        await self.conn.execute(
            text(
                "INSERT INTO budget_leases (tenant, name, period, currency, partition)"
                f" SELECT * FROM {keys_sql} ON CONFLICT DO NOTHING"
            ),
            params,
        )
        rows = await self.conn.execute(
            text(
                "SELECT tenant, name, period, currency, partition, leased, used"
                " FROM budget_leases WHERE (tenant, name, period, currency, partition) IN"
                f" (SELECT * FROM {keys_sql})"
                " ORDER BY tenant, name, period, currency, partition FOR UPDATE"
            ),
            params,
        )
        found = {
            (BudgetKey(t, n, p, c), part): _Lease(leased, used)
            for t, n, p, c, part, leased, used in rows.all()
        }
        for key in ordered:
            self._leases[key] = found[key]

    async def _top_up(self, key: BudgetKey, partition: int, cap: int, missing: int) -> None:
        central = self._central.get(key)
        if central is None:
            params = {"t": key.tenant, "n": key.name, "p": key.period, "c": key.currency}
            await self.conn.execute(
                text(
                    "INSERT INTO budgets (tenant, name, period, currency)"
                    " VALUES (:t, :n, :p, :c) ON CONFLICT DO NOTHING"
                ),
                params,
            )
            allocated = (
                await self.conn.execute(
                    text(
                        "SELECT allocated FROM budgets WHERE tenant = :t AND name = :n"
                        " AND period = :p AND currency = :c FOR UPDATE"
                    ),
                    params,
                )
            ).scalar_one()
            central = self._central[key] = [allocated, 0]
        slice_ = math.ceil(cap * self.slice_percent / 100)
        take = min(max(missing, slice_), max(cap - central[0], 0))
        if take <= 0:
            return
        central[0] += take
        central[1] = 1  # written by flush()
        lease = self._leases[(key, partition)]
        lease.leased += take
        lease.dirty = True
        self.topups += 1

    def _gather(self, key: BudgetKey, partition: int) -> None:
        """Moves the unused units of the budget's other leases this transaction
        holds (its batch's other partitions) into this partition's lease."""
        lease = self._leases[(key, partition)]
        for (k, p), sibling in self._leases.items():
            if k == key and p != partition and sibling.free > 0:
                lease.leased += sibling.free
                sibling.leased = sibling.used
                lease.dirty = sibling.dirty = True

    async def _pool(self, key: BudgetKey, partition: int) -> None:
        """Moves every unused unit of the budget's other leases into this one."""
        self._gather(key, partition)
        lease = self._leases[(key, partition)]
        params = {"t": key.tenant, "n": key.name, "p": key.period, "c": key.currency}
        held = [p for k, p in self._leases if k == key]
        rows = (
            await self.conn.execute(
                text(
                    "SELECT partition, leased - used FROM budget_leases WHERE tenant = :t"
                    " AND name = :n AND period = :p AND currency = :c"
                    " AND NOT (partition = ANY(:held)) AND leased > used"
                    " ORDER BY partition FOR UPDATE"
                ),
                {**params, "held": held},
            )
        ).all()
        self.pooled += 1
        self._pooled_keys.add(key)
        if not rows:
            return
        await self.conn.execute(
            text(
                "UPDATE budget_leases SET leased = used WHERE tenant = :t AND name = :n"
                " AND period = :p AND currency = :c AND partition = ANY(:parts)"
            ),
            {**params, "parts": [p for p, _ in rows]},
        )
        lease.leased += sum(free for _, free in rows)
        lease.dirty = True

    async def flush(self) -> None:
        centrals = [(k, c) for k, c in self._central.items() if c[1]]
        if centrals:
            await self.conn.execute(
                text(
                    "UPDATE budgets SET allocated = :a WHERE tenant = :t AND name = :n"
                    " AND period = :p AND currency = :c"
                ),
                [
                    {"t": k.tenant, "n": k.name, "p": k.period, "c": k.currency, "a": c[0]}
                    for k, c in centrals
                ],
            )
            for _, c in centrals:
                c[1] = 0
        dirty = [(k, lease) for k, lease in self._leases.items() if lease.dirty]
        if not dirty:
            return
        await self.conn.execute(
            text(
                "UPDATE budget_leases SET leased = :leased, used = :used WHERE tenant = :t"
                " AND name = :n AND period = :p AND currency = :c AND partition = :part"
            ),
            [
                {
                    "t": k.tenant,
                    "n": k.name,
                    "p": k.period,
                    "c": k.currency,
                    "part": part,
                    "leased": lease.leased,
                    "used": lease.used,
                }
                for (k, part), lease in dirty
            ],
        )
        for _, lease in dirty:
            lease.dirty = False
