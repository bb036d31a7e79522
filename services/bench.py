"""``loyalty bench segmenter``: the segmenter's throughput next to the raw rate at
which the same topic can be consumed and JSON-decoded, in the same run.

It loads N synthetic events for M accounts onto fresh topics (a random prefix),
reads them once with a plain consumer that only decodes the JSON (the raw rate),
then runs a segmenter on them and times it from its first committed batch to its
last (group join excluded). Uses the configured Kafka and Postgres, or starts the
embedded ones in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text

from schemas import Event, Money
from schemas.events import (
    FeatureUsed,
    FeatureUsedData,
    Login,
    LoginData,
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.runtime.codec import encode
from services.runtime.config import Settings
from services.runtime.connections import Kafka, as_connection, kafka_connection
from services.runtime.relay import make_producer
from services.runtime.service import ServiceRuntime, ServiceSpec
from services.runtime.topics import TopicNames, ensure_topics

T = TypeVar("T")
S = TypeVar("S", bound=Settings)


@dataclass
class BenchResult:
    events: int
    accounts: int
    raw_per_s: float
    segmenter_per_s: float
    batches: int
    mean_batch_ms: float
    transitions: int

    @property
    def ratio(self) -> float:
        return self.segmenter_per_s / self.raw_per_s if self.raw_per_s else 0.0

    def json(self) -> dict[str, Any]:
        return {
            "bench": "segmenter",
            "events": self.events,
            "accounts": self.accounts,
            "raw_per_s": self.raw_per_s,
            "segmenter_per_s": self.segmenter_per_s,
            "ratio": self.ratio,
            "batches": self.batches,
            "mean_batch_ms": self.mean_batch_ms,
            "transitions": self.transitions,
        }

    def lines(self) -> list[str]:
        return [
            f"events        {self.events:,} for {self.accounts:,} accounts",
            f"raw consume + JSON decode   {self.raw_per_s:>10,.0f} events/s",
            f"segmenter (fold + commit)   {self.segmenter_per_s:>10,.0f} events/s",
            f"ratio                       {self.ratio:>10.1%}",
            f"batches {self.batches}, mean {self.mean_batch_ms:.1f} ms a batch,"
            f" {self.transitions:,} segment transitions",
        ]


def synthetic(n: int, accounts: int, tenant: str, seed: int = 11) -> list[Event]:
    """Live-looking traffic: event times within the last 30 minutes, per account in order."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(minutes=30)
    step = timedelta(minutes=30) / max(n, 1)
    out: list[Event] = []
    for i in range(n):
        acct = f"acct-{rng.randrange(accounts):06d}"
        t = start + step * i
        common = {
            "id": uuid.uuid4().hex,
            "source": "bench",
            "subject": acct,
            "tenant": tenant,
            "time": t,
        }
        roll = rng.random()
        if roll < 0.02:
            seats = rng.choice([10, 25, 60, 150])
            out.append(
                SubscriptionUpdated(
                    type="billing.subscription_updated",
                    **common,
                    data=SubscriptionUpdatedData(
                        plan="pro",
                        interval="month",
                        seats_purchased=seats,
                        mrr=Money(amount=seats * 2500, currency="USD"),
                        renewal_date=(now + timedelta(days=90)).date(),
                        status="active",
                    ),
                )
            )
        elif roll < 0.10:
            out.append(
                SeatsChanged(
                    type="product.seats_changed",
                    **common,
                    data=SeatsChangedData(seats_used=rng.randint(1, 150)),
                )
            )
        elif roll < 0.45:
            out.append(
                Login(
                    type="product.login", **common, data=LoginData(user_id=f"u{rng.randint(1, 50)}")
                )
            )
        else:
            out.append(
                FeatureUsed(
                    type="product.feature_used",
                    **common,
                    data=FeatureUsedData(
                        user_id=f"u{rng.randint(1, 50)}",
                        feature=rng.choice(["reports", "api", "sso"]),
                        key_action=rng.random() < 0.4,
                    ),
                )
            )
    return out


async def load_topic(kafka: Kafka, names: TopicNames, events: list[Event]) -> None:
    producer = make_producer(kafka, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for e in events:
            m = encode(e)
            family = e.type.split(".")[0]
            topic = names.physical(
                {"segment": "segments.changes", "offer": "offers.decisions"}.get(
                    family, f"events.{family}"
                )
            )
            futures.append(await producer.send(topic, m.value, key=m.key, headers=m.headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_rate(kafka: Kafka, topics: list[str], expected: int) -> float:
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())
        ]
        while not tps:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(t, p)
                for t in topics
                for p in (consumer.partitions_for_topic(t) or ())
            ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                for r in recs:
                    json.loads(r.value)
                seen += sum(len(v) for v in batch.values())
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def bench_settings(cls: type[S], bootstrap: str, database_url: str) -> S:
    """Settings on fresh topics (a random prefix) of the given stack."""
    return cls(
        kafka_bootstrap=bootstrap,
        database_url=SecretStr(database_url),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=6_000,
    )


@asynccontextmanager
async def throwaway_runtime(spec: ServiceSpec, settings: Settings) -> AsyncIterator[ServiceRuntime]:
    """A started service in a throw-away schema, dropped at the end."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    spec.schema = schema
    rt = ServiceRuntime(spec, settings)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()
        async with rt.engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await rt.engine.dispose()


async def time_consumption(rt: ServiceRuntime, topics: Sequence[str], expected: int) -> Timed:
    """Waits until ``expected`` records were consumed; timed from the first
    committed batch (group join excluded) to the last."""
    first: tuple[float, int] | None = None
    while True:
        done = await rt.worker.consumed(topics)
        now = time.perf_counter()
        if first is None and done > 0:
            first = (now, done)
        if done >= expected:
            break
        await asyncio.sleep(0.05)
    assert first is not None
    return Timed(seconds=max(now - first[0], 1e-6), untimed=first[1], total=expected)


@dataclass(frozen=True)
class Timed:
    seconds: float
    untimed: int  # consumed by the first batch, before the clock started
    total: int

    @property
    def rate(self) -> float:
        timed = self.total - self.untimed
        return timed / self.seconds if timed > 0 else float("nan")


async def run_bench(bootstrap: str, database_url: str, events: int, accounts: int) -> BenchResult:
    from services.segmenter.app import TOPICS, load, spec, wall_clock
    from services.segmenter.config import SegmenterSettings

    settings = bench_settings(SegmenterSettings, bootstrap, database_url)
    kafka = kafka_connection(settings)
    names = TopicNames(settings.topic_prefix)
    await ensure_topics(kafka, names, settings.partitions)
    data = synthetic(events, accounts, tenant="bench")
    await load_topic(kafka, names, data)
    topics = [names.physical(t) for t in ("events.product", "events.billing")]
    raw = await raw_rate(kafka, topics, events)

    async with throwaway_runtime(spec(load(settings), wall_clock), settings) as rt:
        timed = await time_consumption(rt, TOPICS, events)
        hist = next(iter(rt.metrics.batch_seconds.collect())).samples
        count = next(s.value for s in hist if s.name.endswith("_count"))
        total = next(s.value for s in hist if s.name.endswith("_sum"))
        async with rt.engine.connect() as conn:
            transitions = int(
                (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            )
        transitions += int(
            sum(
                sample.value
                for metric in rt.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == "loyalty_messages_published_total"
            )
        )
    return BenchResult(
        events,
        accounts,
        raw,
        timed.rate,
        int(count),
        1000 * total / count if count else 0.0,
        transitions,
    )


def with_stack(run: Callable[[str, str], Coroutine[Any, Any, T]]) -> T:
    """Runs ``run(bootstrap, database_url)`` on the configured Kafka and Postgres,
    or on embedded ones started (and stopped) for it."""
    import os

    from services.runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

    broker = pg = None
    try:
        bootstrap = os.environ.get("LOYALTY_KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = EmbeddedBroker("127.0.0.1", free_port())
            broker.start()
            bootstrap = broker.bootstrap
        db = os.environ.get("LOYALTY_DATABASE_URL")
        if not db:
            pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="loyalty-bench-")) / "pg")
            db = pg.start()
        return asyncio.run(run(bootstrap, db))
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()


def bench_with_embedded(events: int, accounts: int) -> BenchResult:
    return with_stack(lambda bootstrap, db: run_bench(bootstrap, db, events, accounts))
