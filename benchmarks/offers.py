"""``loyalty bench offers``: the offers service's throughput on the real broker and
Postgres. A synthetic history (``loyalty demo history``) goes through the
segmenter's fold in memory; its events and transitions — what the offers
service reads in production — are loaded onto fresh topics, then one offers
service consumes them, timed from its first committed batch to its last."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.stack import (
    bench_settings,
    load_topic,
    throwaway_runtime,
    time_consumption,
    with_stack,
)
from schemas import Event
from services.runtime.config import Settings
from services.runtime.connections import kafka_connection
from services.runtime.topics import TopicNames, ensure_topics


async def run_offers_bench(
    bootstrap: str, database_url: str, accounts: int, days: int
) -> tuple[list[str], dict[str, Any]]:
    from services.demo import write_history
    from services.offers.app import TOPICS, load, spec
    from services.runtime.program_file import read_program
    from services.segmenter.backfill import read_history
    from services.simulate import load_both, simulate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        write_history(path, accounts, days)
        events = read_history(path, "bench")
    segmenter, offers_program = load_both(read_program(None))
    inputs: list[Event] = []
    sim = await simulate(segmenter, offers_program, events, inputs_seen=inputs)

    settings = bench_settings(Settings, bootstrap, database_url)
    names = TopicNames(settings.topic_prefix)
    kafka = kafka_connection(settings)
    await ensure_topics(kafka, names, settings.partitions)
    await load_topic(kafka, names, inputs)
    async with throwaway_runtime(spec(load(settings)), settings) as rt:
        timed = await time_consumption(rt, TOPICS, len(inputs))
        async with rt.engine.connect() as conn:
            decisions = int((await conn.execute(text("SELECT count(*) FROM offers"))).scalar_one())
    elapsed = timed.seconds
    figures = {
        "bench": "offers",
        "events": len(events),
        "inputs": len(inputs),
        "inputs_per_s": timed.rate,
        "decisions": decisions,
        "simulated_decisions": sim.decisions,
        "same_decisions_count": decisions == sim.decisions,
        "in_memory_inputs_per_s": sim.offer_inputs / sim.offer_seconds,
        "ratio": timed.rate / (sim.offer_inputs / sim.offer_seconds),
    }
    return [
        f"history        {len(events):,} events, {accounts} accounts, {days} days"
        f" -> {len(inputs):,} offers inputs (events + transitions)",
        f"offers service {timed.rate:>10,.0f} inputs/s  (consume, decide, commit; Postgres)",
        f"decisions      {decisions:,} ({sim.decisions:,} in the in-memory simulation)"
        f" = {decisions * timed.rate / len(inputs):,.0f} decisions/s over {elapsed:.1f}s"
        " (pro rata to the timed inputs)",
        f"in memory      {sim.offer_inputs / sim.offer_seconds:>10,.0f} inputs/s"
        " (the same logic without I/O)",
    ], figures


def offers_bench_with_embedded(accounts: int, days: int) -> tuple[list[str], dict[str, Any]]:
    return with_stack(lambda bootstrap, db: run_offers_bench(bootstrap, db, accounts, days))
