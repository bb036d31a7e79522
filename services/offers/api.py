"""Tenant-scoped offers API: an account's offers and suppressions, accepting and
declining an offer, and a per-rule summary with the holdout share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Explanation, Reward
from services.offers.adapters.db import PostgresOfferRepository
from services.offers.domain.engine import reason_kind
from services.offers.domain.lifecycle import status_event
from services.offers.domain.records import ALLOWED_FROM, StatusChange
from services.runtime.batch import UnitOfWork
from services.runtime.problems import problems
from services.runtime.service import TENANT_PROBLEMS, IngestDep, PathId, PlainText, TenantDep

router = APIRouter(prefix="/v1", responses=TENANT_PROBLEMS)

OfferStatus = Literal["issued", "held_out", "accepted", "declined", "expired", "redeemed"]
_NO_OFFER = {404: "no offer of this id in the tenant"}


class Answer(BaseModel):
    """Why (recorded and published). Who answers for the customer is the holder of
    the key that posts it, never a name in the body."""

    model_config = ConfigDict(extra="forbid")
    comment: PlainText | None = None


class OfferPublic(BaseModel):
    """An offer and where it is in its lifecycle."""

    offer_id: str
    rule: str
    status: OfferStatus = Field(description="held_out: recorded for the holdout, never made.")
    reward: Reward | None
    user_id: str | None
    reason: str | None = Field(description="Why the offer was made, for people.")
    explanation: Explanation | None
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime | None
    actor: str | None = Field(description="Who accepted or declined it (the key's holder).")
    comment: str | None


class AccountOffer(OfferPublic):
    account: str


class Suppression(BaseModel):
    """A rule that matched a moment but was suppressed (contact policy) or lost it."""

    moment: str
    rule: str
    outcome: Literal["suppressed", "lost"]
    reason: str
    at: datetime


class AccountOffers(BaseModel):
    account: str
    offers: list[OfferPublic]
    suppressions: list[Suppression]


class RuleSummary(BaseModel):
    offers: dict[str, int] = Field(description="Offers by status.")
    cost: dict[str, int] = Field(
        description="Discount-equivalent cost by currency (minor units), held-out excluded."
    )
    suppressed: dict[str, int] = Field(
        description="Suppressions by '<outcome>: <kind of reason>' (a reason without its"
        " particulars: 'suppressed: cooldown 60d', 'lost: lost to <rule>',"
        " 'suppressed: contact policy: quiet period')."
    )


class OffersSummary(BaseModel):
    rules: dict[str, RuleSummary]
    decisions: int
    held_out: int
    holdout_share: float | None = Field(description="held_out / decisions; null with none.")


def _offer_view(row: dict[str, Any]) -> dict[str, Any]:
    decision = row.get("decision") or {}
    return {
        "offer_id": row["offer_id"],
        "rule": row["rule"],
        "status": row["status"],
        "reward": decision.get("reward"),
        "user_id": decision.get("user_id"),
        "reason": decision.get("reason"),
        "explanation": decision.get("explanation"),
        "issued_at": row["issued_at"],
        "expires_at": row["expires_at"],
        "updated_at": row["updated_at"],
        "actor": row["actor"],
        "comment": row["comment"],
    }


@router.get(
    "/accounts/{account_id}/offers",
    responses=problems({404: "no route matches (an id with a '/', say)"}),
)
async def account_offers(account_id: PathId, tenant: TenantDep, request: Request) -> AccountOffers:
    """Every offer made to the account (held-out ones included, marked by their
    status) with its explanation, and every rule that was suppressed or lost."""
    async with request.app.state.runtime.engine.connect() as conn:
        repo = PostgresOfferRepository(conn)
        offers = await repo.account_offers(tenant, account_id)
        suppressions = await repo.account_suppressions(tenant, account_id)
    return AccountOffers.model_validate(
        {
            "account": account_id,
            "offers": [_offer_view(o) for o in offers],
            "suppressions": suppressions,
        }
    )


@router.get("/offers/summary")
async def summary(tenant: TenantDep, request: Request) -> OffersSummary:
    """Per rule: offers by status with their discount-equivalent cost, the share
    held out, and suppressions by reason."""
    async with request.app.state.runtime.engine.connect() as conn:
        offers, suppressed = await PostgresOfferRepository(conn).summary(tenant)
    rules: dict[str, dict[str, Any]] = {}
    for rule, status, n, cost, currency in offers:
        r = rules.setdefault(rule, {"offers": {}, "cost": {}, "suppressed": {}})
        r["offers"][status] = r["offers"].get(status, 0) + n
        if status != "held_out":
            r["cost"][currency] = r["cost"].get(currency, 0) + int(cost)
    for rule, outcome, reason, n in suppressed:
        r = rules.setdefault(rule, {"offers": {}, "cost": {}, "suppressed": {}})
        key = f"{outcome}: {reason_kind(reason)}"
        r["suppressed"][key] = r["suppressed"].get(key, 0) + n
    total = sum(sum(r["offers"].values()) for r in rules.values())
    held = sum(r["offers"].get("held_out", 0) for r in rules.values())
    return OffersSummary.model_validate(
        {
            "rules": rules,
            "decisions": total,
            "held_out": held,
            "holdout_share": round(held / total, 4) if total else None,
        }
    )


@router.get("/offers/{offer_id}", responses=problems(_NO_OFFER))
async def get_offer(offer_id: PathId, tenant: TenantDep, request: Request) -> AccountOffer:
    async with request.app.state.runtime.engine.connect() as conn:
        row = await PostgresOfferRepository(conn).offer(tenant, offer_id)
    if row is None:
        raise HTTPException(404, f"no offer {offer_id!r} in this tenant")
    return AccountOffer.model_validate({"account": row["account"], **_offer_view(row)})


_ANSWER_PROBLEMS = problems(
    {
        **_NO_OFFER,
        409: "the offer is not issued (answered otherwise, held out, redeemed) or expired",
    }
)


async def _answer(
    request: Request,
    tenant: str,
    offer_id: str,
    status: Literal["accepted", "declined"],
    body: Answer,
    actor: str,
) -> AccountOffer:
    runtime = request.app.state.runtime
    change = StatusChange(tenant, offer_id, status, datetime.now(UTC), actor, body.comment)
    async with runtime.engine.begin() as conn:
        repo = PostgresOfferRepository(conn)
        row = await repo.offer(tenant, offer_id, lock=True)
        if row is None:
            raise HTTPException(404, f"no offer {offer_id!r} in this tenant")
        if row["status"] == status:  # a repeat: the first answer stands
            return AccountOffer.model_validate({"account": row["account"], **_offer_view(row)})
        if row["status"] not in ALLOWED_FROM[status]:
            raise HTTPException(
                409, f"offer {offer_id} is {row['status']}; only an issued offer can be {status}"
            )
        clock = await repo.clock(tenant)
        if clock is not None and row["expires_at"] <= clock:
            raise HTTPException(409, f"offer {offer_id} expired at {row['expires_at']}")
        await repo.update_statuses([change])
        uow = UnitOfWork(conn, runtime.names, runtime.spec.name)
        uow.publish(
            "offers.decisions",
            status_event(
                tenant,
                row["account"],
                offer_id,
                row["rule"],
                status,
                change.at,
                actor,
                body.comment,
            ),
        )
        await uow.flush()
    runtime.relay.wake()
    row.update(status=status, actor=actor, comment=body.comment, updated_at=change.at)
    return AccountOffer.model_validate({"account": row["account"], **_offer_view(row)})


@router.post("/offers/{offer_id}/accept", responses=_ANSWER_PROBLEMS)
async def accept(
    offer_id: PathId, caller: IngestDep, request: Request, body: Answer | None = None
) -> AccountOffer:
    """Issued → accepted, as the product reports its customer's answer (an
    ``ingest`` key; its holder is recorded). A repeat returns the first answer."""
    answer = body or Answer()
    return await _answer(request, caller.tenant, offer_id, "accepted", answer, caller.holder)


@router.post("/offers/{offer_id}/decline", responses=_ANSWER_PROBLEMS)
async def decline(
    offer_id: PathId, caller: IngestDep, request: Request, body: Answer | None = None
) -> AccountOffer:
    """Issued → declined (an ``ingest`` key). A repeat returns the first answer."""
    answer = body or Answer()
    return await _answer(request, caller.tenant, offer_id, "declined", answer, caller.holder)
