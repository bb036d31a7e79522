"""``loyalty bench insights``: the insights read model's throughput on the real
broker and Postgres, and the latency of its six reports.

A synthetic history (``loyalty demo history``, with a cancellation cohort and a
planted feature sequence, so that there are exposures held out and treated and
adoptions in sequence) goes through the segmenter's fold and the offers logic in
memory; its events, segment transitions and offer decisions, and a
``credit.granted`` for every issued offer (no ledger in memory: each counts as
granted, as in ``loyalty insights report --history``) — all that the insights
service reads in production — are loaded onto fresh topics (keyed
``{tenant}:{account}``, partitioned as the outbox relay does, each record stamped
with its event time). Then the insights app starts with its real lifespan, in
process, on the whole backlog; it is timed from its first committed batch to the
moment its offsets stored in Postgres reach what was produced on every partition
(group join and the first batch excluded, as in the other benches). Last, each
report is read a few times over HTTP (in process) with a tenant key.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka.partitioner import DefaultPartitioner
from fastapi import FastAPI
from sqlalchemy import text

from benchmarks.stack import bench_settings, with_stack
from schemas import Event, topic_family
from services.insights_report import simulated_credits
from services.progress import TerminalProgress
from services.runtime.codec import encode
from services.runtime.config import Settings
from services.runtime.connections import Kafka, kafka_connection
from services.runtime.relay import make_producer
from services.runtime.service import ServiceRuntime, consuming_app
from services.runtime.topics import TopicNames, ensure_topics

TENANT = "bench"
ENDPOINTS = ("lift", "nrr", "upsell-rate", "segments", "bundles", "bundles/ready")
READS = 5  # calls per endpoint (nearest rank: the p95 of five is the slowest)
SEQUENCE = ("reports", "automations", 14.0, 0.3)
PAIR = ("api", "sso")
_PARTITIONER = DefaultPartitioner()


def logical_topic(event_type: str) -> str:
    """Where an event of ``event_type`` lives: ``events.<family>`` for producer
    events, else the decision topic of its family."""
    family = topic_family(event_type)
    if family is not None:
        return f"events.{family}"
    return {
        "segment": "segments.changes",
        "offer": "offers.decisions",
        "credit": "credits.decisions",
    }[event_type.split(".", 1)[0]]


async def produce(
    kafka: Kafka, names: TopicNames, events: Sequence[Event], progress: TerminalProgress
) -> dict[tuple[str, int], int]:
    """Sends ``events`` in order with ``send_batch``, one batch per partition at a
    time (the key's partition by the default partitioner, as the relay does);
    returns the records sent per (physical topic, partition)."""
    producer = make_producer(kafka, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    sent: Counter[tuple[str, int]] = Counter()
    try:
        parts: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future[Any]] = []
        pending: list[int] = []

        async def flush(tp: tuple[str, int]) -> None:
            batch = batches.pop(tp)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, tp[0], partition=tp[1]))
                pending.append(batch.record_count())
            if len(futures) >= 64:
                await drain()

        async def drain() -> None:
            await asyncio.gather(*futures)
            progress.advance(sum(pending))
            futures.clear()
            pending.clear()

        for e in events:
            topic = names.physical(logical_topic(e.type))
            if topic not in parts:
                parts[topic] = sorted(await producer.partitions_for(topic))
            m = encode(e)
            tp = (topic, _PARTITIONER(m.key, parts[topic], parts[topic]))
            stamp = int(e.time.timestamp() * 1000)
            for _ in range(2):
                batch = batches.get(tp)
                if batch is None:
                    batch = batches[tp] = producer.create_batch()
                added = batch.append(key=m.key, value=m.value, timestamp=stamp, headers=m.headers)
                if added is not None:
                    break
                await flush(tp)  # full: send it, and this record in a new one
            else:
                raise ValueError(f"a record of {e.type} is larger than a batch")
            sent[tp] += 1
        for tp in list(batches):
            await flush(tp)
        await drain()
    finally:
        await producer.stop()
    return dict(sent)


def insights_app(settings: Settings, schema: str) -> FastAPI:
    """``services.insights.app.create_app`` with the service in ``schema`` (a
    throw-away one): the same spec, program, routes and lifespan."""
    from services.insights.api import router
    from services.insights.app import load, spec

    program = load(settings)
    s = spec(program)
    s.schema = schema
    return consuming_app(s, settings, program, router)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, and an in-process client (as ``tests/apps.py``)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            yield client


async def stored_offsets(rt: ServiceRuntime, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    async with rt.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE topic = ANY(:t)"
            ),
            {"t": list(topics)},
        )
        return {(t, p): int(o) for t, p, o in rows.all()}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


async def run_insights_bench(
    bootstrap: str, database_url: str, accounts: int, days: int, cohort: int
) -> tuple[list[str], dict[str, Any]]:
    from services.cli import create_tenant_key
    from services.demo import Plant, write_history
    from services.runtime.program_file import read_program
    from services.segmenter.backfill import read_history
    from services.simulate import load_both, simulate

    progress = TerminalProgress()
    began = time.perf_counter()
    plant = Plant(tenant=TENANT, retention_points=10, cohort=cohort, sequence=SEQUENCE, pair=PAIR)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        write_history(path, accounts, days, seed=7, plant=plant)
        history = read_history(path, TENANT)
    segmenter, offers_program = load_both(read_program(None))
    inputs: list[Event] = []
    decisions: list[Event] = []
    await simulate(
        segmenter,
        offers_program,
        history,
        batch=5000,
        inputs_seen=inputs,
        decisions=decisions,
    )
    credits = simulated_credits(decisions)
    feed = [*inputs, *decisions, *credits]
    prepared = time.perf_counter() - began
    history_events = len(history)
    issued = sum(1 for d in decisions if d.type == "offer.issued")
    held = sum(1 for d in decisions if d.type == "offer.held_out")
    granted = len(credits)

    # no ticker: a round at wall-clock time would move stream time past the history
    settings = bench_settings(Settings, bootstrap, database_url).model_copy(
        update={"tick_interval": timedelta(0)}
    )
    kafka = kafka_connection(settings)
    names = TopicNames(settings.topic_prefix)
    await ensure_topics(kafka, names, settings.partitions)
    key = await create_tenant_key(settings, TENANT)
    with progress:
        progress.phase("producing", len(feed))
        t0 = time.perf_counter()
        produced = await produce(kafka, names, feed, progress)
        produce_s = time.perf_counter() - t0
    # the service does not share its process with a million events in production:
    # without this, full collections scanning them stretch batches and reads by seconds
    del history, inputs, decisions, credits, feed
    gc.collect()
    by_topic: Counter[str] = Counter()
    for (topic, _), n in produced.items():
        by_topic[topic.removeprefix(settings.topic_prefix)] += n
    total = sum(produced.values())

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    app = insights_app(settings, schema)
    rt: ServiceRuntime = app.state.runtime
    topics = sorted({t for t, _ in produced})
    latencies: dict[str, list[float]] = {}
    ready = 0
    try:
        started = time.perf_counter()
        async with running(app) as client:
            lifespan_s = time.perf_counter() - started
            first: tuple[float, int] | None = None
            done = 0
            with progress:
                progress.phase("consuming", total)
                while True:
                    stored = await stored_offsets(rt, topics)
                    now = time.perf_counter()
                    was, done = done, sum(min(stored.get(tp, 0), n) for tp, n in produced.items())
                    progress.advance(done - was)
                    if first is None and done:
                        first = (now, done)
                    if done >= total:
                        break
                    await asyncio.sleep(0.1)
            assert first is not None
            consume_s = max(now - first[0], 1e-6)
            to_first_s = first[0] - started
            untimed = first[1]
            async with rt.engine.connect() as conn:
                counts = {
                    name: int((await conn.execute(text(sql))).scalar_one())
                    for name, sql in (
                        ("accounts", "SELECT count(DISTINCT account) FROM subscriptions"),
                        ("exposures", "SELECT count(*) FROM exposures"),
                        ("held_out", "SELECT count(*) FROM exposures WHERE holdout"),
                        ("adoptions", "SELECT count(*) FROM adoptions"),
                        ("segment_changes", "SELECT count(*) FROM segment_changes"),
                        ("signals", "SELECT count(*) FROM signals_sent"),
                    )
                }
            dead = sum(
                s.value
                for metric in rt.metrics.registry.collect()
                for s in metric.samples
                if s.name == "loyalty_messages_dead_lettered_total"
            )
            headers = {"Authorization": f"Bearer {key}"}
            for _ in range(READS):
                for endpoint in ENDPOINTS:
                    t = time.perf_counter()
                    resp = await client.get(f"/v1/insights/{endpoint}", headers=headers)
                    latencies.setdefault(endpoint, []).append(1000 * (time.perf_counter() - t))
                    if resp.status_code != 200:
                        raise RuntimeError(
                            f"GET /v1/insights/{endpoint}: {resp.status_code} {resp.text[:200]}"
                        )
                    if endpoint == "bundles/ready":
                        ready = len(resp.json().get("ready", []))
    finally:
        async with rt.engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        await rt.engine.dispose()

    rate = (total - untimed) / consume_s if total > untimed else float("nan")
    reads = {
        ep: {
            "p50_ms": percentile(v, 0.5),
            "p95_ms": percentile(v, 0.95),
            "calls_ms": [round(x, 1) for x in v],
        }
        for ep, v in latencies.items()
    }
    figures: dict[str, Any] = {
        "bench": "insights",
        "accounts": accounts,
        "cohort": cohort,
        "days": days,
        "history_events": history_events,
        "records": total,
        "records_by_topic": dict(sorted(by_topic.items())),
        "records_per_s": rate,
        "consume_seconds": consume_s,
        "untimed_records": untimed,
        "time_to_first_record_s": to_first_s,
        "lifespan_start_s": lifespan_s,
        "produce_seconds": produce_s,
        "prepare_seconds": prepared,
        "dead_lettered": int(dead),
        "facts": counts,
        "simulated": {"issued": issued, "held_out": held, "credits": granted},
        "ready_accounts": ready,
        "reads": reads,
    }
    width = max(len(e) for e in ENDPOINTS)
    lines = [
        f"history        {history_events:,} events, {accounts:,} accounts + a cohort of"
        f" {cohort:,}, {days} days; prepared (write, read, simulate) in {prepared:.1f}s",
        f"records        {total:,} produced in {produce_s:.1f}s: "
        + ", ".join(f"{t} {n:,}" for t, n in sorted(by_topic.items())),
        f"insights       {rate:>10,.0f} records/s over {consume_s:.1f}s (facts, clocks,"
        " readiness; commit), from the first committed batch",
        f"first record   {to_first_s:.1f}s after start (lifespan {lifespan_s:.1f}s:"
        " migrations, topics, consumer; then the group join)",
        f"facts          {counts['accounts']:,} accounts, {counts['exposures']:,} exposures"
        f" ({counts['held_out']:,} held out; {issued + held:,} simulated),"
        f" {counts['adoptions']:,} adoptions, {counts['segment_changes']:,} segment changes,"
        f" {counts['signals']:,} bundle.ready; {int(dead)} dead-lettered",
        f"reads          p50 / p95 over {READS} calls each, ms:",
        *(
            f"  {ep:<{width}}  {r['p50_ms']:>8,.1f} / {r['p95_ms']:>8,.1f}"
            for ep, r in reads.items()
        ),
        "profile        .venv/bin/py-spy record -o /tmp/p.txt -f raw -r 100 --"
        " .venv/bin/loyalty bench insights",
    ]
    return lines, figures


def insights_bench_with_embedded(
    accounts: int, days: int, cohort: int
) -> tuple[list[str], dict[str, Any]]:
    return with_stack(
        lambda bootstrap, db: run_insights_bench(bootstrap, db, accounts, days, cohort)
    )
