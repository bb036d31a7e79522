"""Tenant-scoped insights API: lift against the holdouts, NRR, the up-sell rate
of members, segment growth and member value, bundles and ready accounts — JSON,
or CSV with ``?format=csv``. Every figure is as of the tenant's stream time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from services.insights import reports
from services.insights.adapters.postgres import PostgresInsightsStore
from services.insights.domain.program import InsightsProgram
from services.insights.ports import InsightsStore
from services.runtime.service import TENANT_PROBLEMS, Format, TenantDep, csv_response, with_csv

router = APIRouter(prefix="/v1/insights", tags=["insights"], responses=TENANT_PROBLEMS)
Report = Callable[[InsightsStore, InsightsProgram, str], Awaitable[tuple[dict[str, Any], Any]]]
AsOf = Field(description="The tenant's stream time the report is as of; null before any event.")
_CSV = with_csv("the report, or its rows as CSV")

# ---------------------------------------------------------------- response models


class Difference(BaseModel):
    """treated - held out, with its confidence interval."""

    diff: float
    low: float
    high: float
    method: str = Field(description="newcombe-wilson, welch or cuped-welch")
    excludes_zero: bool


class OutcomeLift(BaseModel):
    kind: Literal["proportion", "mean"]
    treated: float
    held_out: float
    raw: Difference | None
    cuped: Difference | None
    mde: float | None = Field(description="Minimum detectable effect; null: a group is empty.")


class Maturing(BaseModel):
    treated: int
    held_out: int


class CreditCost(BaseModel):
    """The ledger's decisions for the rule's offers, minor units of ``currency``."""

    currency: str
    granted: int
    breakage: int
    pending: int
    rejected_offers: int
    granted_offers: int
    pending_offers: int
    booked: int = Field(description="granted - breakage")


class NetValue(BaseModel):
    estimate: float
    low: float
    high: float
    incremental_mrr: float
    cost: int
    currency: str


class Lift(BaseModel):
    rule: str
    segment: str | None
    treated: int = Field(description="Matured exposures treated.")
    held_out: int
    maturing: Maturing
    status: Literal["ok", "not enough data"]
    outcomes: dict[str, OutcomeLift]
    cost: CreditCost | None
    net_incremental_value: NetValue | None


class RuleLift(Lift):
    by_segment: list[Lift]


class LiftReport(BaseModel):
    as_of: datetime | None = AsOf
    horizon_days: float
    confidence: float
    min_exposures: int
    rules: list[RuleLift]


class Retention(BaseModel):
    accounts: int
    start_mrr: int
    expansion: int
    contraction: int
    churn: int
    churned_accounts: int
    nrr: float | None


class Period(BaseModel):
    start: datetime
    end: datetime
    complete: bool
    groups: dict[str, Retention] = Field(
        description="all, members / non-members, treated / held out / not exposed."
    )


class NrrReport(BaseModel):
    as_of: datetime | None = AsOf
    months: list[Period]
    trailing_12m: Period | None


Band = Literal["weak", "healthy", "exceptional"]


class UpsellRate(BaseModel):
    transactions: int
    upsells: int
    rate: float | None = Field(description="upsells / transactions x 100")
    band: Band | None


class MonthSegmentRate(UpsellRate):
    month: str
    segment: str


class Bands(BaseModel):
    weak_below: float
    exceptional_above: float


class UpsellReport(BaseModel):
    as_of: datetime | None = AsOf
    bands: Bands
    members: UpsellRate
    non_members: UpsellRate
    by_month: dict[str, UpsellRate]
    by_segment: dict[str, UpsellRate]
    by_month_segment: list[MonthSegmentRate]


class GrowthStep(BaseModel):
    period: str = Field(description="A day (YYYY-MM-DD) or a month (YYYY-MM).")
    entered: int
    exited: int
    net: int
    size: int = Field(description="At the period's end.")


class SegmentGrowth(BaseModel):
    segment: str
    size: int
    days: list[GrowthStep]
    months: list[GrowthStep]


class MemberValue(BaseModel):
    month: str
    members: int
    non_members: int
    paid_members: int
    paid_non_members: int
    mrr_members: int
    mrr_non_members: int
    paid_per_member: float | None
    paid_per_non_member: float | None
    mrr_per_member: float | None
    mrr_per_non_member: float | None


class SegmentsReport(BaseModel):
    as_of: datetime | None = AsOf
    segments: list[SegmentGrowth]
    member_value: list[MemberValue]


class BundleRule(BaseModel):
    antecedent: list[str]
    consequent: list[str]
    confidence: float
    lift: float


class Bundle(BaseModel):
    items: list[str]
    accounts: int
    support: float
    rules: list[BundleRule]


class Sequence(BaseModel):
    antecedent: str
    consequent: str
    accounts: int
    matured: int
    support: float
    confidence: float
    p25: float
    median_delay_days: float
    p75: float
    strong: bool


class BundlesReport(BaseModel):
    as_of: datetime | None = AsOf
    baskets: int
    window_days: int
    bundles: list[Bundle]
    sequences: list[Sequence]


class ReadyAccount(BaseModel):
    account: str
    sequence: str = Field(description="antecedent>consequent")
    adopted: str
    expected: str
    adopted_at: datetime
    days_since: float
    typical_delay_days: float


class ReadyReport(BaseModel):
    as_of: datetime | None = AsOf
    ready: list[ReadyAccount]


# ---------------------------------------------------------------- routes


async def _serve(request: Request, tenant: str, report: Report, fmt: Format) -> Any:
    async with request.app.state.runtime.engine.connect() as conn:
        body, rows = await report(PostgresInsightsStore(conn), request.app.state.program, tenant)
    return csv_response(rows) if fmt == "csv" else body


@router.get("/lift", response_model=LiftReport, responses=_CSV)
async def lift(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Per rule, and per segment at decision time: matured exposures treated and
    held out, each outcome's means and difference with its interval (raw and
    CUPED), the minimum detectable effect, the credit cost booked and the net
    incremental value; exposures still inside the horizon as ``maturing``."""
    return await _serve(request, tenant, reports.lift_report, format)


@router.get("/nrr", response_model=NrrReport, responses=_CSV)
async def nrr(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Net revenue retention per calendar month and over the trailing 12 months,
    for all accounts, members / non-members and treated / held out / not exposed."""
    return await _serve(request, tenant, reports.nrr_report, format)


@router.get("/upsell-rate", response_model=UpsellReport, responses=_CSV)
async def upsell_rate(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Up-sell transactions by members / all transactions by members x 100, overall,
    per month and per segment, with its band (weak / healthy / exceptional)."""
    return await _serve(request, tenant, reports.upsell_report, format)


@router.get("/segments", response_model=SegmentsReport, responses=_CSV)
async def segments(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Each segment's entries, exits, net change and size per day and month, and
    what members pay and their MRR against non-members, per month."""
    return await _serve(request, tenant, reports.segments_report, format)


@router.get("/bundles", response_model=BundlesReport, responses=_CSV)
async def bundles(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Pairs and triples of features adopted together (support, confidence, lift)
    and ordered sequences A -> B with their typical delay."""
    return await _serve(request, tenant, reports.bundles_report, format)


@router.get("/bundles/ready", response_model=ReadyReport, responses=_CSV)
async def ready(tenant: TenantDep, request: Request, format: Format = "json") -> Any:
    """Accounts inside a strong sequence's typical delay: adopted A, not yet B."""
    return await _serve(request, tenant, reports.ready_report, format)
