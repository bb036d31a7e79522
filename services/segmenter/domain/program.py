"""The segmenter's part of the program file: stream time settings, RFM, and
segments as named predicates over features. Validated and compiled once, at
start-up; an invalid program is refused with the segment, field and problem."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import topic_family
from schemas.events import CATALOG
from services.common.durations import parse_duration
from services.common.expressions import (
    Compiled,
    ExpressionError,
    compile_expression,
    referenced_names,
)
from services.common.program import ProgramError, Strict
from services.segmenter.domain.due import Timing, analyse
from services.segmenter.domain.features import WINDOWS, EventSelector, RfmConfig
from services.segmenter.domain.rfm import CELLS

FEATURE_KINDS: dict[str, str] = {
    "days_since_last_login": "number",
    "days_since_last_key_action": "number",
    "days_since_last_activity": "number",
    "active_day_streak": "number",
    "weekly_streak": "number",
    "features_adopted": "number",
    "adopted": "set",
    "seats_purchased": "number",
    "seats_used": "number",
    "seat_utilization": "number",
    "plan": "text",
    "interval": "text",
    "subscription_status": "text",
    "mrr": "number",
    "arr": "number",
    "currency": "text",
    "paid_months": "number",
    "paid_total_window": "number",
    "tenure_days": "number",
    "days_to_renewal": "number",
    "renewal_date": "date",
    "onboarding_completed": "flag",
    "days_since_onboarding": "number",
    "cancellation_requested": "flag",
    "last_nps": "number",
    "open_tickets": "number",
    "membership": "text",
    **{f"key_actions_{n}d": "number" for n in WINDOWS},
    **{f"active_days_{n}d": "number" for n in WINDOWS},
    "r_score": "number",
    "f_score": "number",
    "m_score": "number",
    "rfm_cell": "text",
}
"""Every name a predicate may use, with its kind."""

RFM_CELL_NAMES = tuple(name for name, _ in CELLS)


class StreamSection(Strict):
    allowed_lateness: str = "1h"


class RfmSection(Strict):
    recency_events: list[str] = Field(default_factory=lambda: ["product.feature_used:key_action"])
    frequency_events: list[str] = Field(default_factory=lambda: ["product.feature_used:key_action"])
    frequency_window_days: int = Field(default=90, ge=1, le=3650)
    monetary: Literal["mrr", "arr", "paid_total"] = "mrr"
    monetary_window_days: int = Field(default=365, ge=1, le=3650)
    redraw_every: str = "15m"


class SegmentSection(Strict):
    when: str = Field(min_length=1)
    description: str = ""


class SegmenterSections(BaseModel):
    """The top-level keys the segmenter owns; other services' keys are theirs."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal[1] = 1
    stream: StreamSection = StreamSection()
    rfm: RfmSection = RfmSection()
    segments: dict[str, SegmentSection]


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    source: str
    predicate: Compiled
    reads: frozenset[str]  # the features the predicate depends on
    timing: Timing  # how it can change with time alone (the due index)


@dataclass(frozen=True)
class SegmenterProgram:
    allowed_lateness: timedelta
    rfm: RfmConfig
    segments: tuple[Segment, ...]
    rfm_redraw_every: timedelta = timedelta(minutes=15)

    @cached_property
    def _reading(self) -> dict[frozenset[str] | None, tuple[Segment, ...]]:
        return {}

    def segments_reading(self, changed: frozenset[str] | None) -> tuple[Segment, ...]:
        """The segments whose predicate reads one of ``changed`` (all for None)."""
        found = self._reading.get(changed)
        if found is None:
            found = self._reading[changed] = tuple(
                s for s in self.segments if changed is None or s.reads & changed
            )
        return found

    @cached_property
    def scores_and_time(self) -> bool:
        """Whether a segment reads both RFM scores and a feature that moves with the
        day (then a score change can move the day that segment changes next)."""
        scores = {"r_score", "f_score", "m_score", "rfm_cell"}
        return any(set(s.timing.time_features) - scores and s.reads & scores for s in self.segments)

    @cached_property
    def timed(self) -> tuple[tuple[str, Compiled, Timing], ...]:
        """The segments that time alone can change, for the due analysis."""
        return tuple(
            (s.name, s.predicate, s.timing) for s in self.segments if s.timing.time_features
        )


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def load_program(raw: Any) -> SegmenterProgram:
    """Validates and compiles the segmenter's sections of a parsed program file."""
    try:
        sections = SegmenterSections.model_validate(raw)
    except ValidationError as exc:
        raise ProgramError(
            [_where(err["loc"]) + err["msg"] for err in exc.errors(include_url=False)]
        ) from None
    problems: list[str] = []
    try:
        lateness = parse_duration(sections.stream.allowed_lateness)
    except ValueError as exc:
        problems.append(f"stream, field 'allowed_lateness': {exc}")
        lateness = timedelta(0)
    try:
        redraw_every = parse_duration(sections.rfm.redraw_every)
    except ValueError as exc:
        problems.append(f"rfm, field 'redraw_every': {exc}")
        redraw_every = timedelta(minutes=15)
    selectors = {}
    for field_name in ("recency_events", "frequency_events"):
        parsed = []
        for text in getattr(sections.rfm, field_name):
            try:
                parsed.append(parse_selector(text))
            except ValueError as exc:
                problems.append(f"rfm, field '{field_name}': {exc}")
        selectors[field_name] = tuple(parsed)
    if not sections.segments:
        problems.append("segments: the program defines no segment")
    segments = []
    for name, spec in sections.segments.items():
        if not _NAME.match(name):
            problems.append(
                f"segment {name!r}, field 'name': use lower-case letters, digits"
                " and _ (at most 63), starting with a letter"
            )
            continue
        try:
            predicate = compile_expression(spec.when, FEATURE_KINDS)
        except ExpressionError as exc:
            problems.append(f"segment {name!r}, field 'when': {exc}")
            continue
        reads = referenced_names(spec.when)
        segments.append(
            Segment(name, spec.description, spec.when, predicate, reads, analyse(spec.when, reads))
        )
    if problems:
        raise ProgramError(problems)
    return SegmenterProgram(
        allowed_lateness=lateness,
        rfm=RfmConfig(
            recency_events=selectors["recency_events"],
            frequency_events=selectors["frequency_events"],
            frequency_window_days=sections.rfm.frequency_window_days,
            monetary=sections.rfm.monetary,
            monetary_window_days=sections.rfm.monetary_window_days,
        ),
        segments=tuple(segments),
        rfm_redraw_every=redraw_every,
    )


def parse_selector(text: str) -> EventSelector:
    etype, _, qualifier = text.partition(":")
    if etype not in CATALOG or topic_family(etype) is None:
        raise ValueError(f"unknown event type {etype!r}")
    if qualifier not in ("", "key_action"):
        raise ValueError(f"unknown qualifier {qualifier!r} in {text!r} (only :key_action)")
    if qualifier and etype != "product.feature_used":
        raise ValueError(f"{text!r}: only product.feature_used has key actions")
    return EventSelector(etype, key_action_only=bool(qualifier))


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "segments":
        rest = ".".join(parts[2:]) or "definition"
        return f"segment {parts[1]!r}, field '{rest}': "
    if len(parts) >= 2:
        return f"{parts[0]}, field '{'.'.join(parts[1:])}': "
    return f"{'.'.join(parts) or 'program'}: "
