"""Tenant-scoped read API: accounts, segment sizes, segment members."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from schemas.events import RfmScores
from services.runtime.problems import problems
from services.runtime.service import TENANT_PROBLEMS, PathId, TenantDep
from services.segmenter.adapters.db import PostgresAccountRepository
from services.segmenter.domain.fold import TenantClock, account_view, full_view
from services.segmenter.domain.program import SegmenterProgram

router = APIRouter(prefix="/v1", responses=TENANT_PROBLEMS)

Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=r"^[^\x00-\x20\x7f]+$",
        description="cursor: the last account of a page",
    ),
]


class Membership(BaseModel):
    name: str
    since: datetime = Field(description="When the account entered the segment.")


class AccountSegments(BaseModel):
    """An account as the segmenter sees it on the tenant's stream day."""

    account: str
    as_of: date = Field(description="The tenant's stream day.")
    features: dict[str, Any] = Field(
        description="Every feature by name (the catalog in docs/segments.md); null where unknown."
    )
    rfm: RfmScores
    segments: list[Membership]


class SegmentSize(BaseModel):
    name: str
    description: str | None
    when: str = Field(description="The segment's predicate, as the program writes it.")
    size: int = Field(ge=0)


class SegmentList(BaseModel):
    segments: list[SegmentSize]


class Member(BaseModel):
    account: str
    since: datetime | None = Field(description="When the account entered the segment.")


class SegmentMembers(BaseModel):
    segment: str
    members: list[Member]
    next: str | None = Field(description="Pass as ``after`` for the next page; null at the end.")


def _program(request: Request) -> SegmenterProgram:
    program: SegmenterProgram = request.app.state.program
    return program


@router.get(
    "/accounts/{account_id}",
    responses=problems({404: "no such account in this tenant (or no event of it yet)"}),
)
async def get_account(account_id: PathId, tenant: TenantDep, request: Request) -> AccountSegments:
    """Features, RFM scores and cell, and segments with since-when, as of the
    tenant's stream day."""
    program = _program(request)
    async with request.app.state.runtime.engine.connect() as conn:
        repo = PostgresAccountRepository(conn)
        state = await repo.account(tenant, account_id)
        clock = await repo.get_clock(tenant)
    if state is None or clock is None or clock.stream_day is None:
        raise HTTPException(404, f"no account {account_id!r} in this tenant")
    view = full_view(account_view(program, clock or TenantClock(tenant), state, clock.stream_day))
    rfm = RfmScores(
        r=view.pop("r_score"),
        f=view.pop("f_score"),
        m=view.pop("m_score"),
        cell=view.pop("rfm_cell"),
    )
    view["adopted"] = sorted(view["adopted"])
    return AccountSegments(
        account=account_id,
        as_of=date.fromordinal(clock.stream_day),
        features=view,
        rfm=rfm,
        segments=[
            Membership(name=name, since=since) for name, since in sorted(state.segments.items())
        ],
    )


@router.get("/segments")
async def list_segments(tenant: TenantDep, request: Request) -> SegmentList:
    """Every segment of the program with its current size."""
    program = _program(request)
    async with request.app.state.runtime.engine.connect() as conn:
        sizes = await PostgresAccountRepository(conn).segment_sizes(tenant)
    return SegmentList(
        segments=[
            SegmentSize(
                name=s.name,
                description=s.description,
                when=s.source,
                size=sizes.get(s.name, 0),
            )
            for s in program.segments
        ]
    )


@router.get(
    "/segments/{name}/members", responses=problems({404: "no segment of this name in the program"})
)
async def segment_members(
    name: PathId,
    tenant: TenantDep,
    request: Request,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SegmentMembers:
    """Members in account order, ``limit`` at a time; pass ``next`` as ``after``."""
    if name not in {s.name for s in _program(request).segments}:
        raise HTTPException(404, f"no segment {name!r} in the program")
    async with request.app.state.runtime.engine.connect() as conn:
        rows = await PostgresAccountRepository(conn).members(tenant, name, after, limit)
    return SegmentMembers(
        segment=name,
        members=[Member(account=a, since=since) for a, since in rows],
        next=rows[-1][0] if len(rows) == limit else None,
    )
