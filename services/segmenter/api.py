"""Tenant-scoped read API: accounts, segment sizes, segment members."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from services.runtime.service import TenantDep
from services.segmenter.adapters.db import PostgresAccountRepository
from services.segmenter.domain.fold import TenantClock, account_view, full_view
from services.segmenter.domain.program import SegmenterProgram

router = APIRouter(prefix="/v1")


def _program(request: Request) -> SegmenterProgram:
    program: SegmenterProgram = request.app.state.program
    return program


@router.get("/accounts/{account_id}")
async def get_account(account_id: str, tenant: TenantDep, request: Request) -> dict[str, Any]:
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
    rfm = {
        "r": view.pop("r_score"),
        "f": view.pop("f_score"),
        "m": view.pop("m_score"),
        "cell": view.pop("rfm_cell"),
    }
    view["adopted"] = sorted(view["adopted"])
    return {
        "account": account_id,
        "as_of": date.fromordinal(clock.stream_day).isoformat(),
        "features": view,
        "rfm": rfm,
        "segments": [
            {"name": name, "since": since.isoformat()}
            for name, since in sorted(state.segments.items())
        ],
    }


@router.get("/segments")
async def list_segments(tenant: TenantDep, request: Request) -> dict[str, Any]:
    """Every segment of the program with its current size."""
    program = _program(request)
    async with request.app.state.runtime.engine.connect() as conn:
        sizes = await PostgresAccountRepository(conn).segment_sizes(tenant)
    return {
        "segments": [
            {
                "name": s.name,
                "description": s.description,
                "when": s.source,
                "size": sizes.get(s.name, 0),
            }
            for s in program.segments
        ]
    }


@router.get("/segments/{name}/members")
async def segment_members(
    name: str,
    tenant: TenantDep,
    request: Request,
    after: Annotated[str | None, Query(description="cursor: the last account of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Members in account order, ``limit`` at a time; pass ``next`` as ``after``."""
    if name not in {s.name for s in _program(request).segments}:
        raise HTTPException(404, f"no segment {name!r} in the program")
    async with request.app.state.runtime.engine.connect() as conn:
        rows = await PostgresAccountRepository(conn).members(tenant, name, after, limit)
    return {
        "segment": name,
        "members": [{"account": a, "since": since} for a, since in rows],
        "next": rows[-1][0] if len(rows) == limit else None,
    }
