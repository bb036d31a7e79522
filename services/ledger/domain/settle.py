"""What a ledger decision books and says, as pure functions: the postings, the
credit, the decision row, the audit and the event of a grant, a refusal or a
hold (:func:`settle`), of a pending grant refused by an approver or by time
(:func:`refusal`), and of a credit's expiry (:func:`expired_event`).

Four eyes: a hold records how many different approvers it needs (one, or two
above ``approvals.second_approver_above``). :func:`approval_step` says what an
approval does to it: the last one needed decides it through :func:`settle` like
a single approval; an earlier one is only audited (:func:`first_approval`: no
booking, no event, still pending); the same approver again changes nothing.

The caps are weighed in ``decide.py``; the consumer and the approval endpoint load
what a decision needs, call these, and write what they return (``handlers.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from schemas import Event, Money
from schemas.events import (
    CreditExpired,
    CreditExpiredData,
    CreditGranted,
    CreditGrantedData,
    CreditPendingApproval,
    CreditPendingApprovalData,
    CreditRejected,
    CreditRejectedData,
    OfferIssued,
)
from services.ledger.domain import books
from services.ledger.domain.decide import GrantRequest, Verdict, approvals_needed
from services.ledger.domain.program import LedgerProgram

SOURCE = "loyalty/ledger"
_IDS = uuid.UUID("a3d1c7e2-9b44-4f0e-b6c5-7e2d9f1a0c03")


@dataclass(frozen=True)
class Approval:
    """A human's approval (or rejection) of a pending grant: ``actor`` is the key's
    holder; ``earlier`` who approved it before (the first of two approvers), so the
    books name every approver of a four-eyes grant."""

    actor: str
    comment: str | None
    earlier: tuple[str, ...] = ()


ApprovalStep = Literal["repeat", "recorded", "decide"]
"""What an approval of a pending grant does: ``repeat`` (this holder approved it
already: nothing changes), ``recorded`` (another approver is still needed: audited
only), ``decide`` (the last approval needed: caps re-checked, granted or refused)."""

FIRST_OF_TWO = "first of two approvals; a second, different approver is needed"


def approval_step(needed: int, approved_by: Sequence[str], actor: str) -> ApprovalStep:
    """``actor``'s approval of a pending grant that needs ``needed`` different
    approvers and was approved by ``approved_by`` so far."""
    if actor in approved_by:
        return "repeat"
    if len(approved_by) + 1 < needed:
        return "recorded"
    return "decide"


def first_approval(tenant: str, offer_id: str, approval: Approval) -> dict[str, Any]:
    """The audit row of an approval that leaves the grant pending for a second,
    different approver; it books and publishes nothing."""
    return {
        "tenant": tenant,
        "offer_id": offer_id,
        "action": "approve",
        "actor": approval.actor,
        "comment": approval.comment,
        "outcome": "pending",
        "detail": FIRST_OF_TWO,
    }


@dataclass
class Settlement:
    """Everything one decision writes, and the event it publishes."""

    event: Event
    txns: list[tuple[books.Transaction, datetime]] = field(default_factory=list)
    credits: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # new decision rows
    settled: list[dict[str, Any]] = field(default_factory=list)  # pending rows settled
    audit: list[dict[str, Any]] = field(default_factory=list)


def settle(
    program: LedgerProgram,
    req: GrantRequest,
    verdict: Verdict,
    at: datetime,
    partition: int,
    offer: OfferIssued,
    approval: Approval | None = None,
) -> Settlement:
    """What ``verdict`` on ``req`` at stream time ``at`` books: for a grant the
    expense, the credit and (after an approval) the release of its hold; for a
    refusal after an approval the release; for a hold the set-aside; and the
    decision row, the audit and the event on ``credits.decisions``."""
    txns: list[tuple[books.Transaction, datetime]] = []
    credits: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    settled: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    tier = program.tier_of(list(req.segments))
    who = {"actor": approval.actor, "comment": approval.comment} if approval else {}
    if verdict.outcome == "grant":
        grant = books.grant(
            f"{req.tenant}/grant/{req.offer_id}",
            req.tenant,
            req.account,
            req.value,
            req.cost,
            _what(req),
        )
        expires_at = None
        if req.value is not None:
            days = req.expires_days
            expires_at = at + (timedelta(days=days) if days else program.credits_expire_in)
            credits.append(
                {
                    "credit_id": req.offer_id,
                    "offer_id": req.offer_id,
                    "tenant": req.tenant,
                    "account": req.account,
                    "amount": req.value.amount,
                    "currency": req.value.currency,
                    "granted_at": at,
                    "expires_at": expires_at,
                    "partition": partition,
                    "kind": req.kind,
                    "tier": tier,
                }
            )
        if approval is not None:
            approvers = ", then ".join((*approval.earlier, approval.actor))
            grant = books.release(
                f"{req.tenant}/approve/{req.offer_id}",
                req.tenant,
                req.account,
                _held(req),
                grant,
                f"approved {_what(req)} by {approvers}",
            )
        if grant is not None:
            txns.append((grant, at))
        event: Event = CreditGranted(
            **_envelope(req, "credit.granted", at),
            data=CreditGrantedData(
                # one credit per offer, named by it: billing's credit_applied names the
                # offer too, which is how the offers service learns it was redeemed
                credit_id=req.offer_id,
                offer_id=req.offer_id,
                amount=req.value or Money(amount=0, currency=req.cost.currency),
                expires_at=expires_at,
                kind=req.kind,
                cost=req.cost,
                approval_id=req.offer_id if approval else None,
                **who,
            ),
        )
        status = "granted"
    elif verdict.outcome == "reject":
        if approval is not None:
            txns += _release(req, at, f"rejected by caps at approval: {_what(req)}")
        event = _rejected(req, at, verdict, approval)
        status = "rejected"
    else:
        expires = at + program.approval_window
        hold = books.hold(
            f"{req.tenant}/hold/{req.offer_id}", req.tenant, req.account, _held(req), _what(req)
        )
        if hold is not None:
            txns.append((hold, at))
        event = CreditPendingApproval(
            **_envelope(req, "credit.pending_approval", at),
            data=CreditPendingApprovalData(
                approval_id=req.offer_id,
                offer_id=req.offer_id,
                amount=req.value or Money(amount=0, currency=req.cost.currency),
                kind=req.kind,
                cost=req.cost,
                reason=verdict.reason,
                expires_at=expires,
            ),
        )
        status = "pending"
        audit.append(_audit(req.tenant, req.offer_id, "requested", None, None, verdict))
    row = {
        "tenant": req.tenant,
        "offer_id": req.offer_id,
        "status": status,
        "cap": verdict.cap,
        "headroom": verdict.headroom.amount if verdict.headroom else None,
        "reason": verdict.reason,
        "decided_at": at,
        "actor": approval.actor if approval else None,
        "comment": approval.comment if approval else None,
        "answer": event.model_dump_json(),
    }
    if approval is not None:
        settled.append(row)
        audit.append(
            _audit(req.tenant, req.offer_id, "approve", approval.actor, approval.comment, verdict)
        )
    else:
        decisions.append(
            {
                **row,
                "account": req.account,
                "partition": partition,
                "rule": req.rule,
                "kind": req.kind,
                "value": req.value.amount if req.value else None,
                "value_currency": req.value.currency if req.value else None,
                "cost": req.cost.amount,
                "currency": req.cost.currency,
                "tier": tier,
                "segments": list(req.segments),
                "arr": req.arr.amount if req.arr else None,
                "offered_at": req.at,
                "approval_expires_at": at + program.approval_window
                if status == "pending"
                else None,
                "approvals_needed": approvals_needed(program, req) if status == "pending" else 1,
                "offer": offer.model_dump_json(),
            }
        )
    return Settlement(event, txns, credits, decisions, settled, audit)


def refusal(
    row: dict[str, Any],
    at: datetime,
    action: str,
    reason: str,
    approval: Approval | None = None,
) -> Settlement:
    """A pending decision (its stored ``row``) settled as rejected at ``at``: by an
    approver, or by expiry (``action``)."""
    offer = OfferIssued.model_validate_json(json.dumps(row["offer"]))
    req = GrantRequest.of(offer)
    verdict = Verdict("reject", reason)
    event = _rejected(req, at, verdict, approval)
    out = Settlement(event=event, txns=_release(req, at, f"{action}: {_what(req)}"))
    out.settled.append(
        {
            "tenant": req.tenant,
            "offer_id": req.offer_id,
            "status": "rejected",
            "cap": None,
            "headroom": None,
            "reason": reason,
            "decided_at": at,
            "actor": approval.actor if approval else None,
            "comment": approval.comment if approval else None,
            "answer": event.model_dump_json(),
        }
    )
    out.audit.append(
        _audit(
            req.tenant,
            req.offer_id,
            action,
            approval.actor if approval else None,
            approval.comment if approval else None,
            verdict,
        )
    )
    return out


def _release(
    req: GrantRequest, at: datetime, what: str
) -> list[tuple[books.Transaction, datetime]]:
    txn = books.release(
        f"{req.tenant}/release/{req.offer_id}", req.tenant, req.account, _held(req), None, what
    )
    return [] if txn is None else [(txn, at)]


def expired_event(credit: dict[str, Any], left: Money) -> CreditExpired:
    """``credit.expired`` for a credit row at its expiry (its id derives from the
    credit, so a replay publishes the same event)."""
    tenant, credit_id = credit["tenant"], credit["credit_id"]
    return CreditExpired(
        id=str(uuid.uuid5(_IDS, f"{tenant}/{credit_id}/credit.expired")),
        source=SOURCE,
        type="credit.expired",
        subject=credit["account"],
        tenant=tenant,
        time=credit["expires_at"],
        data=CreditExpiredData(
            credit_id=credit_id,
            offer_id=credit["offer_id"],
            amount=left,
            expires_at=credit["expires_at"],
        ),
    )


def _held(req: GrantRequest) -> Money:
    """What a hold sets aside: the credit, for a credit (other rewards hold nothing)."""
    return req.value or Money(amount=0, currency=req.cost.currency)


def _what(req: GrantRequest) -> str:
    return f"{req.kind} for offer {req.offer_id} ({req.rule})"


def _envelope(req: GrantRequest, type_: str, at: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(_IDS, f"{req.tenant}/{req.offer_id}/{type_}")),
        "source": SOURCE,
        "type": type_,
        "subject": req.account,
        "tenant": req.tenant,
        "time": at,
    }


def _rejected(
    req: GrantRequest, at: datetime, verdict: Verdict, approval: Approval | None
) -> CreditRejected:
    return CreditRejected(
        **_envelope(req, "credit.rejected", at),
        data=CreditRejectedData(
            offer_id=req.offer_id,
            amount=req.value or Money(amount=0, currency=req.cost.currency),
            reason=verdict.reason,
            kind=req.kind,
            cost=req.cost,
            cap=verdict.cap,
            headroom=verdict.headroom,
            approval_id=req.offer_id if approval else None,
            actor=approval.actor if approval else None,
            comment=approval.comment if approval else None,
        ),
    )


def _audit(
    tenant: str,
    offer_id: str,
    action: str,
    actor: str | None,
    comment: str | None,
    verdict: Verdict,
) -> dict[str, Any]:
    outcome = {"grant": "granted", "reject": "rejected", "pending": "pending"}[verdict.outcome]
    return {
        "tenant": tenant,
        "offer_id": offer_id,
        "action": action,
        "actor": actor,
        "comment": comment,
        "outcome": outcome,
        "detail": verdict.reason,
    }
