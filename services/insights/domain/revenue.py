"""Net revenue retention, the up-sell rate of loyalty members, and what members
pay against non-members — from the subscription, invoice and segment facts.

**Members.** An account is a member at time t when it is in one of the
program's ``insights.membership_segments`` (default ``member_new`` and
``member_active``) just before t — as the segment changes read so far say.

**NRR** of a period [s, e): the accounts with MRR at s (current subscriptions
only), their start MRR, and at e each one's MRR again: a larger one is
expansion, a smaller non-zero one contraction, none (canceled, paused, gone) is
churn. NRR = (start + expansion - contraction - churn) / start. Reported per
calendar month (the month's cohort of paying accounts) and over the trailing 12
months, split by membership at s and by exposure (an account with an
``offer.issued`` before e is treated, one with an ``offer.held_out`` held out:
the holdout draw is by account, so an account is only ever one of the two).

**Up-sell rate** = up-sell transactions by members / all transactions by
members x 100. A transaction is a paid invoice or a subscription change (a
``billing.subscription_updated`` after the account's first that changes its
plan, interval, seats, MRR or status; a renewal restating it is not one), as
``insights.transactions`` lists; an up-sell is a change of a current
subscription that raises MRR through a new plan or more seats, or moves it from
monthly to annual without lowering MRR (``insights.upsell``). Bands: below
15 % weak, 15-25 % healthy, above 25 % exceptional (``insights.upsell_bands``)."""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.insights.domain.facts import (
    Exposure,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.lift import Timelines, kept_mrr
from services.insights.domain.program import InsightsProgram


class Segments:
    """Each account's segment memberships over time."""

    def __init__(self, changes: Iterable[SegmentChange]) -> None:
        rows: dict[str, list[SegmentChange]] = defaultdict(list)
        for c in changes:
            rows[c.account].append(c)
        self._changes: dict[str, list[SegmentChange]] = {}
        self._times: dict[str, list[datetime]] = {}
        for account, cs in rows.items():
            cs.sort(key=lambda c: (c.at, c.event_id))
            self._changes[account] = cs
            self._times[account] = [c.at for c in cs]

    def before(self, account: str, t: datetime) -> set[str]:
        """The segments the account was in just before ``t``."""
        times = self._times.get(account)
        if not times:
            return set()
        inside: set[str] = set()
        for c in self._changes[account][: bisect.bisect_left(times, t)]:
            if c.entered:
                inside.add(c.segment)
            else:
                inside.discard(c.segment)
        return inside

    def accounts(self) -> Iterable[str]:
        return self._changes.keys()


def month_start(t: datetime) -> datetime:
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month(t: datetime) -> datetime:
    return datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)


def months_between(first: datetime, now: datetime) -> list[datetime]:
    out, m = [], month_start(first)
    while m <= now:
        out.append(m)
        m = next_month(m)
    return out


@dataclass
class Retention:
    """One group's NRR over one period (money in minor units a month)."""

    accounts: int = 0
    start_mrr: int = 0
    expansion: int = 0
    contraction: int = 0
    churn: int = 0
    churned_accounts: int = 0

    @property
    def nrr(self) -> float | None:
        if not self.start_mrr:
            return None
        return (self.start_mrr + self.expansion - self.contraction - self.churn) / self.start_mrr


GROUPS = ("all", "members", "non_members", "treated", "held_out", "not_exposed")


@dataclass
class Period:
    start: datetime
    end: datetime
    complete: bool
    groups: dict[str, Retention] = field(default_factory=dict)


def _exposure_index(exposures: Iterable[Exposure]) -> dict[str, tuple[datetime, bool]]:
    """Account -> (its first exposure's time, held out)."""
    first: dict[str, tuple[datetime, bool]] = {}
    for e in exposures:
        if e.account not in first or e.at < first[e.account][0]:
            first[e.account] = (e.at, e.holdout)
    return first


def _period(
    start: datetime,
    end: datetime,
    now: datetime,
    timelines: Timelines,
    segments: Segments,
    exposed: dict[str, tuple[datetime, bool]],
    program: InsightsProgram,
) -> Period:
    p = Period(start, end, end <= now, {g: Retention() for g in GROUPS})
    for account in timelines.accounts():
        begin = kept_mrr(timelines.at(account, start))
        if begin <= 0:
            continue
        finish = kept_mrr(timelines.at(account, min(end, now)))
        member = bool(segments.before(account, start) & program.membership_segments)
        exposure = exposed.get(account)
        if exposure is None or exposure[0] >= end:
            arm = "not_exposed"
        else:
            arm = "held_out" if exposure[1] else "treated"
        for g in ("all", "members" if member else "non_members", arm):
            r = p.groups[g]
            r.accounts += 1
            r.start_mrr += begin
            if finish == 0:
                r.churn += begin
                r.churned_accounts += 1
            elif finish > begin:
                r.expansion += finish - begin
            else:
                r.contraction += begin - finish
    return p


@dataclass
class NrrReport:
    months: list[Period]
    trailing_12m: Period | None


def nrr_report(
    subscriptions: Sequence[SubscriptionFact],
    changes: Iterable[SegmentChange],
    exposures: Iterable[Exposure],
    now: datetime,
    program: InsightsProgram,
) -> NrrReport:
    """NRR per calendar month (the last one may be in progress) and over the
    trailing 12 months to ``now``."""
    if not subscriptions:
        return NrrReport([], None)
    timelines = Timelines(subscriptions)
    segments = Segments(changes)
    exposed = _exposure_index(exposures)
    first = min(s.at for s in subscriptions)
    months = [
        _period(m, next_month(m), now, timelines, segments, exposed, program)
        for m in months_between(first, now)
    ]
    start = now - timedelta(days=365)
    trailing = _period(start, now, now, timelines, segments, exposed, program)
    trailing.complete = start >= first
    return NrrReport(months, trailing)


@dataclass
class UpsellCount:
    transactions: int = 0
    upsells: int = 0

    @property
    def rate(self) -> float | None:
        return 100.0 * self.upsells / self.transactions if self.transactions else None


def band(rate: float | None, program: InsightsProgram) -> str | None:
    """``weak`` below the low band, ``healthy`` inside, ``exceptional`` above."""
    if rate is None:
        return None
    low, high = program.upsell_bands
    return "weak" if rate < low else "exceptional" if rate > high else "healthy"


def changed(prev: SubscriptionFact, new: SubscriptionFact) -> bool:
    """A subscription change: plan, interval, seats, MRR or status differ (a
    renewal's restatement of the same subscription is not one)."""
    return (prev.plan, prev.interval, prev.seats, prev.mrr, prev.status) != (
        new.plan,
        new.interval,
        new.seats,
        new.mrr,
        new.status,
    )


def is_upsell(prev: SubscriptionFact, new: SubscriptionFact, program: InsightsProgram) -> bool:
    """A current subscription's change that raises MRR through the plan or the
    seats, or moves it from monthly to annual without lowering MRR (the
    commitment grows a year's worth)."""
    if not new.current:
        return False
    kinds = program.upsell
    if "annual" in kinds and prev.interval == "month" and new.interval == "year":
        return new.mrr >= prev.mrr
    return new.mrr > prev.mrr and (
        ("plan" in kinds and new.plan != prev.plan) or ("seats" in kinds and new.seats > prev.seats)
    )


@dataclass
class UpsellReport:
    overall: UpsellCount
    non_members: UpsellCount
    by_month: dict[str, UpsellCount]
    by_segment: dict[str, UpsellCount]
    by_month_segment: dict[tuple[str, str], UpsellCount]


def transactions(
    subscriptions: Sequence[SubscriptionFact],
    invoices: Iterable[InvoiceFact],
    program: InsightsProgram,
) -> list[tuple[str, datetime, bool]]:
    """Every transaction as (account, time, is an up-sell), in time order."""
    out: list[tuple[str, datetime, bool]] = []
    if "invoice_paid" in program.transactions:
        out += [(i.account, i.at, False) for i in invoices]
    if "subscription_change" in program.transactions:
        timelines = Timelines(subscriptions)
        for account in timelines.accounts():
            history = timelines.history(account)
            out += [
                (account, new.at, is_upsell(prev, new, program))
                for prev, new in itertools.pairwise(history)
                if changed(prev, new)
            ]
    out.sort(key=lambda x: (x[1], x[0]))
    return out


def upsell_report(
    subscriptions: Sequence[SubscriptionFact],
    invoices: Iterable[InvoiceFact],
    changes: Iterable[SegmentChange],
    program: InsightsProgram,
) -> UpsellReport:
    """The up-sell rate of members overall, per month and per segment (a member's
    transaction counts for each segment it was in), and the non-members' rate."""
    segments = Segments(changes)
    r = UpsellReport(UpsellCount(), UpsellCount(), {}, {}, {})
    for account, t, upsell in transactions(subscriptions, invoices, program):
        inside = segments.before(account, t)
        counts = [r.overall, r.by_month.setdefault(f"{t:%Y-%m}", UpsellCount())]
        if not inside & program.membership_segments:
            counts = [r.non_members]
        else:
            for s in sorted(inside):
                counts.append(r.by_segment.setdefault(s, UpsellCount()))
                counts.append(r.by_month_segment.setdefault((f"{t:%Y-%m}", s), UpsellCount()))
        for c in counts:
            c.transactions += 1
            c.upsells += int(upsell)
    return r


@dataclass
class MemberValue:
    month: str
    members: int
    non_members: int
    paid_members: int  # minor units paid in the month
    paid_non_members: int
    mrr_members: int  # MRR at the month's end (or now)
    mrr_non_members: int

    @property
    def paid_per_member(self) -> float | None:
        return self.paid_members / self.members if self.members else None

    @property
    def paid_per_non_member(self) -> float | None:
        return self.paid_non_members / self.non_members if self.non_members else None

    @property
    def mrr_per_member(self) -> float | None:
        return self.mrr_members / self.members if self.members else None

    @property
    def mrr_per_non_member(self) -> float | None:
        return self.mrr_non_members / self.non_members if self.non_members else None


def member_value(
    subscriptions: Sequence[SubscriptionFact],
    invoices: Sequence[InvoiceFact],
    changes: Sequence[SegmentChange],
    now: datetime,
    program: InsightsProgram,
) -> list[MemberValue]:
    """Per month: what members and non-members paid, and their MRR at its end.
    The accounts counted are those insights has heard of by the month's end."""
    times = [s.at for s in subscriptions] + [c.at for c in changes] + [i.at for i in invoices]
    if not times:
        return []
    timelines = Timelines(subscriptions)
    segments = Segments(changes)
    first_seen: dict[str, datetime] = {}
    for account, t in [(s.account, s.at) for s in subscriptions] + [
        (c.account, c.at) for c in changes
    ]:
        if account not in first_seen or t < first_seen[account]:
            first_seen[account] = t
    paid: dict[tuple[str, bool], int] = defaultdict(int)
    for i in invoices:
        member = bool(segments.before(i.account, i.at) & program.membership_segments)
        paid[(f"{i.at:%Y-%m}", member)] += i.amount
    out = []
    for m in months_between(min(times), now):
        end = min(next_month(m), now)
        counts = {True: 0, False: 0}
        mrr = {True: 0, False: 0}
        for account, seen in first_seen.items():
            if seen >= end:
                continue
            member = bool(segments.before(account, end) & program.membership_segments)
            counts[member] += 1
            mrr[member] += kept_mrr(timelines.at(account, end))
        key = f"{m:%Y-%m}"
        out.append(
            MemberValue(
                key,
                counts[True],
                counts[False],
                paid[(key, True)],
                paid[(key, False)],
                mrr[True],
                mrr[False],
            )
        )
    return out
