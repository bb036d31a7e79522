"""What the benchmarks share: fresh topics and settings on the configured Kafka
and Postgres or on embedded ones, loading a topic, a throw-away service runtime
and timing its consumption."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text

from schemas import Event
from services.runtime.codec import encode
from services.runtime.config import Settings
from services.runtime.connections import Kafka, as_connection
from services.runtime.relay import make_producer
from services.runtime.service import ServiceRuntime, ServiceSpec
from services.runtime.topics import TopicNames

T = TypeVar("T")
S = TypeVar("S", bound=Settings)


async def load_topic(kafka: Kafka, names: TopicNames, events: list[Event]) -> None:
    """Puts the events on their topics, their tenants created first (as an operator
    would: the consumers dead-letter the events of a tenant that does not exist)."""
    from services.runtime.tenants import key_added_event, new_api_key, publish_key_event

    for tenant in sorted({e.tenant for e in events}):
        # the callers created the topics: the partition count only matters for missing ones
        await publish_key_event(kafka, names, 1, key_added_event(tenant, new_api_key()))
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
