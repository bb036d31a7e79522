"""Tenant-scoped insights API: lift against the holdouts, NRR, the up-sell rate
of members, segment growth and member value, bundles and ready accounts — JSON,
or CSV with ``?format=csv``. Every figure is as of the tenant's stream time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request

from services.insights import reports
from services.insights.adapters.postgres import PostgresInsightsStore
from services.insights.domain.program import InsightsProgram
from services.insights.ports import InsightsStore
from services.runtime.service import TenantDep, csv_response

router = APIRouter(prefix="/v1/insights", tags=["insights"])
Format = Literal["json", "csv"]
Report = Callable[[InsightsStore, InsightsProgram, str], Awaitable[tuple[dict[str, Any], Any]]]


async def _serve(request: Request, tenant: str, report: Report, fmt: Format) -> Any:
    async with request.app.state.runtime.engine.connect() as conn:
        body, rows = await report(PostgresInsightsStore(conn), request.app.state.program, tenant)
    return csv_response(rows) if fmt == "csv" else body


@router.get("/lift")
async def lift(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Per rule, and per segment at decision time: matured exposures treated and
    held out, each outcome's means and difference with its interval (raw and
    CUPED), the minimum detectable effect, the credit cost booked and the net
    incremental value; exposures still inside the horizon as ``maturing``."""
    return await _serve(request, tenant, reports.lift_report, format)


@router.get("/nrr")
async def nrr(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Net revenue retention per calendar month and over the trailing 12 months,
    for all accounts, members / non-members and treated / held out / not exposed."""
    return await _serve(request, tenant, reports.nrr_report, format)


@router.get("/upsell-rate")
async def upsell_rate(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Up-sell transactions by members / all transactions by members x 100, overall,
    per month and per segment, with its band (weak / healthy / exceptional)."""
    return await _serve(request, tenant, reports.upsell_report, format)


@router.get("/segments")
async def segments(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Each segment's entries, exits, net change and size per day and month, and
    what members pay and their MRR against non-members, per month."""
    return await _serve(request, tenant, reports.segments_report, format)


@router.get("/bundles")
async def bundles(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Pairs and triples of features adopted together (support, confidence, lift)
    and ordered sequences A -> B with their typical delay."""
    return await _serve(request, tenant, reports.bundles_report, format)


@router.get("/bundles/ready")
async def ready(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Accounts inside a strong sequence's typical delay: adopted A, not yet B."""
    return await _serve(request, tenant, reports.ready_report, format)
