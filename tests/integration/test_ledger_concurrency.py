"""Caps hold under concurrency: many grants against one budget, from several
partitions at once (transactions interleaving freely on Postgres) and from several
consumer instances in one group on the real broker. The sum granted never exceeds
the cap and reaches it exactly when demand exceeds it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from services.ledger.app import spec
from services.ledger.domain.program import load_ledger_program
from services.runtime.config import Settings
from services.runtime.errors import is_transient
from services.runtime.service import ServiceRuntime
from tests.kafka_helpers import produce
from tests.ledger_harness import Harness, ledger_engine, offer_issued, usd
from tests.tenants import create_tenant

T0 = datetime(2026, 5, 4, tzinfo=UTC)
CAP = 250_000  # 2,500.00 USD a month for the whole program


def capped(slice_percent: float = 5) -> dict[str, object]:
    return {
        "segments": {},
        "ledger": {
            "caps": {"program": usd(CAP).model_dump()},
            "leases": {"slice_percent": slice_percent},
        },
    }


async def _granted(h: Harness, tenant: str) -> tuple[int, int, int]:
    rows = await h.rows(
        "SELECT status, count(*) AS n, coalesce(sum(cost), 0) AS cost FROM decisions"
        " WHERE tenant = :t GROUP BY status",
        t=tenant,
    )
    by = {r["status"]: (r["n"], int(r["cost"])) for r in rows}
    return by.get("granted", (0, 0))[0], by.get("granted", (0, 0))[1], by.get("rejected", (0, 0))[0]


async def test_concurrent_partitions_never_exceed_a_shared_budget_and_exhaust_it(
    settings: Settings,
) -> None:
    engine = await ledger_engine(settings.async_database_url())
    h = Harness(engine, load_ledger_program(capped(slice_percent=3)))
    tenant = "acme"
    partitions, batches, per_batch = 6, 12, 6
    amounts = [700, 1_100, 1_300]  # uneven sizes: slices never divide evenly

    async def owner(p: int) -> None:
        for b in range(batches):
            await h.apply(
                [
                    offer_issued(
                        tenant,
                        f"acct-{p}-{b}-{i}",
                        f"o-{p}-{b}-{i}",
                        T0,
                        value=amounts[(p + b + i) % 3],
                    )
                    for i in range(per_batch)
                ],
                p,
            )

    try:
        # demand: 432 grants of ~1,033 on average, ~446,000 against a 250,000 cap
        async def with_retry(p: int) -> None:  # what the worker does on a deadlock:
            delay = 0.02  # retry with a growing pause (the worker's is 0.1 s to 5 s)
            for _ in range(30):
                try:
                    await owner(p)
                    return
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            raise AssertionError("never got through")

        await asyncio.gather(*(with_retry(p) for p in range(partitions)))
        n, total, rejected = await _granted(h, tenant)
        assert n + rejected == partitions * batches * per_batch
        assert total <= CAP
        # reached: what is left only shrinks, and each refusal saw less than it
        # needed, so what is left at the end is less than the smallest refusal
        smallest_refused = await h.scalar(
            "SELECT min(cost) FROM decisions WHERE tenant = 'acme' AND status = 'rejected'"
        )
        assert rejected and CAP - total < smallest_refused, (total, smallest_refused)
        leased = await h.scalar("SELECT sum(leased) FROM budget_leases WHERE tenant = 'acme'")
        allocated = await h.scalar("SELECT allocated FROM budgets WHERE tenant = 'acme'")
        used = await h.scalar("SELECT sum(used) FROM budget_leases WHERE tenant = 'acme'")
        assert used == total and leased <= allocated <= CAP
    finally:
        await engine.dispose()


async def test_several_consumer_instances_share_one_budget_on_the_broker(
    settings: Settings, tmp_path: Path
) -> None:
    program_file = tmp_path / "program.yaml"
    program_file.write_text(yaml.safe_dump(capped()))
    settings = settings.model_copy(update={"program": program_file})
    program = load_ledger_program(capped())
    instances = [ServiceRuntime(spec(program), settings) for _ in range(3)]
    tenant = "acme"
    await create_tenant(settings, tenant)
    demand = 600  # 600 grants of 10.00 USD against 2,500.00: 250 fit
    try:
        await asyncio.gather(*(rt.start() for rt in instances))
        for _ in range(300):  # every instance owns some partitions before any grant
            if all(rt.worker.assigned for rt in instances):
                break
            await asyncio.sleep(0.1)
        owners = [len(rt.worker.assigned) for rt in instances]
        assert all(owners), owners
        events = [
            offer_issued(tenant, f"acct-{i}", f"offer-{i}", T0, value=1_000) for i in range(demand)
        ]
        started = time.perf_counter()
        await produce(settings.kafka_bootstrap, f"{settings.topic_prefix}offers.decisions", events)
        h = Harness(instances[0].engine, program)
        for _ in range(1200):
            n, total, rejected = await _granted(h, tenant)
            if n + rejected >= demand:
                break
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        print(
            f"\n{demand} decisions by {len(instances)} instances in {seconds:.1f}s"
            f" ({demand / seconds:.0f}/s, produce included); partitions per instance {owners}"
        )
        assert (n, total, rejected) == (250, CAP, 350)
        worked = await h.rows(
            "SELECT DISTINCT partition FROM decisions WHERE tenant = :t", t=tenant
        )
        assert len(worked) > 1
    finally:
        await asyncio.gather(*(rt.stop() for rt in instances))
