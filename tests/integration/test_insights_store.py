"""The Postgres and memory insights stores keep the same facts and give the same
reports (the contract of ``services/insights/ports.py``), and a redelivered fact
adds nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.insights import reports
from services.insights.adapters.memory import MemoryInsightsStore
from services.insights.adapters.postgres import PostgresInsightsStore
from services.insights.domain.bundles import Adoption
from services.insights.domain.facts import (
    CreditFact,
    Exposure,
    Fact,
    InvoiceFact,
    SegmentChange,
    SubscriptionFact,
)
from services.insights.domain.program import load_insights_program
from services.insights.ports import InsightsStore
from services.runtime.config import Settings
from services.runtime.db import create_engine, migrate

MIGRATIONS = Path("services/insights/migrations")
T0 = datetime(2026, 1, 3, tzinfo=UTC)
PROGRAM = load_insights_program(
    {"insights": {"horizon": "30d", "min_exposures": 5, "bundles": {"min_accounts": 2}}}
)
REPORTS = (
    reports.lift_report,
    reports.nrr_report,
    reports.upsell_report,
    reports.segments_report,
    reports.bundles_report,
    reports.ready_report,
)


def random_facts(seed: int, accounts: int = 120) -> list[Fact]:
    rng = random.Random(seed)
    facts: list[Fact] = []
    for i in range(accounts):
        a = f"acct-{i}"
        seats, mrr, interval, t = rng.randint(1, 50), 0, "month", T0
        for n in range(rng.randint(1, 5)):
            t += timedelta(days=rng.randint(0, 40), hours=rng.randint(0, 23))
            seats = max(1, seats + rng.randint(-5, 10))
            interval = "year" if rng.random() < 0.1 else interval
            mrr = seats * 1500
            status = "canceled" if rng.random() < 0.1 else "active"
            facts.append(
                SubscriptionFact(
                    a,
                    t,
                    f"s{i}-{n}",
                    rng.choice(["team", "business"]),
                    interval,
                    seats,
                    mrr,
                    "USD",
                    status,
                )
            )
            facts.append(InvoiceFact(a, t + timedelta(hours=1), f"i{i}-{n}", mrr, "USD"))
        for n, seg in enumerate(rng.sample(["member_active", "member_new", "power_users"], 2)):
            at = T0 + timedelta(days=rng.randint(0, 60))
            facts.append(SegmentChange(a, seg, True, at, f"e{i}-{n}"))
            if rng.random() < 0.3:
                facts.append(SegmentChange(a, seg, False, at + timedelta(days=9), f"x{i}-{n}"))
        if rng.random() < 0.7:
            at = T0 + timedelta(days=rng.randint(0, 90))
            holdout = rng.random() < 0.3
            oid = f"o{i}"
            rule = rng.choice(["renewal_credit", "cancel_pause"])
            facts.append(
                Exposure(
                    oid, a, rule, holdout, at, ("member_active",), "service_credit", 500, "USD"
                )
            )
            if not holdout:
                facts.append(CreditFact(oid, f"g{i}", "granted", at, 500, 500, "USD"))
                if rng.random() < 0.3:
                    facts.append(
                        CreditFact(oid, f"x{i}", "expired", at + timedelta(days=20), 200, 0, "USD")
                    )
        for f in rng.sample(["reports", "api", "sso", "automations"], rng.randint(0, 4)):
            facts.append(Adoption(a, f, T0 + timedelta(days=rng.randint(0, 100))))
    return facts


async def _all_reports(store: InsightsStore, tenant: str) -> list[Any]:
    return [await r(store, PROGRAM, tenant) for r in REPORTS]


async def test_postgres_and_memory_stores_agree(settings: Settings) -> None:
    facts = random_facts(seed=5)
    memory = MemoryInsightsStore()
    engine = create_engine(settings.async_database_url(), "insights")
    try:
        await migrate(engine, "insights", {"insights": MIGRATIONS})
        async with engine.begin() as conn:
            pg = PostgresInsightsStore(conn)
            now = T0 + timedelta(days=150)
            for store in (memory, pg):
                # in three parts, the middle one twice (a redelivery), the rest reversed
                third = len(facts) // 3
                for part in (facts[:third], facts[third : 2 * third], facts[third : 2 * third]):
                    await store.add("t1", part)
                await store.add("t1", facts[2 * third :][::-1])
                await store.advance({"t1": now - timedelta(days=1)})
                assert await store.advance({"t1": now}) == {"t1": now}
                assert await store.advance({"t1": now - timedelta(days=9)}) == {"t1": now}
            assert await pg.subscriptions("t1") == await memory.subscriptions("t1")
            assert await pg.invoices("t1") == await memory.invoices("t1")
            assert await pg.segment_changes("t1") == await memory.segment_changes("t1")
            assert await pg.segment_days("t1") == await memory.segment_days("t1")
            assert await pg.exposures("t1") == await memory.exposures("t1")
            assert await pg.credits("t1") == await memory.credits("t1")
            expected_subs = sorted(
                (f for f in facts if isinstance(f, SubscriptionFact)),
                key=lambda f: (f.account, f.at, f.event_id),
            )
            assert await memory.subscriptions("t1") == expected_subs
            pg_reports = await _all_reports(pg, "t1")
            assert pg_reports == await _all_reports(memory, "t1")
            lift, _ = pg_reports[0]
            assert {r["rule"] for r in lift["rules"]} == {"renewal_credit", "cancel_pause"}
            assert any(r["status"] == "ok" for r in lift["rules"])
            # an adoption keeps its earliest time, whichever came first
            later = Adoption("acct-1", "zapier", T0 + timedelta(days=5))
            earlier = Adoption("acct-1", "zapier", T0 + timedelta(days=2))
            for store in (memory, pg):
                await store.add("t1", [later])
                await store.add("t1", [earlier, later])
            assert (await pg.bundle_counts("t1", 30, now)) == (
                await memory.bundle_counts("t1", 30, now)
            )
            claimed = await pg.claim_signals("t1", [("acct-1", "a>b"), ("acct-2", "a>b")], now)
            assert claimed == {("acct-1", "a>b"), ("acct-2", "a>b")}
            assert await pg.claim_signals("t1", [("acct-1", "a>b")], now) == set()
            assert await pg.clock("nobody") is None and await memory.clock("nobody") is None
    finally:
        await engine.dispose()
