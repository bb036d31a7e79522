"""The insights service's part of the program file: the ``insights:`` section.

Every definition a report uses is set here, with defaults that suit a SaaS
program; ``docs/insights.md`` explains each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.durations import parse_duration
from services.common.program import ProgramError, Strict, where

UpsellKind = Literal["plan", "seats", "annual"]
TransactionKind = Literal["invoice_paid", "subscription_change"]


class BundlesSpec(Strict):
    min_support: float = Field(default=0.02, ge=0, le=1)
    min_confidence: float = Field(default=0.2, ge=0, le=1)
    min_lift: float = Field(default=1.2, ge=0)
    sequence_window: str = "60d"
    sequence_min_support: float = Field(default=0.01, ge=0, le=1)
    sequence_min_confidence: float = Field(default=0.2, ge=0, le=1)
    min_accounts: int = Field(default=10, ge=1)
    signals: bool = True


class InsightsSpec(Strict):
    horizon: str = "90d"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_exposures: int = Field(default=30, ge=2)
    membership_segments: list[str] = Field(default_factory=lambda: ["member_new", "member_active"])
    transactions: tuple[TransactionKind, ...] = ("invoice_paid", "subscription_change")
    upsell: tuple[UpsellKind, ...] = ("plan", "seats", "annual")
    upsell_bands: tuple[float, float] = (15.0, 25.0)
    bundles: BundlesSpec = Field(default_factory=BundlesSpec)


class InsightsSections(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal[1] = 1
    segments: dict[str, Any] = Field(default_factory=dict)
    insights: InsightsSpec = Field(default_factory=InsightsSpec)


@dataclass(frozen=True)
class InsightsProgram:
    """The compiled ``insights:`` section."""

    horizon: timedelta
    confidence: float
    min_exposures: int
    membership_segments: frozenset[str]
    transactions: frozenset[str]
    upsell: frozenset[str]
    upsell_bands: tuple[float, float]
    min_support: float
    min_confidence: float
    min_lift: float
    sequence_window: timedelta
    sequence_min_support: float
    sequence_min_confidence: float
    min_sequence_accounts: int
    signals: bool

    @property
    def window_days(self) -> int:
        return max(1, self.sequence_window // timedelta(days=1))


def load_insights_program(raw: Any) -> InsightsProgram:
    """Validates and compiles the insights section (absent: all defaults)."""
    try:
        sections = InsightsSections.model_validate(raw)
    except ValidationError as exc:
        raise ProgramError(
            [where(e["loc"]) + e["msg"] for e in exc.errors(include_url=False)]
        ) from None
    spec = sections.insights
    problems: list[str] = []
    durations: dict[str, timedelta] = {}
    for name, text in (
        ("horizon", spec.horizon),
        ("sequence_window", spec.bundles.sequence_window),
    ):
        try:
            durations[name] = parse_duration(text)
        except ValueError as exc:
            problems.append(f"insights, field {name!r}: {exc}")
            durations[name] = timedelta(days=1)
    if durations["horizon"] < timedelta(days=1):
        problems.append("insights, field 'horizon': at least 1d")
    unknown = sorted(set(spec.membership_segments) - set(sections.segments))
    if sections.segments and unknown:
        problems.append(f"insights, field 'membership_segments': unknown segments {unknown}")
    low, high = spec.upsell_bands
    if not 0 <= low <= high <= 100:
        problems.append("insights, field 'upsell_bands': two percents, low <= high")
    if problems:
        raise ProgramError(problems)
    b = spec.bundles
    return InsightsProgram(
        horizon=durations["horizon"],
        confidence=spec.confidence,
        min_exposures=spec.min_exposures,
        membership_segments=frozenset(spec.membership_segments),
        transactions=frozenset(spec.transactions),
        upsell=frozenset(spec.upsell),
        upsell_bands=(low, high),
        min_support=b.min_support,
        min_confidence=b.min_confidence,
        min_lift=b.min_lift,
        sequence_window=durations["sequence_window"],
        sequence_min_support=b.sequence_min_support,
        sequence_min_confidence=b.sequence_min_confidence,
        min_sequence_accounts=b.min_accounts,
        signals=b.signals,
    )
