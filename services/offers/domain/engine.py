"""Arbitration, contact policy and holdouts (pure: no I/O, no clock, no randomness).

A *moment* is one cause — an event, or a new stream day of an account — and every
rule its trigger fired. :func:`decide` picks at most one offer for it: each
eligible rule is first checked on its own (an open offer of the rule, its
cooldown, its ``after`` prerequisite, a reward it cannot price), then the
account-wide contact policy (offers per window, quiet period) applies to all of
them, and of the survivors the highest priority wins, then the highest expected
value, then the name. Everything that did not win is recorded with its reason.
The winner goes to the holdout group or to the customer by a hash of the
program's salt and the account: stable across restarts, instances and replays.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from schemas import Money
from schemas.events import AccountContext, Competitor, Explanation, Reward, SegmentChangedData
from services.offers.domain.program import FEATURE_KINDS, Amount, OffersProgram, Rule

_IDS = uuid.UUID("0b7e4a9c-5a43-4d8e-8a51-6b0b3c1f2d02")
OPEN = "issued"
MADE = ("issued", "held_out", "accepted", "declined", "expired", "redeemed")


@dataclass(frozen=True)
class PastOffer:
    """What the engine needs to know about an earlier offer of the account."""

    offer_id: str
    rule: str
    status: str  # issued, held_out, accepted, declined, expired, redeemed
    issued_at: datetime
    expires_at: datetime
    moment: str

    def is_open(self, t: datetime) -> bool:
        return self.status == OPEN and self.expires_at > t


@dataclass(frozen=True)
class Moment:
    tenant: str
    account: str
    key: str
    time: datetime
    user_id: str | None
    fired: tuple[tuple[Rule, str], ...]  # each rule with what triggered it, for people
    env: Mapping[str, Any]


@dataclass(frozen=True)
class Suppression:
    rule: str
    outcome: str  # "suppressed" (on its own or by the policy) or "lost" (to the winner)
    reason: str


@dataclass(frozen=True)
class Decision:
    offer_id: str
    rule: Rule
    holdout: bool
    reward: Reward
    expires_at: datetime
    reason: str
    explanation: Explanation
    account: AccountContext


@dataclass
class Outcome:
    decision: Decision | None = None
    suppressions: list[Suppression] = field(default_factory=list)


def in_holdout(program: OffersProgram, tenant: str, account: str) -> bool:
    """Deterministic: the same account is in or out on every instance and replay;
    changing the salt draws a new group."""
    digest = hashlib.sha256(f"{program.holdout_salt}/{tenant}/{account}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000
    return bucket < program.holdout_percent * 100


def offer_id(tenant: str, account: str, moment: str, rule: str) -> str:
    return str(uuid.uuid5(_IDS, f"{tenant}/{account}/{moment}/{rule}"))


def snapshot(data: SegmentChangedData) -> dict[str, Any]:
    """The facts a rule's ``when`` reads, from a segment transition."""
    f = data.features
    money = f.mrr or f.arr
    mrr = f.mrr.amount if f.mrr else None
    arr = f.arr.amount if f.arr else None
    env: dict[str, Any] = {
        name: getattr(f, name)
        for name in (
            "seats_purchased",
            "seats_used",
            "plan",
            "interval",
            "subscription_status",
            "days_to_renewal",
            "paid_months",
            "tenure_days",
            "membership",
            "onboarding_completed",
            "key_actions_30d",
            "active_days_30d",
            "active_day_streak",
            "weekly_streak",
            "last_nps",
            "open_tickets",
            "cancellation_requested",
        )
    }
    env.update(
        seat_utilization=f.seats_used / f.seats_purchased if f.seats_purchased else 0.0,
        mrr=mrr,
        arr=arr,
        renewal_value=arr if f.interval == "year" else mrr,
        currency=money.currency if money else None,
        adopted=frozenset(f.features_adopted or ()),
        segments=frozenset(data.segments),
        r_score=data.rfm.r if data.rfm else None,
        f_score=data.rfm.f if data.rfm else None,
        m_score=data.rfm.m if data.rfm else None,
        rfm_cell=data.rfm.cell if data.rfm else None,
    )
    return env


UNKNOWN: Mapping[str, Any] = {
    k: (frozenset() if kind == "set" else None) for k, kind in FEATURE_KINDS.items()
}
"""Facts of an account no transition has described yet: all unknown."""


def decide(program: OffersProgram, moment: Moment, history: Sequence[PastOffer]) -> Outcome:
    out = Outcome()
    t = moment.time
    env = moment.env
    eligible: list[tuple[Rule, str, Reward, Fraction, dict[str, Any]]] = []
    answered = any(p.moment == moment.key for p in history)
    for rule, trigger in moment.fired:
        if not _when(rule, env):
            continue
        reason = _rule_blocked(program, rule, t, history, answered)
        priced = None if reason else _price(program, rule, env)
        if reason is None and priced is None:
            reason = "its reward cannot be priced: the account's MRR or currency is unknown"
        if reason is not None:
            out.suppressions.append(Suppression(rule.name, "suppressed", reason))
            continue
        assert priced is not None
        reward, expected, inputs = priced
        eligible.append((rule, trigger, reward, expected, inputs))
    if not eligible:
        return out
    blocked = _policy_blocks(program, t, history)
    if blocked is not None:
        out.suppressions += [Suppression(r.name, "suppressed", blocked) for r, *_ in eligible]
        return out
    eligible.sort(key=lambda c: (-c[0].priority, -c[3], c[0].name))
    winner, trigger, reward, _, inputs = eligible[0]
    best = eligible[0][3]
    for rule, _, _, expected, _ in eligible[1:]:
        if rule.priority != winner.priority:
            why = f"priority {rule.priority} < {winner.priority}"
        elif expected != best:
            why = "same priority, lower expected value"
        else:
            why = "same priority and value, name sorts later"
        out.suppressions.append(Suppression(rule.name, "lost", f"lost to {winner.name}: {why}"))
    facts = {name: _plain(env.get(name)) for name in sorted(winner.reads) if name in env}
    facts.update(inputs)
    holdout = in_holdout(program, moment.tenant, moment.account)
    out.decision = Decision(
        offer_id=offer_id(moment.tenant, moment.account, moment.key, winner.name),
        rule=winner,
        holdout=holdout,
        reward=reward,
        expires_at=t + winner.expires_in,
        reason=f"{trigger}: {winner.description or winner.name}",
        explanation=Explanation(
            trigger=trigger,
            facts=facts,
            competitors=[
                Competitor(rule=s.rule, outcome=s.outcome, reason=s.reason)
                for s in out.suppressions
            ],
        ),
        account=account_context(env),
    )
    return out


def account_context(env: Mapping[str, Any]) -> AccountContext:
    """What the ledger's caps read: ARR and segments, as the decision saw them."""
    arr, currency = env.get("arr"), env.get("currency")
    return AccountContext(
        arr=Money(amount=arr, currency=currency) if arr is not None and currency else None,
        segments=sorted(env.get("segments") or ()),
    )


def _when(rule: Rule, env: Mapping[str, Any]) -> bool:
    try:
        return bool(rule.when(env))
    except TypeError:  # a comparison with an unknown (None) fact: not eligible
        return False


def _rule_blocked(
    program: OffersProgram, rule: Rule, t: datetime, history: Sequence[PastOffer], answered: bool
) -> str | None:
    if answered:
        return "this moment was already answered by another offer"
    mine = [p for p in history if p.rule == rule.name]
    if any(p.is_open(t) for p in mine):
        return "an offer of this rule is still open"
    # distances, not "since": an input that arrives late (another topic ran ahead)
    # is still judged against offers made after it in stream time
    near = [p.issued_at for p in mine if abs(t - p.issued_at) < rule.cooldown]
    if near:
        return f"cooldown {_human(rule.cooldown)} since the offer of {near[-1].date().isoformat()}"
    if rule.after and not any(p.rule in rule.after for p in history):
        return f"comes after {' or '.join(rule.after)}, which was not offered yet"
    return None


def reason_kind(reason: str) -> str:
    """What a suppression's reason says without its particulars, for counting them:
    'cooldown 60d since the offer of 2026-06-14' -> 'cooldown 60d', 'lost to x: ...'
    -> 'lost to x', the two contact-policy reasons by which limit bound."""
    if reason.startswith("cooldown"):
        return reason.split(" since ")[0]
    if reason.startswith("lost to"):
        return reason.split(":")[0]
    if reason.startswith("contact policy: quiet"):
        return "contact policy: quiet period"
    if reason.startswith("contact policy"):
        return "contact policy: offers per window"
    return reason


def _policy_blocks(program: OffersProgram, t: datetime, history: Sequence[PastOffer]) -> str | None:
    """Measured both ways from ``t``, so that an input arriving after later ones
    (the service reads five topics) cannot squeeze an offer in between them:
    conservative, never more offers than the policy allows in any window."""
    recent = [p.issued_at for p in history if abs(t - p.issued_at) < program.window]
    if len(recent) >= program.max_offers:
        return (
            f"contact policy: {len(recent)} offers in the last {_human(program.window)}"
            f" (at most {program.max_offers})"
        )
    if any(abs(t - p.issued_at) < program.quiet_period for p in history):
        return f"contact policy: quiet period of {_human(program.quiet_period)} after an offer"
    return None


def _price(
    program: OffersProgram, rule: Rule, env: Mapping[str, Any]
) -> tuple[Reward, Fraction, dict[str, Any]] | None:
    """The reward in exact minor units (percentages are floored to the cent), the
    expected value used to rank it, and the inputs that priced it."""
    inputs: dict[str, Any] = {}
    value = _amount(program, rule.value, env, inputs, "value") if rule.value else None
    if rule.value is not None and value is None:
        return None
    cost = value if rule.cost is None else _amount(program, rule.cost, env, inputs, "cost")
    if cost is None:
        return None
    if value is not None and cost.currency != value.currency:
        return None
    reward = Reward(kind=rule.kind, value=value, cost=cost, days=rule.days)
    return reward, Fraction(value.amount if value else cost.amount), inputs


def _amount(
    program: OffersProgram,
    amount: Amount,
    env: Mapping[str, Any],
    inputs: dict[str, Any],
    label: str,
) -> Money | None:
    currency = amount.currency or env.get("currency") or program.default_currency
    if amount.fixed is not None:
        return Money(amount=amount.fixed, currency=currency)
    base = env.get(amount.percent_of or "")
    if base is None or env.get("currency") is None:
        return None
    segments = env.get("segments") or frozenset()
    for segment, percent in amount.percents:
        if segment is None or segment in segments:
            inputs[f"{label}_basis"] = {amount.percent_of: base, "percent": float(percent)}
            if segment is not None:
                inputs[f"{label}_basis"]["segment"] = segment
            floored = int(Fraction(base) * percent / 100)
            return Money(amount=floored, currency=env["currency"])
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def _human(d: timedelta) -> str:
    if d % timedelta(days=1) == timedelta(0):
        return f"{d.days}d"
    if d % timedelta(hours=1) == timedelta(0):
        return f"{int(d.total_seconds() // 3600)}h"
    return f"{int(d.total_seconds() // 60)}m"


def counts_after(
    rules: Iterable[Rule], counts: dict[str, int], event_type: str, data: dict[str, Any]
) -> list[tuple[Rule, str]]:
    """Counts an account event (product, billing, support, or an insights signal
    such as ``bundle.ready``) against the event-triggered rules it matches; returns
    those it fires (every match, or the N-th for ``nth``), each with what fired it,
    for people."""
    fired = []
    for rule in rules:
        if not rule.trigger.matches(event_type, data):
            continue
        key = rule.trigger.counter(rule.name, data)
        n = counts[key] = counts.get(key, 0) + 1
        if rule.trigger.nth is None or n == rule.trigger.nth:
            fired.append((rule, rule.trigger.describe_match(data, n)))
    return fired
