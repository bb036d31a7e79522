"""Lift per rule against the holdout, net of what the credits cost.

**Exposure.** Every ``offer.issued`` (treated) and ``offer.held_out`` (held out)
is one exposure at its decision time t0, whatever the account did with the offer
afterwards (intention to treat). The holdout draw is by account, so the two
groups of a rule are comparable by construction.

**Outcomes**, read from the account's subscription history over the horizon H
(``insights.horizon``, default 90 days of stream time), each with its
pre-exposure value over the H before t0 as the CUPED covariate:

- ``retained``: the subscription at t0 + H is current (active, trialing or
  past_due; canceled and paused are not). Covariate: current at t0.
- ``mrr_change``: MRR kept at t0 + H (0 when not retained) minus MRR at t0, in
  minor units a month. Covariate: MRR at t0 minus MRR kept at t0 - H.
- ``converted_to_annual``: monthly at t0, current and yearly at t0 + H.
  Covariate: monthly at t0 - H and yearly at t0.
- ``seats_added``: seats paid for at t0 + H minus at t0 (none when not current,
  as with MRR). Covariate: the same over the H before t0.

An exposure is **matured** once the tenant's stream time has reached t0 + H;
younger ones are counted as **maturing** and left out of the estimates.

**Intervals** (``stats.py``): Newcombe's hybrid score interval from two Wilson
intervals for the proportions, Welch's t interval for the means; CUPED applies
the pooled OLS slope of the outcome on its covariate before Welch.

**Cost** of a rule is what the ledger booked for its treated exposures: each
granted credit at its discount-equivalent cost, less the share of the credit that
expired unredeemed (breakage costs nothing). Rejected credits cost nothing;
pending ones are reported beside the cost, not in it.

**Net incremental value** = the raw (not CUPED) incremental MRR per treated
exposure times the number of treated exposures, minus the cost; its interval is
the MRR difference's interval scaled the same way (the cost is known exactly).
Mind the units: it sets one month of MRR gained (or kept) at the horizon's end
against a one-off cost, so a positive value means the credits paid for
themselves within a month of revenue; a month's MRR times the expected lifetime
in months is the larger prize."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.insights.domain import stats
from services.insights.domain.facts import CreditFact, Exposure, SubscriptionFact
from services.insights.domain.program import InsightsProgram

PROPORTIONS = ("retained", "converted_to_annual")
MEANS = ("mrr_change", "seats_added")
OUTCOMES = ("retained", "mrr_change", "converted_to_annual", "seats_added")


class Timelines:
    """Each account's subscription history, to read its state at any time."""

    def __init__(self, facts: Iterable[SubscriptionFact]) -> None:
        by_account: dict[str, list[SubscriptionFact]] = defaultdict(list)
        for f in facts:
            by_account[f.account].append(f)
        self._facts: dict[str, list[SubscriptionFact]] = {}
        self._times: dict[str, list[datetime]] = {}
        for account, rows in by_account.items():
            rows.sort(key=lambda f: (f.at, f.event_id))
            self._facts[account] = rows
            self._times[account] = [f.at for f in rows]

    def at(self, account: str, t: datetime) -> SubscriptionFact | None:
        """The subscription as it stood at ``t`` (the last change at or before it)."""
        times = self._times.get(account)
        if not times:
            return None
        i = bisect.bisect_right(times, t)
        return self._facts[account][i - 1] if i else None

    def accounts(self) -> Iterable[str]:
        return self._facts.keys()

    def history(self, account: str) -> list[SubscriptionFact]:
        return self._facts.get(account, [])


def kept_mrr(s: SubscriptionFact | None) -> int:
    """MRR that still comes in: 0 unless the subscription is current."""
    return s.mrr if s is not None and s.current else 0


def _seats(s: SubscriptionFact | None) -> int:
    """Seats paid for: none once canceled or paused, as with MRR."""
    return s.seats if s is not None and s.current else 0


def _yearly(s: SubscriptionFact | None) -> bool:
    return s is not None and s.current and s.interval == "year"


def _monthly(s: SubscriptionFact | None) -> bool:
    return s is not None and s.interval == "month"


def outcomes(
    exposure: Exposure, timelines: Timelines, program: InsightsProgram
) -> dict[str, tuple[float, float]]:
    """Outcome name -> (value over the horizon, pre-exposure covariate)."""
    a, t0, h = exposure.account, exposure.at, program.horizon
    before, at0, after = timelines.at(a, t0 - h), timelines.at(a, t0), timelines.at(a, t0 + h)
    return {
        "retained": (
            float(after is not None and after.current),
            float(at0 is not None and at0.current),
        ),
        "mrr_change": (
            float(kept_mrr(after) - kept_mrr(at0)),
            float(kept_mrr(at0) - kept_mrr(before)),
        ),
        "converted_to_annual": (
            float(_monthly(at0) and _yearly(after)),
            float(_monthly(before) and _yearly(at0)),
        ),
        "seats_added": (float(_seats(after) - _seats(at0)), float(_seats(at0) - _seats(before))),
    }


@dataclass(frozen=True)
class Cost:
    """What the ledger booked for a group's treated exposures (minor units)."""

    currency: str
    granted: int = 0  # discount-equivalent cost of the granted credits
    breakage: int = 0  # the part of it that expired unredeemed
    pending: int = 0  # waiting for an approver: not in ``booked``
    rejected_offers: int = 0
    granted_offers: int = 0
    pending_offers: int = 0

    @property
    def booked(self) -> int:
        return self.granted - self.breakage


def offer_costs(credits: Iterable[CreditFact]) -> dict[str, Cost]:
    """Per offer id, what its ledger decisions add up to."""
    by_offer: dict[str, list[CreditFact]] = defaultdict(list)
    for c in credits:
        by_offer[c.offer_id].append(c)
    out: dict[str, Cost] = {}
    for offer_id, rows in by_offer.items():
        granted = [r for r in rows if r.outcome == "granted"]
        rejected = [r for r in rows if r.outcome == "rejected"]
        pending = [r for r in rows if r.outcome == "pending"]
        expired = sum(r.amount for r in rows if r.outcome == "expired")
        cost = sum(r.cost for r in granted)
        value = sum(r.amount for r in granted)
        breakage = min(cost, cost * expired // value) if value else 0
        settled = bool(granted or rejected)
        out[offer_id] = Cost(
            currency=rows[0].currency,
            granted=cost,
            breakage=breakage,
            pending=0 if settled else sum(r.cost for r in pending),
            rejected_offers=int(bool(rejected) and not granted),
            granted_offers=int(bool(granted)),
            pending_offers=int(bool(pending) and not settled),
        )
    return out


def _sum_costs(costs: Iterable[Cost], currency: str) -> Cost:
    total = Cost(currency)
    for c in costs:
        total = Cost(
            currency,
            total.granted + c.granted,
            total.breakage + c.breakage,
            total.pending + c.pending,
            total.rejected_offers + c.rejected_offers,
            total.granted_offers + c.granted_offers,
            total.pending_offers + c.pending_offers,
        )
    return total


@dataclass(frozen=True)
class OutcomeLift:
    outcome: str
    kind: str  # "proportion" or "mean"
    treated: float
    held_out: float
    raw: stats.Difference | None
    cuped: stats.Difference | None
    mde: float  # the smallest absolute difference this sample detects (80 % power)


@dataclass(frozen=True)
class NetValue:
    """Incremental MRR over the treated exposures minus the cost (minor units)."""

    estimate: float
    low: float
    high: float
    incremental_mrr: float
    cost: int
    currency: str


@dataclass
class Lift:
    """One rule's readout (or one rule's among accounts in one segment)."""

    rule: str
    segment: str | None
    treated: int  # matured exposures
    held_out: int
    maturing_treated: int
    maturing_held_out: int
    enough_data: bool
    outcomes: list[OutcomeLift] = field(default_factory=list)
    cost: Cost | None = None
    net_value: NetValue | None = None
    by_segment: list[Lift] = field(default_factory=list)


def _outcome_lift(
    name: str, t: Sequence[tuple[float, float]], c: Sequence[tuple[float, float]], conf: float
) -> OutcomeLift:
    yt, xt = [v for v, _ in t], [x for _, x in t]
    yc, xc = [v for v, _ in c], [x for _, x in c]
    mt = sum(yt) / len(yt) if yt else 0.0
    mc = sum(yc) / len(yc) if yc else 0.0
    raw: stats.Difference | None = None
    cuped: stats.Difference | None = None
    proportion = name in PROPORTIONS
    if proportion:
        p = (sum(yt) + sum(yc)) / max(1, len(yt) + len(yc))
        mde = stats.mde_proportion(p, len(yt), len(yc), conf)
    else:
        sd_t = stats.mean_sd(yt)[1] if yt else 0.0
        sd_c = stats.mean_sd(yc)[1] if yc else 0.0
        mde = stats.mde_mean(sd_t, sd_c, len(yt), len(yc), conf)
    if len(yt) >= 2 and len(yc) >= 2:
        if proportion:
            raw = stats.newcombe_difference(round(sum(yt)), len(yt), round(sum(yc)), len(yc), conf)
        else:
            raw = stats.welch_difference(yt, yc, conf)
        cuped = stats.cuped_difference(yt, xt, yc, xc, conf)
    return OutcomeLift(name, "proportion" if proportion else "mean", mt, mc, raw, cuped, mde)


def _readout(
    rule: str,
    segment: str | None,
    exposures: Sequence[Exposure],
    now: datetime,
    timelines: Timelines,
    costs: dict[str, Cost],
    program: InsightsProgram,
) -> Lift:
    matured = [e for e in exposures if e.at + program.horizon <= now]
    maturing = [e for e in exposures if e.at + program.horizon > now]
    treated = [e for e in matured if not e.holdout]
    held = [e for e in matured if e.holdout]
    currency = exposures[0].currency if exposures else "USD"
    cost = _sum_costs((costs[e.offer_id] for e in treated if e.offer_id in costs), currency)
    enough = len(treated) >= program.min_exposures and len(held) >= program.min_exposures
    lift = Lift(
        rule=rule,
        segment=segment,
        treated=len(treated),
        held_out=len(held),
        maturing_treated=sum(not e.holdout for e in maturing),
        maturing_held_out=sum(e.holdout for e in maturing),
        enough_data=enough,
        cost=cost,
    )
    if not treated and not held:
        return lift
    values_t = [outcomes(e, timelines, program) for e in treated]
    values_c = [outcomes(e, timelines, program) for e in held]
    lift.outcomes.extend(
        _outcome_lift(
            name, [v[name] for v in values_t], [v[name] for v in values_c], program.confidence
        )
        for name in OUTCOMES
    )
    mrr = next(o for o in lift.outcomes if o.outcome == "mrr_change")
    if enough and mrr.raw is not None:
        n = len(treated)
        lift.net_value = NetValue(
            estimate=mrr.raw.diff * n - cost.booked,
            low=mrr.raw.low * n - cost.booked,
            high=mrr.raw.high * n - cost.booked,
            incremental_mrr=mrr.raw.diff * n,
            cost=cost.booked,
            currency=currency,
        )
    return lift


def lift_report(
    exposures: Iterable[Exposure],
    subscriptions: Iterable[SubscriptionFact],
    credits: Iterable[CreditFact],
    now: datetime,
    program: InsightsProgram,
    rules: Sequence[str] = (),
) -> list[Lift]:
    """Per rule (in ``rules`` order first, then by name), its readout and one per
    segment the accounts were in at decision time."""
    timelines = Timelines(subscriptions)
    costs = offer_costs(credits)
    by_rule: dict[str, list[Exposure]] = defaultdict(list)
    for e in exposures:
        by_rule[e.rule].append(e)
    order = [r for r in rules if r in by_rule] + sorted(set(by_rule) - set(rules))
    out: list[Lift] = []
    for rule in order:
        group = sorted(by_rule[rule], key=lambda e: (e.at, e.offer_id))
        lift = _readout(rule, None, group, now, timelines, costs, program)
        by_segment: dict[str, list[Exposure]] = defaultdict(list)
        for e in group:
            for s in e.segments:
                by_segment[s].append(e)
        lift.by_segment.extend(
            _readout(rule, s, rows, now, timelines, costs, program)
            for s, rows in sorted(by_segment.items())
        )
        out.append(lift)
    return out
