"""Tenant-scoped ledger API: approvals (four eyes above
``approvals.second_approver_above``), an account's credit statement, and the
finance reports (liability, breakage and redemption, cost share of ARR), each
as JSON or, with ``?format=csv``, as CSV."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CreditGranted, CreditPendingApproval, CreditRejected, OfferIssued
from services.ledger.adapters.db import PostgresLedgerRepository
from services.ledger.domain.decide import GrantRequest, Room, rooms, window_cost
from services.ledger.domain.program import LedgerProgram
from services.ledger.domain.settle import Approval, approval_step
from services.ledger.handlers import Books
from services.runtime.batch import UnitOfWork
from services.runtime.errors import is_transient
from services.runtime.problems import problems
from services.runtime.service import (
    TENANT_PROBLEMS,
    ApproverDep,
    Format,
    PathId,
    PlainText,
    ServiceRuntime,
    TenantDep,
    csv_response,
    with_csv,
)

router = APIRouter(prefix="/v1", responses=TENANT_PROBLEMS)
_NO_APPROVAL = {404: "no approval of this id in the tenant"}
_SETTLE_PROBLEMS = problems(
    {**_NO_APPROVAL, 409: "the approval was settled otherwise already, or it expired"}
)


class Decision(BaseModel):
    """Why an approver decided so (recorded with the decision). Who decided is the
    holder of the ``approve`` key, never a name in the body."""

    model_config = ConfigDict(extra="forbid")
    comment: PlainText | None = None


CreditAnswer = Annotated[
    CreditGranted | CreditRejected | CreditPendingApproval, Field(discriminator="type")
]
"""What the ledger published on ``credits.decisions`` for the offer."""
DecisionStatus = Literal["granted", "rejected", "pending"]


class CapRoom(BaseModel):
    """One cap a pending grant counts against, as it stands at the ledger's stream
    time for the grant's partition."""

    cap: str = Field(description="The cap, as decisions name it (e.g. 'program cap').")
    period: str = Field(
        description="YYYY-MM for a monthly cap, '-' for the liability ceiling, 'rolling'"
        " for the account cap (its rolling window)."
    )
    currency: str
    limit: int = Field(description="The cap, minor units.")
    used: int = Field(description="Used so far, minor units (all partitions together).")
    left: int = Field(description="limit - used, never below 0.")
    needs: int = Field(description="What this grant would take from it.")
    binds: bool = Field(description="Approving now would be refused by this cap.")


class ApprovalPublic(BaseModel):
    """A grant that needed (or needs) a human."""

    approval_id: str = Field(description="The offer's id.")
    account: str
    rule: str
    kind: str = Field(description="The reward kind.")
    status: DecisionStatus
    value: int | None = Field(description="The credit, minor units of currency.")
    cost: int = Field(description="Discount-equivalent cost, minor units of currency.")
    currency: str
    reason: str
    requested_at: datetime
    expires_at: datetime = Field(description="Refused as expired unless decided by then.")
    approvals_needed: int = Field(
        description="How many different approvers it needs: 2 when it cost more than"
        " approvals.second_approver_above when it was held, else 1."
    )
    approved_by: list[str] = Field(
        description="Who approved it so far, in order (the keys' holders)."
    )
    actor: str | None = Field(
        description="Who decided it: the approver whose approval granted it (or saw it"
        " refused by a cap), or who rejected it (the key's holder)."
    )
    comment: str | None = Field(description="That decider's comment.")
    headroom: list[CapRoom] = Field(
        description="For a pending grant, each cap it counts against and what is left"
        " of it now, in the order an approval checks them; empty once decided."
    )


class ApprovalList(BaseModel):
    approvals: list[ApprovalPublic] = Field(description="Oldest first, at most 1,000.")


class AuditEntry(BaseModel):
    action: str = Field(description="requested, approve, reject or expired.")
    actor: str | None
    comment: str | None
    outcome: str = Field(
        description="pending, granted or rejected (an approve that left it pending is the"
        " first of two approvals)."
    )
    detail: str
    at: datetime


class ApprovalDetail(ApprovalPublic):
    audit: list[AuditEntry]


class Settled(BaseModel):
    """What an approval or a rejection did. ``pending`` (answered 202) means the
    approval was recorded as the first of two and a second, different approver is
    needed; ``answer`` is then the ``credit.pending_approval`` still in force."""

    approval_id: str
    status: DecisionStatus
    answer: CreditAnswer
    approvals_needed: int = Field(description="How many different approvers it needs (1 or 2).")
    approved_by: list[str] = Field(description="Who approved it so far, in order.")


class CreditMove(BaseModel):
    kind: Literal["redeemed", "expired"]
    amount: int
    at: datetime
    description: str
    txn_id: str


class CreditPublic(BaseModel):
    credit_id: str
    offer_id: str
    kind: str | None
    tier: str | None = Field(description="The usage tier the credit was granted in.")
    amount: int
    currency: str
    granted_at: datetime
    expires_at: datetime | None
    redeemed: int
    expired: int
    remaining: int
    redemptions: list[CreditMove]
    expiries: list[CreditMove]


class Statement(BaseModel):
    """An account's credit, in minor units per currency."""

    account: str
    balance: dict[str, int]
    pending_approval: dict[str, int]
    credits: list[CreditPublic]


class LiabilityRow(BaseModel):
    dimension: Literal["tier", "expiry_month"]
    key: str = Field(description="The tier ('none' without), or YYYY-MM ('never').")
    currency: str
    outstanding: int
    credits: int


class Liability(BaseModel):
    liability: list[LiabilityRow]


class CreditsRow(BaseModel):
    currency: str
    credits: int
    granted: int
    redeemed: int
    expired: int
    outstanding: int
    redemption_rate: float | None = Field(description="redeemed / granted")
    breakage_rate: float | None = Field(description="expired / (redeemed + expired)")


class CreditsReport(BaseModel):
    credits: list[CreditsRow]


class CostShareRow(BaseModel):
    segment: str
    currency: str
    accounts: int
    arr: int
    cost: int
    cost_share_of_arr: float | None


class CostShare(BaseModel):
    segments: list[CostShareRow]


class DecisionsRow(BaseModel):
    status: DecisionStatus
    cap: str = Field(description="The cap that bound ('' for none).")
    currency: str
    decisions: int
    cost: int


class DecisionsReport(BaseModel):
    decisions: list[DecisionsRow]


class BalanceRow(BaseModel):
    ledger_account: str = Field(description="The ledger account kind (customer ones summed).")
    currency: str
    balance: int


class Balances(BaseModel):
    balances: list[BalanceRow]


def _table(rows: list[dict[str, Any]], fmt: Format, name: str) -> Any:
    if fmt == "json":
        return {name: rows}
    return csv_response(rows)


async def _read(request: Request, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with request.app.state.runtime.engine.connect() as conn:
        result = await conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


@asynccontextmanager
async def _snapshot(request: Request) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction whose reads all see one snapshot (REPEATABLE READ)."""
    async with request.app.state.runtime.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


async def _rows(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in await conn.execute(text(sql), params)]


_APPROVALS = (
    "SELECT d.*, array(SELECT a.actor FROM approval_audit a WHERE a.tenant = d.tenant"
    " AND a.offer_id = d.offer_id AND a.action = 'approve' ORDER BY a.id) AS approved_by"
    " FROM decisions d WHERE d.tenant = :t AND d.approval_expires_at IS NOT NULL"
)
"""Decisions that asked for a human, with who approved them so far (the audit)."""


def _approval_view(row: dict[str, Any], headroom: list[Room] | None = None) -> dict[str, Any]:
    return {
        "approval_id": row["offer_id"],
        "account": row["account"],
        "rule": row["rule"],
        "kind": row["kind"],
        "status": row["status"],
        "value": row["value"],
        "cost": row["cost"],
        "currency": row["currency"],
        "reason": row["reason"],
        "requested_at": row["offered_at"],
        "expires_at": row["approval_expires_at"],
        "approvals_needed": row["approvals_needed"],
        "approved_by": row["approved_by"],
        "actor": row["actor"],
        "comment": row["comment"],
        "headroom": [
            {
                "cap": r.cap,
                "period": r.period,
                "currency": r.limit.currency,
                "limit": r.limit.amount,
                "used": r.used,
                "left": r.left,
                "needs": r.needs,
                "binds": r.binds,
            }
            for r in headroom or ()
        ],
    }


async def _headroom(
    conn: AsyncConnection, program: LedgerProgram, tenant: str, rows: list[dict[str, Any]]
) -> dict[str, list[Room]]:
    """The caps' headroom of each pending grant of ``rows`` (by offer id), at its
    partition's stream time: three reads whatever the number of grants."""
    pending = [r for r in rows if r["status"] == "pending"]
    if not pending:
        return {}
    repo = PostgresLedgerRepository(conn)
    clocks = await repo.clocks(tenant)
    used = await repo.budgets_used(tenant)
    asks = []
    for row in pending:
        req = GrantRequest.of(OfferIssued.model_validate_json(json.dumps(row["offer"])))
        asks.append((row["offer_id"], req, _decision_time(row, clocks.get(row["partition"]))))
    since = min(at for _, _, at in asks) - program.account_window
    costs = await repo.account_costs({(tenant, req.account) for _, req, _ in asks}, since)
    return {
        offer_id: rooms(
            program, req, at, used, window_cost(program, req, at, costs[(tenant, req.account)])
        )
        for offer_id, req, at in asks
    }


def _decision_time(row: dict[str, Any], clock: datetime | None) -> datetime:
    """When a held grant is weighed again: its partition's stream time, never
    before it was offered."""
    offered: datetime = row["offered_at"]
    return max(clock or offered, offered)


@router.get("/approvals")
async def approvals(
    tenant: TenantDep, request: Request, status: Literal["pending", "all"] = "pending"
) -> ApprovalList:
    """Grants waiting for a human (or, with ``status=all``, every grant that did)."""
    async with _snapshot(request) as conn:
        rows = await _rows(
            conn,
            _APPROVALS
            + (" AND d.status = 'pending'" if status == "pending" else "")
            + " ORDER BY d.offered_at, d.offer_id LIMIT 1000",
            {"t": tenant},
        )
        room = await _headroom(conn, request.app.state.program, tenant, rows)
    return ApprovalList.model_validate(
        {"approvals": [_approval_view(r, room.get(r["offer_id"])) for r in rows]}
    )


@router.get("/approvals/{approval_id}", responses=problems(_NO_APPROVAL))
async def approval(approval_id: PathId, tenant: TenantDep, request: Request) -> ApprovalDetail:
    async with _snapshot(request) as conn:
        rows = await _rows(
            conn, _APPROVALS + " AND d.offer_id = :o", {"t": tenant, "o": approval_id}
        )
        if not rows:
            raise HTTPException(404, f"no approval {approval_id!r} in this tenant")
        audit = await _rows(
            conn,
            "SELECT action, actor, comment, outcome, detail, at FROM approval_audit"
            " WHERE tenant = :t AND offer_id = :o ORDER BY id",
            {"t": tenant, "o": approval_id},
        )
        room = await _headroom(conn, request.app.state.program, tenant, rows)
    return ApprovalDetail.model_validate(
        {**_approval_view(rows[0], room.get(approval_id)), "audit": audit}
    )


async def _settle(
    runtime: ServiceRuntime,
    program: Any,
    tenant: str,
    approval_id: str,
    action: Literal["approve", "reject"],
    who: Approval,
) -> dict[str, Any]:
    async with runtime.engine.begin() as conn:
        repo = PostgresLedgerRepository(conn)
        row = await repo.decision(tenant, approval_id, lock=True)
        if row is None or row["approval_expires_at"] is None:
            raise HTTPException(404, f"no approval {approval_id!r} in this tenant")
        if row["status"] != "pending":
            if await repo.last_action(tenant, approval_id) == action:
                return await _answer(repo, row)  # a repeat: the first answer stands
            raise HTTPException(409, f"approval {approval_id} was already settled: {row['status']}")
        # act as the owner of the offer's partition: the consumer of that partition
        # holds this lock for each batch, so the caps see one writer at a time
        await conn.execute(
            text(
                "SELECT 1 FROM consumer_offsets WHERE topic = :topic AND partition = :p FOR UPDATE"
            ),
            {"topic": runtime.names.physical("offers.decisions"), "p": row["partition"]},
        )
        at = _decision_time(row, await repo.clock(tenant, row["partition"]))
        uow = UnitOfWork(conn, runtime.names, runtime.spec.name)
        books = Books(uow, program)
        expired = row["approval_expires_at"] <= at
        if expired:
            books.refuse_pending(
                row,
                row["approval_expires_at"],
                "expired",
                f"nobody approved it by {row['approval_expires_at'].isoformat()}",
            )
        elif action == "approve":
            approved_by = await repo.approvers(tenant, approval_id)
            step = approval_step(row["approvals_needed"], approved_by, who.actor)
            if step == "decide":
                offer = OfferIssued.model_validate_json(json.dumps(row["offer"]))
                req = GrantRequest.of(offer)
                await books.load([(req, row["partition"], at)])
                await books.decide(
                    req, row["partition"], at, offer, replace(who, earlier=tuple(approved_by))
                )
            elif step == "recorded":  # the first of two: audited, still pending
                books.record_approval(row, who)
            # "repeat": this holder approved it already; the same answer, nothing new
        else:
            reason = f"rejected by {who.actor}" + (f": {who.comment}" if who.comment else "")
            books.refuse_pending(row, at, "reject", reason, who)
        await books.flush()
        await uow.flush()
        settled = await repo.decision(tenant, approval_id)
        assert settled is not None
        answer = await _answer(repo, settled)
    runtime.relay.wake()
    if expired:
        raise HTTPException(409, f"approval {approval_id} expired at {row['approval_expires_at']}")
    return answer


async def _answer(repo: PostgresLedgerRepository, row: dict[str, Any]) -> dict[str, Any]:
    """A decision row as :class:`Settled`."""
    return {
        "approval_id": row["offer_id"],
        "status": row["status"],
        "answer": row["answer"],
        "approvals_needed": row["approvals_needed"],
        "approved_by": await repo.approvers(row["tenant"], row["offer_id"]),
    }


async def _settle_with_retry(
    request: Request,
    tenant: str,
    approval_id: str,
    action: Literal["approve", "reject"],
    who: Approval,
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    for attempt in range(5):
        try:
            return await _settle(
                runtime, request.app.state.program, tenant, approval_id, action, who
            )
        except Exception as exc:  # a deadlock with a pooling batch: retry, it is rare
            if not is_transient(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


@router.post(
    "/approvals/{approval_id}/approve",
    responses={
        202: {
            "model": Settled,
            "description": "Recorded as the first of two approvals (four eyes): still"
            " pending, a second, different approver is needed; nothing was booked",
        },
        **_SETTLE_PROBLEMS,
    },
)
async def approve(
    approval_id: PathId,
    caller: ApproverDep,
    request: Request,
    response: Response,
    body: Decision | None = None,
) -> Settled:
    """The last approval a grant needs re-checks every cap now, then grants (or
    rejects, naming the cap): 200. Above ``approvals.second_approver_above`` a grant
    needs two different approvers: the first approval is audited and answered 202,
    still pending (the same holder again gets the same 202). A repeat returns the
    first answer; 409 once it was settled otherwise or expired. The audit records
    the key's holder as the approver."""
    who = Approval(caller.holder, body.comment if body else None)
    settled = Settled.model_validate(
        await _settle_with_retry(request, caller.tenant, approval_id, "approve", who)
    )
    if settled.status == "pending":
        response.status_code = 202
    return settled


@router.post("/approvals/{approval_id}/reject", responses=_SETTLE_PROBLEMS)
async def reject(
    approval_id: PathId, caller: ApproverDep, request: Request, body: Decision | None = None
) -> Settled:
    """Rejects a pending grant, releasing what it held; the audit records the
    key's holder. A repeat returns the first answer; 409 once settled otherwise."""
    who = Approval(caller.holder, body.comment if body else None)
    return Settled.model_validate(
        await _settle_with_retry(request, caller.tenant, approval_id, "reject", who)
    )


# ---------------------------------------------------------------- statements


@router.get(
    "/accounts/{account_id}/credits",
    responses=problems({404: "the account has no credit (granted or pending) in the tenant"}),
)
async def statement(account_id: PathId, tenant: TenantDep, request: Request) -> Statement:
    """Balance per currency, credit pending approval, and every credit with its
    grant, redemptions and expiry."""
    params = {"t": tenant, "a": account_id}
    # one snapshot: a booking between two of these reads (a redemption, say) would
    # show its move with the balance from before it
    async with _snapshot(request) as conn:
        balances = await _rows(
            conn,
            "SELECT currency, -sum(amount) AS balance FROM entries WHERE tenant = :t"
            " AND ledger_account = 'customer_credit:' || :a GROUP BY currency ORDER BY currency",
            params,
        )
        pending = await _rows(
            conn,
            "SELECT currency, -sum(amount) AS pending FROM entries WHERE tenant = :t"
            " AND ledger_account = 'pending_credit:' || :a GROUP BY currency ORDER BY currency",
            params,
        )
        credits = await _rows(
            conn,
            "SELECT credit_id, offer_id, kind, tier, amount, currency, granted_at, expires_at,"
            " redeemed, expired, amount - redeemed - expired AS remaining FROM credits"
            " WHERE tenant = :t AND account = :a ORDER BY granted_at, credit_id",
            params,
        )
        moves = await _rows(
            conn,
            "SELECT m.credit_id, m.kind, m.amount, t.booked_at AS at, t.description, m.txn_id"
            " FROM credit_moves m JOIN transactions t USING (txn_id)"
            " JOIN credits c USING (credit_id)"
            " WHERE c.tenant = :t AND c.account = :a ORDER BY t.booked_at, m.txn_id",
            params,
        )
    by_credit: dict[str, list[dict[str, Any]]] = {}
    for m in moves:
        by_credit.setdefault(m.pop("credit_id"), []).append(m)
    if not credits and not balances and not pending:
        raise HTTPException(404, f"account {account_id!r} has no credit in this tenant")
    return Statement.model_validate(
        {
            "account": account_id,
            "balance": {b["currency"]: int(b["balance"]) for b in balances},
            "pending_approval": {p["currency"]: int(p["pending"]) for p in pending},
            "credits": [
                {
                    **c,
                    "redemptions": [
                        m for m in by_credit.get(c["credit_id"], []) if m["kind"] == "redeemed"
                    ],
                    "expiries": [
                        m for m in by_credit.get(c["credit_id"], []) if m["kind"] == "expired"
                    ],
                }
                for c in credits
            ],
        }
    )


# ---------------------------------------------------------------- reports


@router.get(
    "/reports/liability",
    response_model=Liability,
    responses=with_csv("the report, or its rows as CSV"),
)
async def liability(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Outstanding credit (granted - redeemed - expired) by usage tier and by
    expiry month."""
    rows = await _read(
        request,
        "SELECT 'tier' AS dimension, coalesce(tier, 'none') AS key, currency,"
        " sum(amount - redeemed - expired) AS outstanding, count(*) AS credits"
        " FROM credits WHERE tenant = :t AND redeemed + expired < amount"
        " GROUP BY 2, 3"
        " UNION ALL SELECT 'expiry_month', coalesce(to_char(expires_at AT TIME ZONE 'UTC',"
        " 'YYYY-MM'), 'never'), currency, sum(amount - redeemed - expired), count(*)"
        " FROM credits WHERE tenant = :t AND redeemed + expired < amount GROUP BY 2, 3"
        " ORDER BY 1 DESC, 2, 3",
        {"t": tenant},
    )
    return _table([{**r, "outstanding": int(r["outstanding"])} for r in rows], format, "liability")


@router.get(
    "/reports/credits",
    response_model=CreditsReport,
    responses=with_csv("the report, or its rows as CSV"),
)
async def credit_report(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Per currency: granted, redeemed, expired (breakage) and outstanding, with
    the redemption rate (redeemed / granted) and the breakage rate (expired /
    what has been settled: redeemed + expired)."""
    rows = await _read(
        request,
        "SELECT currency, count(*) AS credits, sum(amount) AS granted, sum(redeemed) AS redeemed,"
        " sum(expired) AS expired, sum(amount - redeemed - expired) AS outstanding"
        " FROM credits WHERE tenant = :t GROUP BY currency ORDER BY currency",
        {"t": tenant},
    )
    out = []
    for r in rows:
        granted, redeemed, expired = int(r["granted"]), int(r["redeemed"]), int(r["expired"])
        out.append(
            {
                "currency": r["currency"],
                "credits": r["credits"],
                "granted": granted,
                "redeemed": redeemed,
                "expired": expired,
                "outstanding": int(r["outstanding"]),
                "redemption_rate": round(redeemed / granted, 4) if granted else None,
                "breakage_rate": round(expired / (redeemed + expired), 4)
                if redeemed + expired
                else None,
            }
        )
    return _table(out, format, "credits")


@router.get(
    "/reports/cost-share",
    response_model=CostShare,
    responses=with_csv("the report, or its rows as CSV"),
)
async def cost_share(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Per segment, for the accounts in it now: reward cost granted in the last
    365 days of stream time as a share of their ARR."""
    rows = await _read(
        request,
        "WITH now_ AS (SELECT coalesce(max(at), now()) AS at FROM ledger_clocks"
        "  WHERE tenant = :t),"
        " cost AS (SELECT account, currency, sum(cost) AS cost FROM decisions, now_"
        "  WHERE tenant = :t AND status = 'granted' AND decided_at > now_.at - interval '365 days'"
        "  GROUP BY 1, 2)"
        " SELECT s.segment, p.currency, count(*) AS accounts, sum(p.arr) AS arr,"
        " coalesce(sum(c.cost), 0) AS cost"
        " FROM account_profiles p CROSS JOIN unnest(p.segments) AS s(segment)"
        " LEFT JOIN cost c ON c.account = p.account AND c.currency = p.currency"
        " WHERE p.tenant = :t AND p.currency IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        {"t": tenant},
    )
    out = [
        {
            "segment": r["segment"],
            "currency": r["currency"],
            "accounts": r["accounts"],
            "arr": int(r["arr"] or 0),
            "cost": int(r["cost"]),
            "cost_share_of_arr": round(int(r["cost"]) / int(r["arr"]), 6) if r["arr"] else None,
        }
        for r in rows
    ]
    return _table(out, format, "segments")


@router.get(
    "/reports/decisions",
    response_model=DecisionsReport,
    responses=with_csv("the report, or its rows as CSV"),
)
async def decisions_report(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Decisions by status and by the cap that bound, with their cost."""
    rows = await _read(
        request,
        "SELECT status, coalesce(cap, '') AS cap, currency, count(*) AS decisions,"
        " sum(cost) AS cost FROM decisions WHERE tenant = :t GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        {"t": tenant},
    )
    return _table([{**r, "cost": int(r["cost"])} for r in rows], format, "decisions")


@router.get(
    "/reports/balances",
    response_model=Balances,
    responses=with_csv("the report, or its rows as CSV"),
)
async def balances(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """The trial balance: every ledger account kind's balance (customer accounts
    summed); it sums to zero per currency."""
    rows = await _read(
        request,
        "SELECT split_part(ledger_account, ':', 1) AS ledger_account, currency,"
        " sum(amount) AS balance FROM entries WHERE tenant = :t GROUP BY 1, 2 ORDER BY 2, 1",
        {"t": tenant},
    )
    return _table([{**r, "balance": int(r["balance"])} for r in rows], format, "balances")
