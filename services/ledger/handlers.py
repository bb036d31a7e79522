"""The ledger's consumer: decides each issued offer (grant, reject, or hold for
approval), redeems credits, expires them and pending approvals in stream time
(per tenant and partition: any record moves it, clock ticks included, so a quiet
partition's credits expire within a tick), and keeps account profiles for reports.
Every decision, and every expiry (``credit.expired``), is published on
``credits.decisions`` through the outbox, in the same transaction as its books.

One :class:`Books` is one transaction's work; the approval endpoint uses it too,
so a human's approval goes through exactly the caps and bookings the consumer's
grants do. It loads what a decision needs (account costs, budget leases), and
the domain decides (``domain/decide.py``) and says what that books and publishes
(``domain/settle.py``); Books writes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import Event, Money
from schemas.events import (
    CreditApplied,
    OfferIssued,
    SegmentEntered,
    SegmentExited,
)
from services.ledger.adapters.budgets import LeasedBudgets, LeaseKey
from services.ledger.adapters.db import AccountKey, PostgresLedgerRepository
from services.ledger.domain import books
from services.ledger.domain.decide import (
    BudgetKey,
    GrantRequest,
    Verdict,
    decide,
    needs,
    window_cost,
)
from services.ledger.domain.program import LedgerProgram
from services.ledger.domain.settle import (
    Approval,
    Settlement,
    expired_event,
    first_approval,
    refusal,
    settle,
)
from services.runtime.batch import Inbound, UnitOfWork


@dataclass
class Books:
    """One transaction's ledger work: decisions, bookings, credits and outbox."""

    uow: UnitOfWork
    program: LedgerProgram
    repo: PostgresLedgerRepository = field(init=False)
    budgets: LeasedBudgets = field(init=False)
    costs: dict[AccountKey, list[tuple[datetime, int, str]]] = field(default_factory=dict)
    txns: list[tuple[books.Transaction, datetime]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)
    credits: list[dict[str, Any]] = field(default_factory=list)
    moves: list[tuple[str, str, str, int]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self.repo = PostgresLedgerRepository(self.uow.conn)
        self.budgets = LeasedBudgets(self.uow.conn, self.program.slice_percent)

    # ------------------------------------------------------------ deciding

    async def load(self, requests: Sequence[tuple[GrantRequest, int, datetime]]) -> None:
        """Reads the accounts' costs and leases what the requests may need, at once."""
        if not requests:
            return
        since = min(at for _, _, at in requests) - self.program.account_window
        missing = {(r.tenant, r.account) for r, _, _ in requests} - set(self.costs)
        self.costs.update(await self.repo.account_costs(missing, since))
        demands: dict[LeaseKey, tuple[int, int]] = {}
        for req, partition, at in requests:
            for need in needs(self.program, req, at):
                cap, total = demands.get((need.key, partition), (need.cap.amount, 0))
                demands[(need.key, partition)] = (cap, total + need.amount)
        await self.budgets.prepare(demands)

    def account_cost(self, req: GrantRequest, at: datetime) -> int:
        return window_cost(self.program, req, at, self.costs.get((req.tenant, req.account), ()))

    async def decide(
        self,
        req: GrantRequest,
        partition: int,
        at: datetime,
        offer: OfferIssued,
        approval: Approval | None = None,
    ) -> tuple[Verdict, Event]:
        """Decides one grant at stream time ``at`` and queues everything it writes."""
        headroom: dict[Any, int] = {}
        wanted = needs(self.program, req, at)
        for need in wanted:
            headroom[need.key] = await self.budgets.ensure(
                need.key, partition, need.cap.amount, need.amount
            )
        verdict = decide(
            self.program,
            req,
            at,
            self.account_cost(req, at),
            headroom,
            approved=approval is not None,
        )
        self.outcomes[verdict.outcome] += 1
        if verdict.outcome == "grant":
            for need in wanted:
                self.budgets.use(need.key, partition, need.amount)
            self.costs.setdefault((req.tenant, req.account), []).append(
                (at, req.cost.amount, req.cost.currency)
            )
        done = settle(self.program, req, verdict, at, partition, offer, approval)
        self._queue(done)
        return verdict, done.event

    def _queue(self, done: Settlement) -> None:
        """Queues what a decision writes and publishes, for :meth:`flush`."""
        self.txns += done.txns
        self.credits += done.credits
        self.decisions += done.decisions
        self.settled += done.settled
        self.audit += done.audit
        self.uow.publish("credits.decisions", done.event)

    def refuse_pending(
        self,
        row: dict[str, Any],
        at: datetime,
        action: str,
        reason: str,
        approval: Approval | None = None,
    ) -> Event:
        """Settles a pending decision as rejected: by an approver or by expiry."""
        done = refusal(row, at, action, reason, approval)
        self.outcomes["reject"] += 1
        self._queue(done)
        return done.event

    def record_approval(self, row: dict[str, Any], approval: Approval) -> None:
        """Audits the first of two approvals of a pending decision (its stored ``row``):
        it stays pending; nothing is booked or published."""
        self.audit.append(first_approval(row["tenant"], row["offer_id"], approval))

    async def flush(self) -> None:
        await self.budgets.flush()
        await self.repo.book(self.txns)
        await self.repo.insert_credits(self.credits)
        await self.repo.spend_credits(self.moves)
        await self.repo.insert_decisions(self.decisions)
        await self.repo.update_decisions(self.settled)
        await self.repo.audit(self.audit)
        self.txns, self.credits, self.moves = [], [], []
        self.decisions, self.settled, self.audit = [], [], []


# ---------------------------------------------------------------- the consumer


class LedgerHandler:
    """Handles a batch of offers.decisions, events.billing and segments.changes."""

    def __init__(self, program: LedgerProgram) -> None:
        self.program = program

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        b = Books(uow, self.program)
        marks: dict[tuple[str, int], datetime] = {}
        for item in batch:
            key = (item.event.tenant, item.partition)
            marks[key] = max(marks.get(key, item.event.time), item.event.time)
        await self._profiles(
            [i for i in batch if isinstance(i.event, SegmentEntered | SegmentExited)], b
        )
        await self._decide([i for i in batch if isinstance(i.event, OfferIssued)], b)
        await self._redeem([i for i in batch if isinstance(i.event, CreditApplied)], b)
        await b.flush()  # expiry reads what the redemptions left
        await self._expire(await b.repo.advance(marks), b)
        await b.flush()

    async def _decide(self, items: list[Inbound], b: Books) -> None:
        done = await b.repo.decided((i.event.tenant, i.event.data.offer_id) for i in items)  # type: ignore[union-attr]
        todo: list[tuple[GrantRequest, int, datetime, OfferIssued]] = []
        for item in items:
            offer = item.event
            assert isinstance(offer, OfferIssued)
            key = (offer.tenant, offer.data.offer_id)
            if key in done:
                continue  # keyed by offer id: a second copy never books twice
            done.add(key)
            req = GrantRequest.of(offer)
            todo.append((req, item.partition, offer.time, offer))
        await b.load([(r, p, at) for r, p, at, _ in todo])
        for req, partition, at, offer in todo:
            await b.decide(req, partition, at, offer)

    async def _redeem(self, items: list[Inbound], b: Books) -> None:
        """Oldest expiry first, partially if needed; more than the balance is refused
        (dead-lettered with the reason), never booked negative."""
        if not items:
            return
        accounts: dict[AccountKey, list[books.OpenCredit]] = defaultdict(list)
        wanted = {(i.event.tenant, i.event.subject) for i in items}
        rows = await b.repo.open_credits(wanted)
        owner: dict[str, dict[str, Any]] = {}
        for r in rows:
            owner[r["credit_id"]] = r
        for r in rows:
            accounts[(r["tenant"], r["account"])].append(
                books.OpenCredit(
                    r["credit_id"], r["amount"] - r["redeemed"] - r["expired"], r["expires_at"]
                )
            )
        redemptions: list[dict[str, Any]] = []
        for item in items:
            event = item.event
            assert isinstance(event, CreditApplied)
            d = event.data
            named = owner.get(d.credit_id) or await b.repo.credit(event.tenant, d.credit_id)
            if named is None:
                b.uow.reject(item, f"unknown credit {d.credit_id!r} in tenant {event.tenant!r}")
                continue
            if named["account"] != event.subject:
                b.uow.reject(item, f"credit {d.credit_id} belongs to another account")
                continue
            if named["currency"] != d.amount.currency:
                b.uow.reject(
                    item,
                    f"credit {d.credit_id} is in {named['currency']}, the redemption in"
                    f" {d.amount.currency}",
                )
                continue
            if d.amount.amount <= 0:
                b.uow.reject(item, "a redemption must be a positive amount")
                continue
            open_ = [
                c
                for c in accounts[(event.tenant, event.subject)]
                if owner[c.credit_id]["currency"] == d.amount.currency
            ]
            plan = books.allocate(open_, d.amount.amount, event.time)
            if plan is None:
                available = sum(
                    c.remaining for c in open_ if c.expires_at is None or c.expires_at > event.time
                )
                b.uow.reject(
                    item,
                    f"redemption of {d.amount.amount} {d.amount.currency} exceeds the account's"
                    f" balance of {available} {d.amount.currency}"
                    f" valid at {event.time.isoformat()}",
                )
                continue
            txn_id = f"{event.tenant}/redeem/{event.id}"
            b.txns.append(
                (
                    books.redeem(txn_id, event.tenant, event.subject, d.amount, d.invoice_id),
                    event.time,
                )
            )
            spent = dict(plan)
            accounts[(event.tenant, event.subject)] = [
                books.OpenCredit(c.credit_id, c.remaining - spent.get(c.credit_id, 0), c.expires_at)
                for c in accounts[(event.tenant, event.subject)]
            ]
            b.moves += [(txn_id, cid, "redeemed", amount) for cid, amount in plan]
            await self._give_back(b, event.tenant, item.partition, d.amount)
            redemptions.append(
                {
                    "tenant": event.tenant,
                    "event_id": event.id,
                    "account": event.subject,
                    "credit_id": d.credit_id,
                    "invoice_id": d.invoice_id,
                    "amount": d.amount.amount,
                    "currency": d.amount.currency,
                    "at": event.time,
                }
            )
        await b.repo.insert_redemptions(redemptions)

    async def _give_back(self, b: Books, tenant: str, partition: int, amount: Money) -> None:
        cap = self.program.liability_cap
        if cap is None or cap.currency != amount.currency:
            return
        key = BudgetKey(tenant, "liability", "-", amount.currency)
        await b.budgets.ensure(key, partition, cap.amount, 0)
        b.budgets.give_back(key, partition, amount.amount)

    async def _expire(self, clocks: dict[tuple[str, int], datetime], b: Books) -> None:
        """Breakage at each credit's expiry, and rejection of approvals nobody gave in
        time, as the partition's stream time passes them."""
        for row in await b.repo.due_credits(clocks):
            left = row["amount"] - row["redeemed"] - row["expired"]
            money = Money(amount=left, currency=row["currency"])
            txn_id = f"{row['tenant']}/expire/{row['credit_id']}"
            b.txns.append(
                (
                    books.expire(txn_id, row["tenant"], row["account"], money, row["credit_id"]),
                    row["expires_at"],
                )
            )
            b.moves.append((txn_id, row["credit_id"], "expired", left))
            await self._give_back(b, row["tenant"], row["partition"], money)
            # billing drops what is left of the credit: it can no longer be applied
            b.uow.publish("credits.decisions", expired_event(row, money))
        for row in await b.repo.due_approvals(clocks):
            b.refuse_pending(
                row,
                row["approval_expires_at"],
                "expired",
                f"nobody approved it by {row['approval_expires_at'].isoformat()}",
            )

    async def _profiles(self, items: list[Inbound], b: Books) -> None:
        newest: dict[AccountKey, SegmentEntered | SegmentExited] = {}
        for item in items:
            event = item.event
            assert isinstance(event, SegmentEntered | SegmentExited)
            key = (event.tenant, event.subject)
            if key not in newest or newest[key].time <= event.time:
                newest[key] = event
        rows = []
        for (tenant, account), event in newest.items():
            data = event.data
            arr = data.features.arr
            rows.append(
                {
                    "tenant": tenant,
                    "account": account,
                    "arr": arr.amount if arr else None,
                    "currency": arr.currency if arr else None,
                    "segments": list(data.segments),
                    "as_of": event.time,
                }
            )
        await b.repo.save_profiles(rows)
