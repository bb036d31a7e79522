"""Synthetic SaaS traffic for ``loyalty up --demo``: a few hundred accounts that
subscribe, log in, use features and grow into their seats, sent to ingest over
HTTP like a real product would.

:func:`write_history` writes a synthetic history instead (``loyalty demo
history``): a fleet that lives day by day — adopts features one at a time,
pays, grows, shrinks, moves to annual plans, asks to cancel, churns — and,
through :class:`Plant`, effects planted on purpose so that measurements of the
program (insights) can be checked against a known answer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from services.offers.domain.program import OffersProgram

log = logging.getLogger(__name__)

FEATURES = ("reports", "dashboards", "api", "sso", "automations", "exports")


@dataclass
class DemoAccount:
    account: str
    seats: int
    used: int
    price_per_seat: int  # cents a month
    onboarded: bool = False
    interval: str = "month"
    renews_in: int = 200  # days from the first subscription event


def _event(etype: str, account: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "demo/saas-app",
        "type": etype,
        "subject": account,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


def subscription(
    a: DemoAccount,
    today: date | None = None,
    *,
    status: str = "active",
    renewal_date: date | None = None,
) -> dict[str, Any]:
    """A ``billing.subscription_updated`` of the account as it is; it renews
    ``a.renews_in`` days after ``today`` unless ``renewal_date`` says when."""
    today = today or date.today()
    renewal = renewal_date or today + timedelta(days=a.renews_in)
    return _event(
        "billing.subscription_updated",
        a.account,
        _subscription_data(a, renewal.isoformat(), status),
    )


def _subscription_data(a: DemoAccount, renewal_date: str, status: str) -> dict[str, Any]:
    return {
        "plan": "business" if a.seats > 25 else "team",
        "interval": a.interval,
        "seats_purchased": a.seats,
        "mrr": {"amount": a.seats * a.price_per_seat, "currency": "USD"},
        "renewal_date": renewal_date,
        "status": status,
    }


def make_accounts(n: int, rng: random.Random, prefix: str = "acct") -> list[DemoAccount]:
    accounts = []
    for i in range(n):
        seats = rng.choice([5, 10, 20, 25, 40, 80, 100, 150, 250])
        annual = rng.random() < 0.3  # a third pay yearly; some renew within 60 days
        accounts.append(
            DemoAccount(
                f"{prefix}-{i:04d}",
                seats,
                max(1, seats * rng.randint(30, 70) // 100),
                rng.choice([1500, 2500, 4900]),
                interval="year" if annual else "month",
                renews_in=rng.randint(20, 120) if annual else rng.randint(10, 30),
            )
        )
    return accounts


def step(a: DemoAccount, rng: random.Random) -> list[dict[str, Any]]:
    """A few moments of one account's life."""
    user = f"user-{rng.randint(1, max(a.used, 1))}"
    out = [_event("product.login", a.account, {"user_id": user})]
    if rng.random() < 0.6:
        out.append(
            _event(
                "product.feature_used",
                a.account,
                {
                    "user_id": user,
                    "feature": rng.choice(FEATURES),
                    "key_action": rng.random() < 0.6,
                },
            )
        )
    if rng.random() < 0.35 and a.used < a.seats:
        a.used = min(a.seats, a.used + max(1, a.seats // 20))
        out.append(_event("product.seats_changed", a.account, {"seats_used": a.used}))
    if rng.random() < 0.02:
        a.seats += max(5, a.seats // 4)  # they bought more seats
        out.append(subscription(a))
    if not a.onboarded and rng.random() < 0.15:
        a.onboarded = True
        out.append(_event("product.onboarding_completed", a.account, {"user_id": user}))
    if rng.random() < 0.03:
        out.append(
            _event(
                "billing.invoice_paid",
                a.account,
                {
                    "invoice_id": f"inv-{uuid.uuid4().hex[:8]}",
                    "amount": {"amount": a.seats * a.price_per_seat, "currency": "USD"},
                },
            )
        )
    if rng.random() < 0.02:
        out.append(
            _event(
                "support.ticket_opened",
                a.account,
                {
                    "ticket_id": f"t-{uuid.uuid4().hex[:6]}",
                    "priority": rng.choice(["low", "normal", "high"]),
                },
            )
        )
    if rng.random() < 0.02:
        out.append(
            _event(
                "support.nps_submitted",
                a.account,
                {"user_id": user, "score": rng.choice([3, 6, 8, 9, 10])},
            )
        )
    if rng.random() < 0.003:
        out.append(_event("billing.cancellation_requested", a.account, {"reason": "price"}))
    return out


async def run_demo(
    ingest_url: str,
    api_key: str,
    accounts: int = 300,
    rate_per_s: float = 150.0,
    seed: int = 7,
    stop: asyncio.Event | None = None,
    prefix: str = "acct",
    ledger_url: str | None = None,
) -> None:
    """Live traffic from ``accounts`` accounts named ``{prefix}-0000`` ...; after a
    loaded history, a prefix of their own keeps them apart from its accounts. It
    starts with ``{prefix}-renewal``, whose renewal credit waits for approval; with
    ``ledger_url`` the fleet waits (up to a minute) until the ledger has held it, so
    that the fleet's first rewards do not spend the month's program cap before it
    is weighed."""
    rng = random.Random(seed)
    fleet = make_accounts(accounts, rng, prefix)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/cloudevents-batch+json",
    }
    stop = stop or asyncio.Event()
    # an annual gold account 50 days before renewal: its renewal credit (3 % of
    # 47,040.00 USD) waits for two approvers, so the console's approvals have one
    renewal = DemoAccount(f"{prefix}-renewal", 80, 70, 4900, interval="year", renews_in=50)
    async with httpx.AsyncClient(base_url=ingest_url, headers=headers, timeout=15) as client:
        await _send(client, [subscription(renewal)])
        if ledger_url:
            await _until_held(client, f"{ledger_url}/v1/approvals", renewal.account, stop)
        await _send(client, [subscription(a) for a in fleet])
        while not stop.is_set():
            batch: list[dict[str, Any]] = []
            while len(batch) < 50:
                batch.extend(step(rng.choice(fleet), rng))
            await _send(client, batch)
            try:
                await asyncio.wait_for(stop.wait(), timeout=len(batch) / rate_per_s)
            except TimeoutError:
                pass


async def _until_held(
    client: httpx.AsyncClient, approvals_url: str, account: str, stop: asyncio.Event
) -> None:
    """Waits until ``account`` has a grant waiting for approval (at most a minute)."""
    for _ in range(120):
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            resp = await client.get(approvals_url)
            if any(a["account"] == account for a in resp.json()["approvals"]):
                return
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.5)
            return
        except TimeoutError:
            pass


async def _send(
    client: httpx.AsyncClient, events: list[dict[str, Any]], advance: Any = None
) -> None:
    """Posts in batches of 1,000 as a time-ordered history (``?ordered=true``), so
    that an event-time segmenter folds them in order across partitions."""
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        for attempt in range(20):
            try:
                resp = await client.post(
                    "/v1/events", content=json.dumps(chunk), params={"ordered": "true"}
                )
            except httpx.HTTPError as exc:
                log.warning("demo: ingest unreachable (%s)", exc)
                await asyncio.sleep(1)
                continue
            if resp.status_code == 202:
                break
            if resp.status_code in (401, 503):  # key not folded in yet / broker busy
                await asyncio.sleep(0.5 + attempt * 0.2)
                continue
            log.error("demo: ingest refused a batch: %s %s", resp.status_code, resp.text[:500])
            break
        if advance is not None:
            advance(len(chunk))


async def post_history(ingest_url: str, api_key: str, path: Path, until: datetime) -> int:
    """Posts a history file (``write_history``) to ingest in time order, moved in
    time so that its last event is at ``until``; renewal dates move with it.
    Shows a progress bar on a terminal. Returns the number of events posted."""
    from services.progress import TerminalProgress

    rows = [json.loads(line) for line in path.open()]
    if not rows:
        return 0
    shift = until - datetime.fromisoformat(rows[-1]["time"])
    for r in rows:
        r["time"] = (datetime.fromisoformat(r["time"]) + shift).isoformat()
        renewal = r["data"].get("renewal_date")
        if renewal:
            r["data"]["renewal_date"] = (date.fromisoformat(renewal) + shift).isoformat()
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/cloudevents-batch+json",
    }
    with TerminalProgress() as progress:
        progress.phase("posting the demo history", len(rows))
        async with httpx.AsyncClient(base_url=ingest_url, headers=headers, timeout=30) as client:
            await _send(client, rows, progress.advance)
    return len(rows)


# ---------------------------------------------------------------- the history

DAY = 86_400  # seconds
HISTORY_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, midnight
HORIZON_DAYS = 90  # what insights measures an exposure over, by default

# How popular each feature is: the weights of a first basket and of later adoptions.
FEATURE_WEIGHTS = {
    "reports": 5.0,
    "dashboards": 4.0,
    "exports": 3.0,
    "api": 2.0,
    "automations": 2.0,
    "sso": 1.5,
}

# The base fleet's dynamics; "a day" means a chance each day.
ADOPT_PER_DAY = 0.04 / 7  # a new feature: 4 % a week
SECOND_FIRST_FEATURE = 0.5  # starts with two features (else one), the second in 1-14 days
SILENT_CHURN_AT_RENEWAL = 0.008  # a monthly plan ends at its renewal, no request first
ANNUAL_NON_RENEWAL = 0.08  # an annual plan ends at its renewal
CANCEL_REQUEST_PER_DAY = {"month": 0.01 / 30, "year": 0.003 / 30}  # 1 % / 0.3 % a month
CHURN_DAYS_AFTER_REQUEST = (1, 20)
EXPAND_PER_DAY_AT_CAPACITY = 0.01  # buys more seats, once it uses 90 % of them
EXPAND_PER_DAY = 0.0003  # ... or before
CONTRACT_PER_DAY = 0.0005  # drops seats: 1.5 % a month
TO_ANNUAL_PER_DAY = 0.0007  # monthly plan 90 days or more: moves to annual, 2 % a month
# Seat use grows towards a share of the seats drawn per account (half to all of
# them), on an active day: quickly in the first 60 days, slowly after; and drops.
SEAT_TARGET = (0.5, 1.05)
SEAT_USE_UP = (0.25, 0.05)
SEAT_USE_DOWN = 0.02
ONBOARDING_PER_ACTIVE_DAY = 0.1  # in the first 60 days
TICKET_PER_DAY, NPS_PER_DAY = 0.01, 0.005
AFTER_CHURN_LOGINS = (0.03, 30)  # a login a day's chance, for this many days
COHORT_LOGINS_PER_DAY = 0.05  # light use: the cohort is there for its billing
RARE = 0.1  # a feature made rare (the sequence plant's B): its usual chance, times this
CANCEL_REASONS = ("price", "missing_feature", "switching", "budget", "not_using")


@dataclass(frozen=True)
class Plant:
    """Effects planted in a history, each optional (the defaults plant nothing).

    * ``tenant`` and the holdout (``offers``, else the default program, with
      ``holdout_salt`` / ``holdout_percent`` overriding it): which accounts the
      offers logic will hold out, by ``in_holdout`` — read the history with the
      same tenant.
    * ``retention_points`` and ``cohort``: ``cohort`` extra monthly accounts
      (``churn-00001`` ...) that subscribe on day 0, pay monthly, log in now and
      then (no feature use), and ask to cancel once, on a day drawn uniformly from
      [30, days - horizon_days - 10]. After a request an account churns 1-20 days
      later with probability ``1 - base_retention`` if held out, else
      ``1 - base_retention - retention_points / 100``; retained ones keep paying.
      The base fleet's own (rarer) requests follow the same rule, so every
      exposure of the cancellation rules carries the effect.
    * ``sequence`` = (A, B, delay_days, share): of the base accounts that adopt A
      without having B, ``share`` adopt B ``delay_days`` ± 3 (uniform) later; for
      the others B becomes rare (a tenth of its usual chance, ``RARE``).
    * ``pair`` = (P, Q): adopting one, an account adopts the other within 0-2
      days with probability ``pair_probability``.
    """

    tenant: str = "demo"
    offers: OffersProgram | None = field(default=None, hash=False)
    holdout_salt: str | None = None
    holdout_percent: float | None = None
    retention_points: float = 0.0
    cohort: int = 0
    base_retention: float = 0.55
    horizon_days: int = HORIZON_DAYS
    sequence: tuple[str, str, float, float] | None = None
    pair: tuple[str, str] | None = None
    pair_probability: float = 0.8

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.base_retention <= 1:
            problems.append(f"base_retention {self.base_retention} is not in [0, 1]")
        treated = self.base_retention + self.retention_points / 100
        if not 0 <= treated <= 1:
            problems.append(
                f"base_retention + retention_points / 100 = {treated:g} is not in [0, 1]"
            )
        if self.cohort < 0:
            problems.append(f"cohort {self.cohort} is negative")
        if self.holdout_percent is not None and not 0 <= self.holdout_percent <= 100:
            problems.append(f"holdout_percent {self.holdout_percent} is not in [0, 100]")
        if self.sequence is not None:
            a, b, delay, share = self.sequence
            problems += _unknown_features(a, b)
            if delay < 0:
                problems.append(f"sequence delay {delay} is negative")
            if not 0 <= share <= 1:
                problems.append(f"sequence share {share} is not in [0, 1]")
        if self.pair is not None:
            problems += _unknown_features(*self.pair)
        if not 0 <= self.pair_probability <= 1:
            problems.append(f"pair_probability {self.pair_probability} is not in [0, 1]")
        if problems:
            raise ValueError("plant: " + "; ".join(problems))

    def program(self) -> OffersProgram:
        """The offers program whose holdout the history follows."""
        from services.offers.domain.program import load_offers_program
        from services.runtime.program_file import read_program

        program = self.offers or load_offers_program(read_program(None))
        if self.holdout_salt is not None:
            program = replace(program, holdout_salt=self.holdout_salt)
        if self.holdout_percent is not None:
            program = replace(program, holdout_percent=Fraction(str(self.holdout_percent)))
        return program

    def request_days(self, days: int) -> tuple[int, int]:
        """The days a cohort account may ask to cancel on (both included)."""
        return 30, days - self.horizon_days - 10


def _unknown_features(*names: str) -> list[str]:
    out = [
        f"unknown feature {n!r} (known: {', '.join(FEATURES)})" for n in names if n not in FEATURES
    ]
    if len(set(names)) < len(names):
        out.append(f"{names[0]!r} is named twice")
    return out


def parse_sequence(text: str) -> tuple[str, str, float, float]:
    """``A:B:DAYS:SHARE`` (``--plant-sequence``), e.g. ``reports:automations:14:0.3``."""
    parts = text.split(":")
    try:
        a, b, delay, share = parts
        value = (a, b, float(delay), float(share))
        Plant(sequence=value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: A:B:DAYS:SHARE expected ({exc})") from None
    return value


def parse_pair(text: str) -> tuple[str, str]:
    """``A:B`` (``--plant-pair``), e.g. ``api:sso``."""
    try:
        a, b = text.split(":")
        Plant(pair=(a, b))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: A:B expected ({exc})") from None
    return a, b


@dataclass(slots=True)
class _Life:
    """An account's state while the history is written."""

    a: DemoAccount
    rng: random.Random
    held_out: bool
    engagement: float  # the chance of a session on a given day
    seat_target: float  # the share of its seats its use grows towards
    next_bill: int  # the day of the next renewal (monthly or annual)
    renewal: int  # the renewal date, as a day of the history
    adopted: dict[str, int] = field(default_factory=dict)  # feature -> second
    pending: dict[str, int] = field(default_factory=dict)  # feature -> second
    rare: set[str] = field(default_factory=set)
    decided: bool = False  # asked to cancel: its fate is sealed
    churn_day: int | None = None
    request_day: int | None = None
    canceled_day: int | None = None
    tickets: list[tuple[int, str]] = field(default_factory=list)  # (close day, id)


Row = tuple[int, str, str, dict[str, Any]]  # second of the history, type, account, data


class _History:
    def __init__(self, days: int, plant: Plant) -> None:
        self.plant = plant
        # renewal dates reach a year past the end at most
        self.dates = [
            (HISTORY_START + timedelta(days=d)).date().isoformat() for d in range(days + 800)
        ]
        self.seq = plant.sequence
        self.pair = plant.pair
        treated = plant.base_retention + plant.retention_points / 100
        self.churn_after_request = {True: 1 - plant.base_retention, False: 1 - treated}

    # -------------------------------------------------------------- helpers

    def _sub(self, life: _Life, t: int, out: list[Row], status: str = "active") -> None:
        data = _subscription_data(life.a, self.dates[life.renewal], status)
        out.append((t, "billing.subscription_updated", life.a.account, data))

    def _invoice(self, life: _Life, t: int, day: int, out: list[Row], months: int = 1) -> None:
        a = life.a
        amount = {"amount": a.seats * a.price_per_seat * months, "currency": "USD"}
        paid = {"invoice_id": f"inv-{a.account}-{day}", "amount": amount}
        out.append((t, "billing.invoice_paid", a.account, paid))

    def _user(self, life: _Life) -> str:
        return f"user-{life.rng.randint(1, max(life.a.used, 1))}"

    def _cancel(self, life: _Life, day: int, t: int, out: list[Row]) -> None:
        self._sub(life, t, out, "canceled")
        life.canceled_day = day
        life.pending.clear()

    def _after_churn(self, life: _Life, day: int, out: list[Row]) -> None:
        chance, for_days = AFTER_CHURN_LOGINS
        assert life.canceled_day is not None
        if day - life.canceled_day <= for_days and life.rng.random() < chance:
            t = day * DAY + life.rng.randint(3600, 86_000)
            out.append((t, "product.login", life.a.account, {"user_id": self._user(life)}))

    def _request(self, life: _Life, day: int, out: list[Row]) -> None:
        rng = life.rng
        t = day * DAY + rng.randint(3600, 86_000)
        data = {"reason": rng.choice(CANCEL_REASONS)}
        out.append((t, "billing.cancellation_requested", life.a.account, data))
        life.decided = True
        if rng.random() < self.churn_after_request[life.held_out]:
            life.churn_day = day + rng.randint(*CHURN_DAYS_AFTER_REQUEST)
            life.engagement /= 2

    # -------------------------------------------------------------- features

    def _adopt(self, life: _Life, feature: str, t: int, out: list[Row]) -> None:
        rng = life.rng
        life.pending.pop(feature, None)
        life.adopted[feature] = t
        data = {"user_id": self._user(life), "feature": feature, "key_action": rng.random() < 0.6}
        out.append((t, "product.feature_used", life.a.account, data))
        if self.seq is not None and feature == self.seq[0] and self.seq[1] not in life.adopted:
            b, delay, share = self.seq[1], self.seq[2], self.seq[3]
            life.pending.pop(b, None)  # the plant decides when B comes, if it does
            if rng.random() < share:
                life.pending[b] = max(t + 1, t + round((delay + rng.uniform(-3, 3)) * DAY))
            else:
                life.rare.add(b)
        if self.pair is not None and feature in self.pair:
            other = self.pair[1] if feature == self.pair[0] else self.pair[0]
            if other not in life.adopted and rng.random() < self.plant.pair_probability:
                at = t + round(rng.uniform(0, 2) * DAY)
                life.pending[other] = min(life.pending.get(other, at), at)

    def _adoptions(self, life: _Life, day: int, out: list[Row]) -> None:
        rng = life.rng
        if rng.random() < ADOPT_PER_DAY:
            options = [f for f in FEATURES if f not in life.adopted and f not in life.pending]
            if options:
                feature = rng.choices(options, [FEATURE_WEIGHTS[f] for f in options])[0]
                if feature not in life.rare or rng.random() < RARE:
                    life.pending[feature] = day * DAY + rng.randint(3600, 86_000)
        end = (day + 1) * DAY
        while life.pending:
            t, feature = min((t, f) for f, t in life.pending.items())
            if t >= end:
                break
            self._adopt(life, feature, t, out)

    # -------------------------------------------------------------- one day

    def base_day(self, life: _Life, day: int, out: list[Row]) -> None:
        if life.canceled_day is not None:
            self._after_churn(life, day, out)
            return
        a, rng, d0 = life.a, life.rng, day * DAY
        if day == 0:
            self._sub(life, rng.randint(0, 600), out)
            out.append(
                (rng.randint(601, 1200), "product.seats_changed", a.account, {"seats_used": a.used})
            )
            first = _weighted_pick(rng, [])
            life.pending[first] = rng.randint(3600, 80_000)
            if rng.random() < SECOND_FIRST_FEATURE:
                second = _weighted_pick(rng, [first])
                life.pending[second] = rng.randint(1, 14) * DAY + rng.randint(3600, 86_000)
        billing = d0 + rng.randint(0, 3599)
        if day == life.churn_day:  # the request's answer: no renewal that day
            self._cancel(life, day, billing, out)
            return
        renewed = bool(day) and day == life.next_bill
        if renewed:
            annual = a.interval == "year"
            ends = ANNUAL_NON_RENEWAL if annual else SILENT_CHURN_AT_RENEWAL
            if not life.decided and rng.random() < ends:
                self._cancel(life, day, billing, out)
                return
            life.next_bill += 365 if annual else 30
            life.renewal = life.next_bill
            self._invoice(life, billing, day, out, 12 if annual else 1)
            self._sub(life, billing + 1, out)
        if not life.decided and rng.random() < CANCEL_REQUEST_PER_DAY[a.interval]:
            self._request(life, day, out)
        if day and not renewed:
            self._plan_changes(life, day, out)
        self._adoptions(life, day, out)
        if day == 0 or rng.random() < life.engagement:
            self._session(life, day, out)
        for close_day, ticket in list(life.tickets):
            if close_day == day:
                t = d0 + rng.randint(3600, 86_000)
                out.append((t, "support.ticket_closed", a.account, {"ticket_id": ticket}))
                life.tickets.remove((close_day, ticket))
        if rng.random() < TICKET_PER_DAY:
            ticket = f"t-{a.account}-{day}"
            life.tickets.append((day + rng.randint(1, 6), ticket))
            data = {
                "ticket_id": ticket,
                "priority": rng.choice(["low", "normal", "normal", "high"]),
            }
            out.append((d0 + rng.randint(3600, 86_000), "support.ticket_opened", a.account, data))
        if rng.random() < NPS_PER_DAY:
            score = rng.choice([3, 6, 7, 8, 8, 9, 9, 10])
            nps = {"user_id": self._user(life), "score": score}
            out.append((d0 + rng.randint(3600, 86_000), "support.nps_submitted", a.account, nps))

    def _plan_changes(self, life: _Life, day: int, out: list[Row]) -> None:
        a, rng = life.a, life.rng
        t = day * DAY + rng.randint(3600, 86_000)
        at_capacity = a.used >= 0.9 * a.seats
        if rng.random() < (EXPAND_PER_DAY_AT_CAPACITY if at_capacity else EXPAND_PER_DAY):
            a.seats += max(5, a.seats // 4)
            self._sub(life, t, out)
        elif a.seats > 1 and rng.random() < CONTRACT_PER_DAY:
            a.seats = max(1, a.seats - max(1, a.seats // 5))
            self._sub(life, t, out)
            if a.used > a.seats:
                a.used = a.seats
                out.append((t + 1, "product.seats_changed", a.account, {"seats_used": a.used}))
        elif (
            a.interval == "month"
            and day >= 90
            and not life.decided
            and rng.random() < TO_ANNUAL_PER_DAY
        ):
            a.interval = "year"
            life.next_bill = life.renewal = day + 365
            self._invoice(life, t, day, out, 12)
            self._sub(life, t + 1, out)

    def _session(self, life: _Life, day: int, out: list[Row]) -> None:
        a, rng = life.a, life.rng
        t = day * DAY + rng.randint(3600, 80_000)
        user = self._user(life)
        out.append((t, "product.login", a.account, {"user_id": user}))
        for _ in range(1 + (rng.random() < 0.5) + (rng.random() < 0.2)):
            t += rng.randint(5, 900)
            ready = [f for f, at in life.adopted.items() if at <= t]
            if ready:
                data = {
                    "user_id": user,
                    "feature": rng.choice(ready),
                    "key_action": rng.random() < 0.6,
                }
                out.append((t, "product.feature_used", a.account, data))
        step_size = max(1, a.seats // 20)
        up = SEAT_USE_UP[0] if day < 60 else SEAT_USE_UP[1]
        if a.used < min(a.seats, life.seat_target * a.seats) and rng.random() < up:
            a.used = min(a.seats, a.used + step_size)
            out.append((t + 1, "product.seats_changed", a.account, {"seats_used": a.used}))
        elif a.used > 1 and rng.random() < SEAT_USE_DOWN:
            a.used = max(1, a.used - step_size)
            out.append((t + 1, "product.seats_changed", a.account, {"seats_used": a.used}))
        if not a.onboarded and day < 60 and rng.random() < ONBOARDING_PER_ACTIVE_DAY:
            a.onboarded = True
            out.append((t + 2, "product.onboarding_completed", a.account, {"user_id": user}))

    def cohort_day(self, life: _Life, day: int, out: list[Row]) -> None:
        if life.canceled_day is not None:
            self._after_churn(life, day, out)
            return
        a, rng, d0 = life.a, life.rng, day * DAY
        billing = d0 + rng.randint(0, 3599)
        if day == life.churn_day:
            self._cancel(life, day, billing, out)
            return
        if day == 0:
            self._sub(life, billing, out)
            self._invoice(life, billing + 1, day, out)
            out.append((billing + 2, "product.seats_changed", a.account, {"seats_used": a.used}))
        elif day == life.next_bill:
            life.next_bill += 30
            life.renewal = life.next_bill
            self._invoice(life, billing, day, out)
            self._sub(life, billing + 1, out)
        if day == life.request_day:
            self._request(life, day, out)
        if rng.random() < life.engagement:
            t = d0 + rng.randint(3600, 86_000)
            out.append((t, "product.login", a.account, {"user_id": self._user(life)}))


def _weighted_pick(rng: random.Random, taken: list[str]) -> str:
    options = [f for f in FEATURES if f not in taken]
    return rng.choices(options, [FEATURE_WEIGHTS[f] for f in options])[0]


def write_history(
    path: Path, accounts: int, days: int, seed: int = 7, plant: Plant | None = None
) -> int:
    """A synthetic history for ``loyalty offers simulate``, backfills and insights.

    The fleet (``acct-0000`` ...) subscribes on day 0 and lives ``days`` days: each
    account starts with one or two features and adopts others now and then (4 % a
    week), uses only those, grows into its seats, buys more (mostly once it uses
    90 % of them) or fewer, pays at each renewal (monthly plans every 30 days,
    annual ones a year's worth), moves from monthly to annual now and then, asks
    to cancel (1 % a month on monthly plans), and churns — after a request, or
    silently at a renewal — emitting nothing billing after that and hardly any
    product use. ``plant`` adds known effects (see :class:`Plant`).

    Deterministic for a seed and a plant: the same arguments write the same
    bytes. Returns the number of events written."""
    plant = plant or Plant()
    need_holdout = plant.retention_points != 0 or plant.cohort > 0
    if plant.cohort:
        first, last = plant.request_days(days)
        if last < first:
            raise ValueError(
                f"a cohort needs {first + plant.horizon_days + 10} days or more"
                f" (requests on days {first}..days - {plant.horizon_days} - 10); got {days}"
            )
    program = plant.program() if need_holdout else None

    def held_out(account: str) -> bool:
        if program is None:
            return False
        from services.offers.domain.engine import in_holdout

        return in_holdout(program, plant.tenant, account)

    history = _History(days, plant)
    fleet = make_accounts(accounts, random.Random(seed))
    lives: list[tuple[_Life, Callable[[_Life, int, list[Row]], None]]] = []
    for a in fleet:
        rng = random.Random(f"{seed}/{a.account}")
        life = _Life(
            a,
            rng,
            held_out=held_out(a.account),
            engagement=rng.uniform(0.25, 0.85),
            seat_target=rng.uniform(*SEAT_TARGET),
            next_bill=a.renews_in,
            renewal=a.renews_in,
        )
        lives.append((life, history.base_day))
    for i in range(1, plant.cohort + 1):
        account = f"churn-{i:05d}"
        rng = random.Random(f"{seed}/{account}")
        seats = rng.choice([5, 8, 10, 15, 20])
        a = DemoAccount(
            account,
            seats,
            max(1, seats * rng.randint(30, 60) // 100),
            rng.choice([1500, 2500, 4900]),
        )
        life = _Life(
            a,
            rng,
            held_out=held_out(account),
            engagement=COHORT_LOGINS_PER_DAY,
            seat_target=0.0,
            next_bill=30,
            renewal=30,
        )
        life.request_day = rng.randint(*plant.request_days(days))
        lives.append((life, history.cohort_day))

    n = 0
    with path.open("w") as fh:
        for day in range(days):
            out: list[Row] = []
            for life, live in lives:
                live(life, day, out)
            out.sort(key=itemgetter(0))  # stable: ties keep the order they were made in
            lines = []
            date_str = history.dates[day]
            for t, etype, account, data in out:
                s = t - day * DAY
                stamp = f"{date_str}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00:00"
                row = {
                    "specversion": "1.0",
                    "id": f"h{n}",
                    "source": "demo/saas-app",
                    "type": etype,
                    "subject": account,
                    "time": stamp,
                    "data": data,
                }
                lines.append(json.dumps(row))
                n += 1
            if lines:
                fh.write("\n".join(lines) + "\n")
    return n
