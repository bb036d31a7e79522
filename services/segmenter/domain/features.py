"""Account state, the reducer that folds events into it, and the features that
segment predicates read.

The state is built so that folding is insensitive to the order of events within
the allowed lateness: counts live in per-day buckets keyed by event time, active
days in merged runs, "latest" facts carry the event time that set them (the
newest event wins; a tie goes to the one processed later). Features are then a
pure function of the state and an as-of day.

Rolling windows are exact at day granularity (UTC): "in the last N days" means
on a day ``d`` with ``as_of - N < d``, which includes any later day already seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from schemas import Event
from schemas.events import (
    CancellationRequested,
    FeatureUsed,
    InvoicePaid,
    Login,
    NpsSubmitted,
    OnboardingCompleted,
    SeatsChanged,
    SubscriptionUpdated,
    TicketClosed,
    TicketOpened,
)
from services.segmenter.domain.days import day_of, month_of, week_of

WINDOWS = (7, 30, 90)
NEW_MEMBER_DAYS = 30
WEEKLY_HISTORY_DAYS = 2 * 366
"""Active-day runs older than this are dropped: weekly streaks cap at ~104 weeks."""


@dataclass(frozen=True, slots=True)
class EventSelector:
    """An event type, optionally only its key actions (``product.feature_used:key_action``)."""

    type: str
    key_action_only: bool = False

    def matches(self, event: Event) -> bool:
        if event.type != self.type:
            return False
        return not self.key_action_only or (
            isinstance(event, FeatureUsed) and event.data.key_action
        )

    def __str__(self) -> str:
        return self.type + (":key_action" if self.key_action_only else "")


@dataclass(frozen=True, slots=True)
class RfmConfig:
    """What counts for recency, frequency and monetary value (from the program)."""

    recency_events: tuple[EventSelector, ...]
    frequency_events: tuple[EventSelector, ...]
    frequency_window_days: int = 90
    monetary: str = "mrr"  # mrr | arr | paid_total
    monetary_window_days: int = 365

    @property
    def horizon_days(self) -> int:
        return max(*WINDOWS, self.frequency_window_days, self.monetary_window_days)


@dataclass
class AccountState:
    """Everything the segmenter remembers about one account (JSON-serialisable)."""

    first_seen_day: int | None = None
    last_login_at: datetime | None = None
    last_key_action_at: datetime | None = None
    last_activity_at: datetime | None = None
    active_runs: list[list[int]] = field(default_factory=list)  # merged [first, last] days
    key_actions: dict[int, int] = field(default_factory=dict)  # day -> count
    rfm_recency_day: int | None = None
    rfm_frequency: dict[int, int] = field(default_factory=dict)  # day -> count
    paid: dict[int, int] = field(default_factory=dict)  # day -> minor units
    paid_months: list[str] = field(default_factory=list)
    features_adopted: list[str] = field(default_factory=list)
    feature_uses: dict[str, int] = field(default_factory=dict)
    seats_purchased: int = 0
    seats_used: int = 0
    seats_used_at: datetime | None = None
    plan: str | None = None
    interval: str | None = None
    mrr_amount: int | None = None
    currency: str | None = None
    subscription_status: str | None = None
    renewal_date: date | None = None
    subscription_at: datetime | None = None
    first_subscribed_day: int | None = None
    onboarding_completed_at: datetime | None = None
    cancellation_requested_at: datetime | None = None
    last_nps: int | None = None
    last_nps_at: datetime | None = None
    open_tickets: list[str] = field(default_factory=list)
    last_user_id: str | None = None
    segments: dict[str, datetime] = field(default_factory=dict)  # name -> member since
    evaluated_day: int | None = None
    rfm_moved: bool = False  # RFM values changed since the tenant's last breakpoint draw
    due_day: int | None = 0  # next day a rollover must evaluate it (None: never by time)

    # ------------------------------------------------------------ reducer

    def apply(self, event: Event, rfm: RfmConfig) -> None:
        """Folds one (accepted) event into the state."""
        t = event.time
        day = day_of(t)
        self.first_seen_day = min_opt(self.first_seen_day, day)
        user = getattr(event.data, "user_id", None)
        if user is not None:
            self.last_user_id = user
        if any(s.matches(event) for s in rfm.recency_events):
            self.rfm_recency_day = max_opt(self.rfm_recency_day, day)
        if any(s.matches(event) for s in rfm.frequency_events):
            self.rfm_frequency[day] = self.rfm_frequency.get(day, 0) + 1

        if isinstance(event, Login):
            self.last_login_at = max_opt(self.last_login_at, t)
            self._active(day, t)
        elif isinstance(event, FeatureUsed):
            self._active(day, t)
            name = event.data.feature
            self.feature_uses[name] = self.feature_uses.get(name, 0) + 1
            if name not in self.features_adopted:
                self.features_adopted = sorted([*self.features_adopted, name])
            if event.data.key_action:
                self.last_key_action_at = max_opt(self.last_key_action_at, t)
                self.key_actions[day] = self.key_actions.get(day, 0) + 1
        elif isinstance(event, OnboardingCompleted):
            self.onboarding_completed_at = min_opt(self.onboarding_completed_at, t)
        elif isinstance(event, SeatsChanged):
            if self.seats_used_at is None or t >= self.seats_used_at:
                self.seats_used, self.seats_used_at = event.data.seats_used, t
        elif isinstance(event, SubscriptionUpdated):
            self.first_subscribed_day = min_opt(self.first_subscribed_day, day)
            if self.subscription_at is None or t >= self.subscription_at:
                d = event.data
                self.subscription_at = t
                self.plan, self.interval, self.subscription_status = d.plan, d.interval, d.status
                self.seats_purchased, self.renewal_date = d.seats_purchased, d.renewal_date
                self.mrr_amount, self.currency = d.mrr.amount, d.mrr.currency
        elif isinstance(event, InvoicePaid):
            self.paid[day] = self.paid.get(day, 0) + event.data.amount.amount
            self.currency = self.currency or event.data.amount.currency
            month = month_of(day)
            if month not in self.paid_months:
                self.paid_months = sorted([*self.paid_months, month])
        elif isinstance(event, CancellationRequested):
            self.cancellation_requested_at = max_opt(self.cancellation_requested_at, t)
        elif isinstance(event, TicketOpened):
            if event.data.ticket_id not in self.open_tickets:
                self.open_tickets = sorted([*self.open_tickets, event.data.ticket_id])
        elif isinstance(event, TicketClosed):
            self.open_tickets = [x for x in self.open_tickets if x != event.data.ticket_id]
        elif isinstance(event, NpsSubmitted) and (
            self.last_nps_at is None or t >= self.last_nps_at
        ):
            self.last_nps, self.last_nps_at = event.data.score, t

    def _active(self, day: int, t: datetime) -> None:
        self.last_activity_at = max_opt(self.last_activity_at, t)
        self.active_runs = add_day(self.active_runs, day)

    def prune(self, as_of: int, rfm: RfmConfig) -> None:
        """Drops buckets no window can reach any more (as_of only moves forward)."""
        keep_from = as_of - rfm.horizon_days
        for buckets in (self.key_actions, self.rfm_frequency, self.paid):
            for d in [d for d in buckets if d <= keep_from]:
                del buckets[d]
        cutoff = as_of - WEEKLY_HISTORY_DAYS
        self.active_runs = [r for r in self.active_runs if r[1] > cutoff]

    # ------------------------------------------------------------ features

    def features(self, as_of: int, rfm: RfmConfig) -> dict[str, Any]:
        """Every named feature as of ``as_of`` (predicates read them lazily instead,
        through :class:`FeatureView`)."""
        view = FeatureView(self, as_of, rfm)
        return {name: view[name] for name in FEATURES}

    def membership(self, as_of: int) -> str:
        """non_member (never subscribed), new (first 30 days), active, expired
        (canceled, paused, or past its renewal date)."""
        if self.subscription_at is None or self.first_subscribed_day is None:
            return "non_member"
        lapsed = self.renewal_date is not None and self.renewal_date.toordinal() < as_of
        if self.subscription_status in ("canceled", "paused") or lapsed:
            return "expired"
        if as_of - self.first_subscribed_day < NEW_MEMBER_DAYS:
            return "new"
        return "active"

    def active_day_streak(self, as_of: int) -> int:
        """Consecutive active days ending at the latest one, if that is on or after
        the day before ``as_of``; else 0."""
        if not self.active_runs:
            return 0
        first, last = self.active_runs[-1]
        return last - first + 1 if last >= as_of - 1 else 0

    def weekly_streak(self, as_of: int) -> int:
        """Consecutive weeks (Monday-based) with activity, ending at the current or
        the previous week."""
        if not self.active_runs:
            return 0
        weeks: set[int] = set()
        for first, last in self.active_runs:
            weeks.update(range(week_of(first), week_of(last) + 1))
        latest = max(weeks)
        if latest < week_of(as_of) - 1:
            return 0
        streak = 0
        while latest - streak in weeks:
            streak += 1
        return streak

    def rfm_values(self, as_of: int, rfm: RfmConfig) -> tuple[int, int, int]:
        """Raw R (the day of the last qualifying event, -1 if none: larger is more
        recent), F (qualifying events in the window) and M (minor units)."""
        r = self.rfm_recency_day if self.rfm_recency_day is not None else -1
        f = window_sum(self.rfm_frequency, as_of, rfm.frequency_window_days)
        mrr = self.mrr_amount if self.subscription_at is not None else None
        if rfm.monetary == "paid_total":
            m = window_sum(self.paid, as_of, rfm.monetary_window_days)
        elif rfm.monetary == "arr":
            m = (mrr or 0) * 12
        else:
            m = mrr or 0
        return r, f, m


def since(as_of: int, t: datetime | None) -> int | None:
    return None if t is None else max(as_of - day_of(t), 0)


def window_sum(buckets: dict[int, int], as_of: int, days: int) -> int:
    if not buckets:
        return 0
    cut = as_of - days
    return sum([v for d, v in buckets.items() if d > cut])


def active_days_in(runs: list[list[int]], as_of: int, days: int) -> int:
    lo = as_of - days + 1
    return sum(max(0, last - max(first, lo) + 1) for first, last in runs if last >= lo)


def add_day(runs: list[list[int]], day: int) -> list[list[int]]:
    """Inserts ``day`` into sorted, merged, non-adjacent runs of days."""
    out: list[list[int]] = []
    placed = False
    for first, last in runs:
        if placed or last < day - 1:
            out.append([first, last])
        elif first > day + 1:
            out.append([day, day])
            out.append([first, last])
            placed = True
        else:  # day touches or lies in this run
            out.append([min(first, day), max(last, day)])
            placed = True
    if not placed:
        out.append([day, day])
    merged: list[list[int]] = []
    for run in out:
        if merged and run[0] <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], run[1])
        else:
            merged.append(run)
    return merged


def min_opt(a: Any, b: Any) -> Any:
    return b if a is None else min(a, b)


def max_opt(a: Any, b: Any) -> Any:
    return b if a is None else max(a, b)


class FeatureView(dict[str, Any]):
    """Features computed on first use: a predicate pays only for what it reads.

    A dict of the features computed so far; reading one not yet there computes
    and keeps it (``__missing__``), so a repeated read is a plain dict lookup."""

    __slots__ = ("as_of", "extra", "raw", "rfm", "state")

    def __init__(
        self,
        state: AccountState,
        as_of: int,
        rfm: RfmConfig,
        extra: Callable[[FeatureView, str], Any] | None = None,
        raw: tuple[int, int, int] | None = None,
    ) -> None:
        # (dict's own __init__ has nothing to do for an empty dict: not called)
        self.state, self.as_of, self.rfm, self.extra = state, as_of, rfm, extra
        self.raw = raw  # the state's RFM values as of ``as_of``, if the caller has them

    def __missing__(self, name: str) -> Any:
        compute = FEATURES.get(name)
        if compute is not None:
            value = compute(self.state, self.as_of, self.rfm)
        elif self.extra is not None:
            value = self.extra(self, name)
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def remember(self, values: Mapping[str, Any]) -> None:
        """Keeps values computed together (the RFM scores)."""
        self.update(values)


def transition_snapshot(view: FeatureView) -> dict[str, Any]:
    """The features a segment transition carries, computed in one pass (this runs
    for every transition of a backfill). The same values as reading each name
    from ``view`` (a test holds them equal); values ``view`` already computed are
    taken from it."""
    s, d = view.state, view.as_of
    mrr = _mrr(s)
    renewal = s.renewal_date
    runs = s.active_runs
    out = {
        "seats_purchased": s.seats_purchased,
        "seats_used": s.seats_used,
        "mrr": mrr,
        "arr": None if mrr is None else mrr * 12,
        "currency": s.currency,
        "plan": s.plan,
        "interval": s.interval,
        "subscription_status": s.subscription_status,
        "renewal_date": renewal,
        "days_to_renewal": None if renewal is None else renewal.toordinal() - d,
        "paid_months": len(s.paid_months),
        "tenure_days": None if s.first_subscribed_day is None else d - s.first_subscribed_day,
        "onboarding_completed": s.onboarding_completed_at is not None,
        "key_actions_30d": window_sum(s.key_actions, d, 30) if s.key_actions else 0,
        "active_days_30d": active_days_in(runs, d, 30) if runs else 0,
        "active_day_streak": s.active_day_streak(d) if runs else 0,
        "weekly_streak": s.weekly_streak(d) if runs else 0,
        "adopted": frozenset(s.features_adopted),
        "last_nps": s.last_nps,
        "open_tickets": len(s.open_tickets),
        "cancellation_requested": s.cancellation_requested_at is not None,
    }
    out["membership"] = view["membership"] if "membership" in view else s.membership(d)
    return out


def _mrr(s: AccountState) -> int | None:
    return s.mrr_amount if s.subscription_at is not None else None


FeatureFn = Callable[[AccountState, int, RfmConfig], Any]


def _key_actions(n: int) -> FeatureFn:
    return lambda s, d, r: window_sum(s.key_actions, d, n)


def _active_days(n: int) -> FeatureFn:
    return lambda s, d, r: active_days_in(s.active_runs, d, n)


FEATURES: dict[str, FeatureFn] = {
    "days_since_last_login": lambda s, d, r: since(d, s.last_login_at),
    "days_since_last_key_action": lambda s, d, r: since(d, s.last_key_action_at),
    "days_since_last_activity": lambda s, d, r: since(d, s.last_activity_at),
    "active_day_streak": lambda s, d, r: s.active_day_streak(d),
    "weekly_streak": lambda s, d, r: s.weekly_streak(d),
    "features_adopted": lambda s, d, r: len(s.features_adopted),
    "adopted": lambda s, d, r: frozenset(s.features_adopted),
    "seats_purchased": lambda s, d, r: s.seats_purchased,
    "seats_used": lambda s, d, r: s.seats_used,
    "seat_utilization": lambda s, d, r: (
        s.seats_used / s.seats_purchased if s.seats_purchased else 0.0
    ),
    "plan": lambda s, d, r: s.plan,
    "interval": lambda s, d, r: s.interval,
    "subscription_status": lambda s, d, r: s.subscription_status,
    "mrr": lambda s, d, r: _mrr(s),
    "arr": lambda s, d, r: None if (m := _mrr(s)) is None else m * 12,
    "currency": lambda s, d, r: s.currency,
    "paid_months": lambda s, d, r: len(s.paid_months),
    "paid_total_window": lambda s, d, r: window_sum(s.paid, d, r.monetary_window_days),
    "tenure_days": lambda s, d, r: (
        None if s.first_subscribed_day is None else d - s.first_subscribed_day
    ),
    "renewal_date": lambda s, d, r: s.renewal_date,
    "days_to_renewal": lambda s, d, r: (
        None if s.renewal_date is None else s.renewal_date.toordinal() - d
    ),
    "onboarding_completed": lambda s, d, r: s.onboarding_completed_at is not None,
    "days_since_onboarding": lambda s, d, r: since(d, s.onboarding_completed_at),
    "cancellation_requested": lambda s, d, r: s.cancellation_requested_at is not None,
    "last_nps": lambda s, d, r: s.last_nps,
    "open_tickets": lambda s, d, r: len(s.open_tickets),
    "membership": lambda s, d, r: s.membership(d),
    **{f"key_actions_{n}d": _key_actions(n) for n in WINDOWS},
    **{f"active_days_{n}d": _active_days(n) for n in WINDOWS},
}
"""Feature name -> how to compute it from the state, the as-of day and the RFM config."""

_ACTIVITY = frozenset(
    {
        "days_since_last_activity",
        "active_day_streak",
        "weekly_streak",
        *(f"active_days_{n}d" for n in WINDOWS),
    }
)
_SUBSCRIPTION = frozenset(
    {
        "seats_purchased",
        "seat_utilization",
        "plan",
        "interval",
        "subscription_status",
        "mrr",
        "arr",
        "currency",
        "renewal_date",
        "days_to_renewal",
        "tenure_days",
        "membership",
    }
)
CHANGED_BY: dict[str, frozenset[str]] = {
    "product.login": _ACTIVITY | {"days_since_last_login"},
    "product.feature_used": _ACTIVITY
    | {
        "features_adopted",
        "adopted",
        "days_since_last_key_action",
        *(f"key_actions_{n}d" for n in WINDOWS),
    },
    "product.onboarding_completed": frozenset({"onboarding_completed", "days_since_onboarding"}),
    "product.seats_changed": frozenset({"seats_used", "seat_utilization"}),
    "billing.subscription_updated": _SUBSCRIPTION,
    "billing.invoice_paid": frozenset({"paid_months", "paid_total_window", "currency"}),
    "billing.cancellation_requested": frozenset({"cancellation_requested"}),
    "billing.credit_applied": frozenset(),
    "support.ticket_opened": frozenset({"open_tickets"}),
    "support.ticket_closed": frozenset({"open_tickets"}),
    "support.nps_submitted": frozenset({"last_nps"}),
}
"""Which features an event of each type can change (a test checks it is complete)."""
