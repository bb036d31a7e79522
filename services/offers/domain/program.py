"""The offers service's part of the program file: rules (trigger, eligibility,
reward, priority, cooldown, expiry), the contact policy and the holdout group.
Validated and compiled once, at start-up and by the simulator; an invalid program
is refused with one line per problem naming the rule and the field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.events import CATALOG, MONETARY_REWARDS, REWARD_KINDS
from services.common.durations import parse_duration
from services.common.expressions import (
    Compiled,
    ExpressionError,
    compile_expression,
    constants_tested_in,
    referenced_names,
)
from services.common.program import ProgramError, Strict

FEATURE_KINDS: dict[str, str] = {
    "seats_purchased": "number",
    "seats_used": "number",
    "seat_utilization": "number",
    "plan": "text",
    "interval": "text",
    "subscription_status": "text",
    "mrr": "number",
    "arr": "number",
    "renewal_value": "number",
    "currency": "text",
    "days_to_renewal": "number",
    "paid_months": "number",
    "tenure_days": "number",
    "membership": "text",
    "onboarding_completed": "flag",
    "key_actions_30d": "number",
    "active_days_30d": "number",
    "active_day_streak": "number",
    "weekly_streak": "number",
    "adopted": "set",
    "last_nps": "number",
    "open_tickets": "number",
    "cancellation_requested": "flag",
    "r_score": "number",
    "f_score": "number",
    "m_score": "number",
    "rfm_cell": "text",
    "segments": "set",
}
"""What a rule's ``when`` may read: the account as the last segment transition
described it (amounts in minor units), plus ``segments``, the set it is in."""

MONEY_BASES = ("mrr", "arr", "renewal_value")
PRICED = (*MONETARY_REWARDS, "discount")
"""Rewards with a monetary value (credits, discounts)."""
CANCELLATION_EVENT = "billing.cancellation_requested"
SIGNALS = ("bundle.ready",)
"""Account events the offers service reads from ``insights.signals``."""
TRIGGER_EVENTS = frozenset(
    t for t in CATALOG if t.split(".")[0] in ("product", "billing", "support") or t in SIGNALS
)
"""What an event trigger may name: the account events the offers service reads
(its input topics' product, billing and support events, and insights' signals)."""


class TriggerSpec(Strict):
    """Exactly one of: ``{segment: NAME}``, the account enters the segment;
    ``{segment_exit: NAME}``, the account leaves it; ``{event: TYPE, where: {field:
    value or [values]}, nth: N}``, the N-th matching event of the account (every
    matching event when ``nth`` is left out)."""

    segment: str | None = None
    segment_exit: str | None = None
    event: str | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    nth: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerSpec:
        kinds = (self.segment, self.segment_exit, self.event)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("say one of segment: NAME, segment_exit: NAME or event: TYPE")
        if self.event is None and (self.where or self.nth is not None):
            raise ValueError("where and nth go with event triggers only")
        return self


class AmountSpec(Strict):
    """``fixed`` minor units, or ``percent`` of ``percent_of`` (mrr, arr or
    renewal_value), or a percent per segment (``by_segment``; first match wins)."""

    fixed: int | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    percent_of: str | None = None
    percent: float | None = None
    by_segment: dict[str, float] = Field(default_factory=dict)


class RewardSpec(Strict):
    kind: str
    value: AmountSpec | None = None
    cost: AmountSpec | Literal["value"] | None = None
    days: int | None = Field(default=None, ge=1, le=3650)


class RuleSpec(Strict):
    description: str = ""
    trigger: TriggerSpec
    when: str = "True"
    reward: RewardSpec
    priority: int = 0
    cooldown: str = "30d"
    expires_in: str = "30d"
    after: list[str] = Field(default_factory=list)


class HoldoutSpec(Strict):
    percent: float = Field(default=10, ge=0, le=50)
    salt: str = Field(default="holdout-v1", min_length=1)


class PolicySpec(Strict):
    max_offers: int = Field(default=2, ge=1)
    window: str = "30d"
    quiet_period: str = "1d"


class OffersSection(Strict):
    default_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    holdout: HoldoutSpec = HoldoutSpec()
    contact_policy: PolicySpec = PolicySpec()
    rules: dict[str, RuleSpec]


class OffersSections(BaseModel):
    """The top-level keys the offers service reads; ``segments`` only for names."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal[1] = 1
    segments: dict[str, Any] = Field(default_factory=dict)
    offers: OffersSection


@dataclass(frozen=True)
class Amount:
    fixed: int | None = None
    currency: str | None = None
    percent_of: str | None = None
    percents: tuple[tuple[str | None, Fraction], ...] = ()  # (segment or None, percent)


@dataclass(frozen=True)
class Trigger:
    """One of ``segment`` (entering it), ``segment_exit`` (leaving it) or ``event``."""

    segment: str | None = None
    event: str | None = None
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    nth: int | None = None
    segment_exit: str | None = None

    def describe(self) -> str:
        """What fired a segment trigger, for people."""
        if self.segment_exit is not None:
            return f"left segment {self.segment_exit}"
        return f"entered segment {self.segment}"

    def matches(self, event_type: str, data: dict[str, Any]) -> bool:
        return event_type == self.event and all(data.get(k) in vs for k, vs in self.where)

    def counter(self, rule: str, data: dict[str, Any]) -> str:
        """What ``nth`` counts: matches per value of each ``where`` field that lists
        several values (``feature: [api, sso]`` counts api and sso apart)."""
        keys = [f"{k}={data.get(k)}" for k, vs in self.where if len(vs) > 1]
        return "/".join([rule, *keys])

    def describe_match(self, data: dict[str, Any], n: int) -> str:
        values = ", ".join(f"{k}={data.get(k)!r}" for k, _ in self.where)
        what = f"{self.event}" + (f" ({values})" if values else "")
        return f"{_ordinal(n)} {what}" if self.nth else what


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    trigger: Trigger
    when: Compiled
    reads: frozenset[str]
    kind: str
    value: Amount | None
    cost: Amount | None  # None: the value is the cost
    days: int | None
    priority: int
    cooldown: timedelta
    expires_in: timedelta
    after: tuple[str, ...]


@dataclass(frozen=True)
class OffersProgram:
    rules: tuple[Rule, ...]
    holdout_percent: Fraction
    holdout_salt: str
    max_offers: int
    window: timedelta
    quiet_period: timedelta
    default_currency: str = "USD"
    by_segment: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    by_event: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    by_segment_exit: dict[str, tuple[Rule, ...]] = field(default_factory=dict)


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def load_offers_program(raw: Any) -> OffersProgram:
    """Validates and compiles the offers section of a parsed program file."""
    try:
        sections = OffersSections.model_validate(raw)
    except ValidationError as exc:
        invalid = [_where(e["loc"]) + e["msg"] for e in exc.errors(include_url=False)]
        raise ProgramError(invalid) from None
    section = sections.offers
    segments = set(sections.segments)
    cancellation_segments = {
        name
        for name, spec in sections.segments.items()
        if isinstance(spec, dict) and "cancellation_requested" in str(spec.get("when", ""))
    }
    problems: list[str] = []
    policy: dict[str, timedelta] = {}
    for name in ("window", "quiet_period"):
        try:
            policy[name] = parse_duration(getattr(section.contact_policy, name))
        except ValueError as exc:
            problems.append(f"contact_policy, field {name!r}: {exc}")
            policy[name] = timedelta(0)
    if not section.rules:
        problems.append("offers: the program defines no rule")
    rules: list[Rule] = []
    for name, spec in section.rules.items():
        rule = _compile_rule(name, spec, segments, cancellation_segments, problems)
        if rule is not None:
            rules.append(rule)
    names = {r.name for r in rules}
    for rule in rules:
        for prior in rule.after:
            if prior not in section.rules:
                problems.append(f"rule {rule.name!r}, field 'after': unknown rule {prior!r}")
    problems += _cycles({r.name: r.after for r in rules if set(r.after) <= names})
    if problems:
        raise ProgramError(problems)
    by_segment: dict[str, list[Rule]] = {}
    by_segment_exit: dict[str, list[Rule]] = {}
    by_event: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.trigger.segment is not None:
            by_segment.setdefault(rule.trigger.segment, []).append(rule)
        elif rule.trigger.segment_exit is not None:
            by_segment_exit.setdefault(rule.trigger.segment_exit, []).append(rule)
        else:
            by_event.setdefault(rule.trigger.event or "", []).append(rule)
    return OffersProgram(
        rules=tuple(rules),
        holdout_percent=Fraction(str(section.holdout.percent)),
        holdout_salt=section.holdout.salt,
        max_offers=section.contact_policy.max_offers,
        window=policy["window"],
        quiet_period=policy["quiet_period"],
        default_currency=section.default_currency,
        by_segment={k: tuple(v) for k, v in by_segment.items()},
        by_event={k: tuple(v) for k, v in by_event.items()},
        by_segment_exit={k: tuple(v) for k, v in by_segment_exit.items()},
    )


def _compile_rule(
    name: str,
    spec: RuleSpec,
    segments: set[str],
    cancellation_segments: set[str],
    problems: list[str],
) -> Rule | None:
    before = len(problems)

    def problem(field_name: str, message: str) -> None:
        problems.append(f"rule {name!r}, field {field_name!r}: {message}")

    if not _NAME.match(name):
        problem("name", "use lower-case letters, digits and _ (at most 63), starting with a letter")
    trigger = _compile_trigger(spec.trigger, segments, problem)
    when: Compiled = _never
    try:
        when = compile_expression(spec.when, FEATURE_KINDS)
        for unknown in sorted(constants_tested_in(spec.when, "segments") - segments):
            problem("when", f"unknown segment {unknown!r}")
    except ExpressionError as exc:
        problem("when", str(exc))
    reward = spec.reward
    if reward.kind not in REWARD_KINDS:
        problem(
            "reward.kind", f"unknown reward {reward.kind!r}; use one of {', '.join(REWARD_KINDS)}"
        )
    value = _compile_amount(reward.value, "reward.value", segments, problem)
    if reward.kind in PRICED and value is None:
        problem("reward.value", f"a {reward.kind} needs a value")
    if reward.kind not in PRICED and reward.value is not None:
        problem("reward.value", f"a {reward.kind} has no monetary value; give its cost instead")
    cost: Amount | None = None
    if reward.cost == "value" or (reward.cost is None and value is not None):
        if value is None:
            problem("reward.cost", "'value' needs a reward value")
    elif reward.cost is None:
        problem("reward.cost", "say what it costs (a discount-equivalent amount; 0 is allowed)")
    else:
        assert not isinstance(reward.cost, str)
        cost = _compile_amount(reward.cost, "reward.cost", segments, problem)
    durations: dict[str, timedelta] = {}
    for field_name in ("cooldown", "expires_in"):
        try:
            durations[field_name] = parse_duration(getattr(spec, field_name))
        except ValueError as exc:
            problem(field_name, str(exc))
    # a segment whose condition reads cancellation_requested may be entered or left
    # because of one: either way the rule may be answering cancellation intent
    cancels = trigger is not None and (
        trigger.event == CANCELLATION_EVENT
        or trigger.segment in cancellation_segments
        or trigger.segment_exit in cancellation_segments
    )
    if cancels and reward.kind in PRICED and not spec.after:
        problem(
            "after",
            f"a {reward.kind} answering cancellation intent must come after a pause or"
            " downgrade offer (after: [rule]), never first",
        )
    if len(problems) > before or trigger is None:
        return None
    return Rule(
        name=name,
        description=spec.description,
        trigger=trigger,
        when=when,
        reads=referenced_names(spec.when),
        kind=reward.kind,
        value=value,
        cost=cost,
        days=reward.days,
        priority=spec.priority,
        cooldown=durations["cooldown"],
        expires_in=durations["expires_in"],
        after=tuple(spec.after),
    )


def _compile_trigger(spec: TriggerSpec, segments: set[str], problem: Any) -> Trigger | None:
    for segment in (spec.segment, spec.segment_exit):
        if segment is not None and segment not in segments:
            problem("trigger", f"unknown segment {segment!r}")
            return None
    if spec.segment is not None:
        return Trigger(segment=spec.segment)
    if spec.segment_exit is not None:
        return Trigger(segment_exit=spec.segment_exit)
    etype = spec.event or ""
    model = CATALOG.get(etype) if etype in TRIGGER_EVENTS else None
    if model is None:
        problem("trigger", f"unknown trigger event {etype!r}")
        return None
    data_fields = model.model_fields["data"].annotation.model_fields  # type: ignore[union-attr]
    where: list[tuple[str, tuple[Any, ...]]] = []
    for key, wanted in spec.where.items():
        if key not in data_fields:
            problem("trigger.where", f"{etype} has no field {key!r}")
            return None
        where.append((key, tuple(wanted) if isinstance(wanted, list) else (wanted,)))
    return Trigger(event=etype, where=tuple(where), nth=spec.nth)


def _compile_amount(
    spec: AmountSpec | None, where: str, segments: set[str], problem: Any
) -> Amount | None:
    if spec is None:
        return None
    bases = [spec.fixed is not None, spec.percent is not None, bool(spec.by_segment)]
    if sum(bases) != 1:
        problem(where, "give exactly one of fixed, percent, by_segment")
        return None
    if spec.fixed is not None:
        if spec.fixed < 0:
            problem(where, f"negative amount {spec.fixed}")
            return None
        return Amount(fixed=spec.fixed, currency=spec.currency)
    if spec.percent_of not in MONEY_BASES:
        problem(where, f"percent_of must be one of {', '.join(MONEY_BASES)}")
        return None
    percents: list[tuple[str | None, Fraction]] = []
    if spec.percent is not None:
        percents.append((None, Fraction(str(spec.percent))))
    for segment, share in spec.by_segment.items():
        if segment not in segments:
            problem(where, f"unknown segment {segment!r}")
            return None
        percents.append((segment, Fraction(str(share))))
    for _, pct in percents:
        if pct < 0 or pct > 100:
            problem(where, f"percent {float(pct):g} is not between 0 and 100")
            return None
    return Amount(percent_of=spec.percent_of, percents=tuple(percents))


def _cycles(after: dict[str, tuple[str, ...]]) -> list[str]:
    """One problem per rule that is part of an ``after`` cycle."""
    problems = []
    for start in sorted(after):
        path = [start]
        stack = [(start, iter(after.get(start, ())))]
        seen = {start}
        while stack:
            _, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                continue
            if child == start:
                cycle = " -> ".join([*path, start])
                problems.append(f"rule {start!r}, field 'after': a cycle: {cycle}")
                break
            if child not in seen:
                seen.add(child)
                path.append(child)
                stack.append((child, iter(after.get(child, ()))))
    return problems


def _never(env: Any) -> bool:
    return False


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 3 and parts[:2] == ["offers", "rules"]:
        rest = ".".join(parts[3:]) or "definition"
        return f"rule {parts[2]!r}, field {rest!r}: "
    if len(parts) >= 2:
        return f"{parts[-2] if parts[0] == 'offers' else parts[0]}, field {parts[-1]!r}: "
    return f"{'.'.join(parts) or 'program'}: "
