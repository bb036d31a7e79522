"""``loyalty bench ledger``: decisions per second on the real broker and Postgres,
with one ledger instance or several in one consumer group sharing a program
budget that half the demand exhausts (so leases, top-ups and pooling all run).

Issued offers (credits of 5.00-50.00 USD over many accounts, every partition) are
loaded onto fresh topics first; the instances are started, and the clock runs
from the first committed batch to the last decision."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from benchmarks.stack import bench_settings, load_topic, with_stack
from schemas import Event, Money
from schemas.events import AccountContext, OfferIssued, OfferIssuedData, Reward
from services.runtime.config import Settings
from services.runtime.connections import kafka_connection
from services.runtime.service import ServiceRuntime
from services.runtime.topics import TopicNames, ensure_topics


def issued_offers(n: int, accounts: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    out: list[Event] = []
    for i in range(n):
        value = Money(amount=rng.randint(5, 50) * 100, currency="USD")
        oid = str(uuid.UUID(int=rng.getrandbits(128)))
        out.append(
            OfferIssued(
                id=oid,
                source="bench",
                type="offer.issued",
                subject=f"acct-{rng.randrange(accounts):05d}",
                tenant="bench",
                time=t0 + timedelta(seconds=i),
                data=OfferIssuedData(
                    offer_id=oid,
                    rule="bench",
                    reason="bench",
                    reward=Reward(kind="service_credit", value=value, cost=value),
                    account=AccountContext(
                        arr=Money(amount=100_000_000, currency="USD"), segments=["tier_gold"]
                    ),
                ),
            )
        )
    return out


async def run_ledger_bench(
    bootstrap: str, database_url: str, offers: int, accounts: int, instances: int
) -> tuple[list[str], dict[str, Any]]:
    from services.ledger.app import spec
    from services.ledger.domain.program import load_ledger_program

    events = issued_offers(offers, accounts)
    demand = sum(e.data.reward.cost.amount for e in events)
    cap = demand // 2
    program = load_ledger_program(
        {
            "segments": {"tier_gold": {}},
            "ledger": {
                "caps": {
                    "account": {"percent_of_arr": 5},
                    "program": {"amount": cap, "currency": "USD"},
                    "by_tier": {"tier_gold": {"amount": demand, "currency": "USD"}},
                    "liability": {"amount": demand, "currency": "USD"},
                }
            },
        }
    )
    settings = bench_settings(Settings, bootstrap, database_url)
    names = TopicNames(settings.topic_prefix)
    kafka = kafka_connection(settings)
    await ensure_topics(kafka, names, settings.partitions)
    await load_topic(kafka, names, events)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    runtimes = []
    for _ in range(instances):
        s = spec(program)
        s.schema = schema
        runtimes.append(ServiceRuntime(s, settings))
    try:
        for rt in runtimes:  # one after the other: migrations first, then the group
            await rt.start()
        first: float | None = None
        while True:
            async with runtimes[0].engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT status, count(*), coalesce(sum(cost), 0) FROM decisions"
                            " GROUP BY status"
                        )
                    )
                ).all()
            done = sum(r[1] for r in rows)
            now = time.perf_counter()
            if first is None and done:
                first = now
                untimed = done
            if done >= offers:
                break
            await asyncio.sleep(0.05)
        assert first is not None
        seconds = max(now - first, 1e-9)
        by = {r[0]: (r[1], int(r[2])) for r in rows}
        granted, cost = by.get("granted", (0, 0))
        owners = [
            len({tp.partition for tp in rt.worker.assigned if "offers" in tp.topic})
            for rt in runtimes
        ]
    finally:
        for rt in runtimes:
            await rt.stop()
        async with runtimes[0].engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await runtimes[0].engine.dispose()
    rate = (offers - untimed) / seconds
    figures = {
        "bench": "ledger",
        "offers": offers,
        "accounts": accounts,
        "instances": instances,
        "decisions_per_s": rate,
        "seconds": seconds,
        "granted": granted,
        "granted_cost": cost,
        "cap": cap,
        "rejected": by.get("rejected", (0, 0))[0],
    }
    return [
        f"offers         {offers:,} credits for {accounts:,} accounts, demand"
        f" {demand / 100:,.2f} USD against a program cap of {cap / 100:,.2f} USD",
        f"instances      {instances} (offers.decisions partitions each: {owners})",
        f"decided        {(offers - untimed) / seconds:>10,.0f} decisions/s over {seconds:.1f}s"
        " (consume, caps, book, publish via the outbox; commit)",
        f"granted        {granted:,} for {cost / 100:,.2f} USD"
        f" ({'= the cap' if cost == cap else f'{(cap - cost) / 100:,.2f} USD short of the cap'});"
        f" {by.get('rejected', (0, 0))[0]:,} rejected by it",
    ], figures


def ledger_bench_with_embedded(
    offers: int, accounts: int, instances: int
) -> tuple[list[str], dict[str, Any]]:
    return with_stack(
        lambda bootstrap, db: run_ledger_bench(bootstrap, db, offers, accounts, instances)
    )
