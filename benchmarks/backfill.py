"""``loyalty bench backfill`` and ``loyalty bench rollover``.

backfill: a shop's real-sized history (by default 70,000 purchases by 23,500
customers over 18 months) written to a file in time order and in customer order
(how most exports come), each backfilled into its own tenant on the real
Postgres; events/s of each, and a check that both give exactly the memberships,
RFM scores and transitions of folding the same history one event at a time.

rollover: a tenant of N accounts (100,000) held in memory, rolled over one day
when 1 % of its accounts are due that day and when all of them are, next to the
exhaustive rollover (every account evaluated) on the same tenant.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.stack import with_stack
from schemas import Event, Money
from schemas.events import (
    InvoicePaid,
    InvoicePaidData,
    OnboardingCompleted,
    OnboardingCompletedData,
)
from services.runtime.batch import Inbound
from services.runtime.config import Settings
from services.runtime.db import engine_for
from services.segmenter.adapters.db import PostgresAccountRepository
from services.segmenter.adapters.owned import OwnedAccountRepository
from services.segmenter.domain import fold
from services.segmenter.domain.days import day_of
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import TenantClock, account_view, full_view
from services.segmenter.domain.program import SegmenterProgram, load_program

SHOP_PROGRAM: dict[str, Any] = {
    "version": 1,
    "stream": {"allowed_lateness": "1h"},
    "rfm": {
        "recency_events": ["billing.invoice_paid"],
        "frequency_events": ["billing.invoice_paid"],
        "frequency_window_days": 365,
        "monetary": "paid_total",
        "monetary_window_days": 365,
    },
    "segments": {
        "champions": {"when": "rfm_cell == 'champions'"},
        "loyal": {"when": "rfm_cell == 'loyal'"},
        "at_risk": {"when": "rfm_cell in ('at_risk', 'cant_lose_them')"},
        "hibernating": {"when": "rfm_cell in ('hibernating', 'lost')"},
        "new_customers": {"when": "rfm_cell == 'new_customers'"},
        "big_spenders": {"when": "paid_total_window >= 40000"},
        "repeat_buyers": {"when": "paid_months >= 3"},
        "top_value": {"when": "m_score == 5"},
    },
}
"""A shop or studio: RFM on purchases, monetary = amount paid in the last year."""

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def shop_history(purchases: int, customers: int, days: int, seed: int = 3) -> list[Event]:
    """Purchases by customers over ``days``: each customer's first purchase on a
    random day, repeat purchases after exponential gaps, amounts 5-400."""
    rng = random.Random(seed)
    per_customer = purchases / customers
    events: list[Event] = []
    c = 0
    while len(events) < purchases:
        account = f"cust-{c % customers:06d}"
        c += 1
        t = T0 + timedelta(days=rng.uniform(0, days))
        for _ in range(max(1, round(rng.expovariate(1 / per_customer)))):
            if t >= T0 + timedelta(days=days) or len(events) >= purchases:
                break
            events.append(
                InvoicePaid(
                    type="billing.invoice_paid",
                    id=uuid.UUID(int=rng.getrandbits(128)).hex,
                    source="shop",
                    subject=account,
                    tenant="bench",
                    time=t,
                    data=InvoicePaidData(
                        invoice_id=f"inv-{len(events)}",
                        amount=Money(amount=rng.randint(1, 80) * 500, currency="EUR"),
                    ),
                )
            )
            t += timedelta(days=rng.expovariate(1 / 45), seconds=rng.uniform(0, 86_400))
    return events


def _write(path: Path, events: Sequence[Event]) -> None:
    with path.open("w") as fh:
        for e in events:
            fh.write(e.model_dump_json(exclude={"tenant"}) + "\n")


Outcome = tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, int, int]], list[tuple[Any, ...]]]


def _outcome(
    program: SegmenterProgram, clock: TenantClock, states: dict[str, AccountState]
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, int, int]]]:
    assert clock.stream_day is not None
    members = {a: tuple(sorted(s.segments)) for a, s in states.items()}
    scores = {}
    for a, s in states.items():
        view = full_view(account_view(program, clock, s, clock.stream_day))
        scores[a] = (view["r_score"], view["f_score"], view["m_score"])
    return members, scores


async def reference(program: SegmenterProgram, events: Sequence[Event], tenant: str) -> Outcome:
    """Event-by-event: every event its own batch, in (time, account) order."""
    repo = OwnedAccountRepository()
    transitions: list[tuple[Any, ...]] = []
    ordered = sorted(events, key=lambda e: (e.time, e.subject))
    for i, e in enumerate(ordered):
        event = e.model_copy(update={"tenant": tenant})
        result = await fold_one(repo, program, event, i)
        transitions += [
            (t.account, t.kind, t.segment, t.as_of, t.cause_id or f"{t.account}/day/{t.as_of}")
            for t in result
        ]
    clock = repo.clocks[tenant]
    states = {a: s for (t, a), s in repo.states.items() if t == tenant}
    return (*_outcome(program, clock, states), transitions)


async def fold_one(
    repo: OwnedAccountRepository, program: SegmenterProgram, event: Event, offset: int
) -> list[fold.Transition]:
    from services.segmenter.handlers import process

    item = Inbound(event, "events.billing", 0, offset)  # type: ignore[arg-type]
    return (await process(repo, program, [item], None)).transitions


async def stored(settings: Settings, program: SegmenterProgram, tenant: str) -> Outcome:
    engine = engine_for(settings, "segmenter")
    try:
        async with engine.begin() as conn:
            repo = PostgresAccountRepository(conn)
            clock = await repo.get_clock(tenant)
            assert clock is not None
            states = {
                a: s for (_, a), s in (await repo.load_tenant_accounts(tenant, set())).items()
            }
            rows = await conn.execute(
                text(
                    "SELECT convert_from(value, 'UTF8'), headers FROM outbox"
                    " WHERE convert_from(key, 'UTF8') LIKE :k ORDER BY id"
                ),
                {"k": f"{tenant}:%"},
            )
            transitions: list[tuple[Any, ...]] = []
            for value, headers in rows.all():
                h = {k: base64.b64decode(v).decode() for k, v in headers}
                data = json.loads(value)
                day = datetime.fromisoformat(data["as_of"]).date().toordinal()
                kind = h["ce_type"].removeprefix("segment.")
                transitions.append((h["ce_subject"], kind, data["segment"], day, data["cause"]))
    finally:
        await engine.dispose()
    return (*_outcome(program, clock, states), transitions)


@dataclass
class BackfillBench:
    events: int
    customers: int
    days: int
    rates: dict[str, float]
    seconds: dict[str, float]
    transitions: int
    equal: dict[str, bool]
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # order -> stage -> s

    def lines(self) -> list[str]:
        out = [
            f"history     {self.events:,} purchases, {self.customers:,} customers, {self.days} days"
        ]
        for order, rate in self.rates.items():
            out.append(
                f"backfill ({order:<14}) {self.seconds[order]:6.1f} s  {rate:>9,.0f} events/s"
                f"   same as event by event: {'yes' if self.equal[order] else 'NO'}"
            )
            spent = self.stages.get(order, {})
            if spent:
                out.append(
                    "  stages: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in spent.items())
                )
        out.append(f"{self.transitions:,} segment transitions")
        return out

    def json(self) -> dict[str, Any]:
        return {
            "bench": "backfill",
            "events": self.events,
            "customers": self.customers,
            "days": self.days,
            "events_per_s": self.rates,
            "seconds": self.seconds,
            "transitions": self.transitions,
            "equal_to_event_by_event": self.equal,
            "stage_seconds": self.stages,
        }


async def run_backfill_bench(
    bootstrap: str, database_url: str, purchases: int, customers: int, days: int
) -> BackfillBench:
    from benchmarks.stack import bench_settings
    from services.segmenter.backfill import backfill
    from services.segmenter.config import SegmenterSettings

    program = load_program(SHOP_PROGRAM)
    settings = bench_settings(SegmenterSettings, bootstrap, database_url)
    events = shop_history(purchases, customers, days)
    folder = Path(tempfile.mkdtemp(prefix="loyalty-backfill-"))
    orders = {
        "time order": sorted(events, key=lambda e: e.time),
        "customer order": sorted(events, key=lambda e: (e.subject, e.time)),
    }
    rates, seconds, equal = {}, {}, {}
    stages: dict[str, dict[str, float]] = {}
    expected = await reference(program, events, "bench-reference")
    for i, (order, ordered) in enumerate(orders.items()):
        path = folder / f"history-{i}.jsonl"
        _write(path, ordered)
        tenant = f"shop-{i}"
        started = time.perf_counter()
        gc.collect()
        gc.freeze()  # the bench's own objects: a backfill runs in a process of its own
        report = await backfill(settings, program, path, tenant, publish=False)
        seconds[order] = time.perf_counter() - started
        rates[order] = report.applied / seconds[order]
        stages[order] = dict(report.stages)
        got = await stored(settings, program, tenant)
        equal[order] = got == expected and report.late == 0
    return BackfillBench(
        len(events), customers, days, rates, seconds, len(expected[2]), equal, stages
    )


def backfill_bench_with_embedded(purchases: int, customers: int, days: int) -> BackfillBench:
    return with_stack(
        lambda bootstrap, db: run_backfill_bench(bootstrap, db, purchases, customers, days)
    )


# ------------------------------------------------------------------ rollover


@dataclass
class RolloverBench:
    accounts: int
    rows: list[tuple[str, int, float, int]]  # case, evaluated, seconds, transitions
    rss_mib: float = 0.0  # RSS while holding a tenant of `accounts` with a month of use
    held_mib: float = 0.0  # of which the tenant's states and index

    def lines(self) -> list[str]:
        out = [f"tenant      {self.accounts:,} accounts in memory, one day rolled over"]
        for case, evaluated, secs, transitions in self.rows:
            out.append(
                f"{case:<34} {evaluated:>8,} evaluated  {1000 * secs:9.1f} ms"
                f"  {transitions:>7,} transitions"
            )
        out.append(
            f"memory      {self.accounts:,} accounts with a month of SaaS use each, indexed:"
            f" {self.held_mib:,.0f} MiB (RSS of the process then {self.rss_mib:,.0f} MiB)"
        )
        return out

    def json(self) -> dict[str, Any]:
        return {
            "bench": "rollover",
            "accounts": self.accounts,
            "cases": [
                {"case": c, "evaluated": e, "ms": round(1000 * s, 2), "transitions": t}
                for c, e, s, t in self.rows
            ],
            "held_mib": self.held_mib,
            "rss_mib": self.rss_mib,
        }


def _tenant(program: SegmenterProgram, accounts: int, due_share: float) -> tuple[Any, ...]:
    """A tenant in memory whose accounts finished onboarding long ago, except a
    ``due_share`` that did 14 days before the next day: they leave
    ``newly_activated`` then, and nothing else changes for anyone."""
    from services.segmenter.domain.fold import build_index, evaluate, next_due_day

    start = T0 + timedelta(days=100)
    day = day_of(start)
    clock = TenantClock("bench", watermark=start, stream_day=day)
    states: dict[tuple[str, str], AccountState] = {}
    due_every = max(1, round(1 / due_share)) if due_share > 0 else 0
    for i in range(accounts):
        done = start - timedelta(days=14 if due_every and i % due_every == 0 else 60)
        state = AccountState()
        state.apply(
            OnboardingCompleted(
                type="product.onboarding_completed",
                id=f"o{i}",
                source="bench",
                subject=f"a{i:06d}",
                tenant="bench",
                time=done,
                data=OnboardingCompletedData(user_id="u"),
            ),
            program.rfm,
        )
        states[("bench", f"a{i:06d}")] = state
    index = build_index(program, clock, states)
    clock.breakpoints = index.breakpoints()  # as drawn at the day that starts
    for (_, account), state in states.items():
        evaluate(program, clock, account, state, day, start, None, None)
        state.due_day = next_due_day(program, clock, state, day)
        index.set_due(account, state.due_day)
    clock.accounts = clock.scored_accounts = accounts
    return clock, states, index


def _rss_mib() -> float:
    """The process's resident memory now (Linux: /proc/self/statm)."""
    import gc
    import os

    gc.collect()
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def saas_month(account: str, start: datetime, rng: random.Random) -> list[Event]:
    """A month of one SaaS account: subscribed, seats, active on 12 days, an NPS."""
    from schemas.events import (
        FeatureUsed,
        FeatureUsedData,
        Login,
        LoginData,
        NpsSubmitted,
        NpsSubmittedData,
        SeatsChanged,
        SeatsChangedData,
        SubscriptionUpdated,
        SubscriptionUpdatedData,
    )

    common = {"source": "bench", "subject": account, "tenant": "bench"}
    seats = rng.choice([5, 10, 25, 60, 150])
    out: list[Event] = [
        SubscriptionUpdated(
            type="billing.subscription_updated",
            id=f"{account}-s",
            time=start,
            data=SubscriptionUpdatedData(
                plan="pro",
                interval=rng.choice(["month", "year"]),
                seats_purchased=seats,
                mrr=Money(amount=seats * 2500, currency="USD"),
                renewal_date=(start + timedelta(days=rng.randint(20, 365))).date(),
                status="active",
            ),
            **common,
        ),
        SeatsChanged(
            type="product.seats_changed",
            id=f"{account}-seats",
            time=start + timedelta(hours=1),
            data=SeatsChangedData(seats_used=rng.randint(1, seats)),
            **common,
        ),
    ]
    for d in sorted(rng.sample(range(30), 12)):
        t = start + timedelta(days=d, hours=9)
        out.append(
            Login(
                type="product.login",
                id=f"{account}-l{d}",
                time=t,
                data=LoginData(user_id="u"),
                **common,
            )
        )
        for k in range(rng.randint(1, 3)):
            out.append(
                FeatureUsed(
                    type="product.feature_used",
                    id=f"{account}-f{d}-{k}",
                    time=t + timedelta(minutes=10 + k),
                    data=FeatureUsedData(
                        user_id="u", feature=rng.choice(["reports", "api", "sso"]), key_action=True
                    ),
                    **common,
                )
            )
    out.append(
        NpsSubmitted(
            type="support.nps_submitted",
            id=f"{account}-nps",
            time=start + timedelta(days=29),
            data=NpsSubmittedData(user_id="u", score=rng.randint(0, 10)),
            **common,
        )
    )
    return out


def _memory(program: SegmenterProgram, accounts: int) -> tuple[float, float]:
    """Peak RSS, and its growth, while holding ``accounts`` with a month of use each
    (a subscription, seats, logins and key actions on 12 days, an NPS) and their index."""
    from services.segmenter.domain.fold import build_index, evaluate, next_due_day

    before = _rss_mib()
    start = T0 + timedelta(days=30)
    day = day_of(start)
    clock = TenantClock("bench", watermark=start, stream_day=day)
    states: dict[tuple[str, str], AccountState] = {}
    rng = random.Random(5)
    for i in range(accounts):
        state = AccountState()
        for event in saas_month(f"a{i:06d}", T0, rng):
            state.apply(event, program.rfm)
        states[("bench", f"a{i:06d}")] = state
    index = build_index(program, clock, states)
    clock.breakpoints = index.breakpoints()
    for (_, account), state in states.items():
        evaluate(program, clock, account, state, day, start, None, None)
        state.due_day = next_due_day(program, clock, state, day)
        index.set_due(account, state.due_day)
    after = _rss_mib()
    del states, index  # (measured while held)
    return after, after - before


def rollover_bench(accounts: int) -> RolloverBench:
    import copy

    from services.runtime.program_file import read_program
    from services.segmenter.domain.days import day_start
    from services.segmenter.domain.rfm import tenant_breakpoints

    program = load_program(read_program(None))
    rss, held = _memory(program, accounts)  # first: the RSS is then this tenant's
    rows: list[tuple[str, int, float, int]] = []
    for case, share in (("indexed, 1 % due", 0.01), ("indexed, all due", 1.0)):
        clock, states, index = _tenant(program, accounts, share)
        started = time.perf_counter()
        transitions, touched = fold.rollover(program, clock, index, clock.stream_day + 1)
        rows.append((case, len(touched), time.perf_counter() - started, len(transitions)))
    # the exhaustive rollover (before the index): every account, every day
    clock, states, _ = _tenant(program, accounts, 0.01)
    clock = copy.copy(clock)
    started = time.perf_counter()
    day = clock.stream_day + 1
    mine = sorted(states)
    for key in mine:
        states[key].prune(day, program.rfm)
    clock.breakpoints = tenant_breakpoints([states[k].rfm_values(day, program.rfm) for k in mine])
    out = []
    for key in mine:
        out += fold.evaluate(program, clock, key[1], states[key], day, day_start(day), None, None)
    rows.append(
        ("exhaustive (every account), 1 % due", len(mine), time.perf_counter() - started, len(out))
    )
    return RolloverBench(accounts, rows, rss, held)
