"""Time that moves without traffic: clock ticks in the stream.

Every ``tick_interval`` one elected ticker (whichever service instance holds a
Postgres advisory lock for the topic prefix) writes, for every tenant, one
``clock.tick`` to every partition of the input topics (``events.product``,
``events.billing``, ``events.support``). The ticks of one moment are a *round*:
they share the round's time, which is both their event time and their Kafka
timestamp, and each says how many ticks the round wrote for its tenant.

Because ticks are records, a replay of the topics sees the same ticks at the same
places and decides the same. A tick on a partition says: everything written here
before me has been read. So

- a consumer that keeps time per (tenant, partition), like the ledger, moves that
  clock to the tick's time;
- a consumer that keeps one clock per tenant across partitions, like the
  segmenter, moves it when it has read a whole round (:func:`complete_rounds`):
  then every input partition has been read up to the round, whoever owns it, and
  a day can end without leaving a partition's backlog on the wrong side of it.

Ticks are not an account's events: handlers skip them (:func:`split_ticks`)
except for time. The ``clock`` family is not ingestible, so over HTTP nobody can
send one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas import Event
from schemas.events import ClockTick, ClockTickData, ClockWatermark, ClockWatermarkData
from schemas.topics import INPUT_TOPICS
from services.runtime.batch import Inbound
from services.runtime.codec import encode
from services.runtime.connections import KafkaConnection
from services.runtime.errors import is_transient
from services.runtime.metrics import RuntimeMetrics
from services.runtime.tasks import finish_task, stop_quietly
from services.runtime.topics import TopicNames

log = logging.getLogger(__name__)

TICKED_TOPICS = INPUT_TOPICS
"""The input topics every round writes a tick to, on each partition."""

SOURCE = "loyalty/ticker"
_IDS = uuid.UUID("0b7d9c51-6a2e-4f83-9e1d-4c5a7b3e2f10")

T = TypeVar("T", bound=Inbound)


def round_ticks(
    tenant: str, at: datetime, partitions: dict[str, int]
) -> list[tuple[str, int, ClockTick]]:
    """The round at ``at`` for ``tenant``: (logical topic, partition, tick) for every
    partition of ``partitions`` (logical topic -> partition count). Ids derive from
    (tenant, topic, partition, time), so a round written twice is deduplicated."""
    size = sum(partitions.values())
    out = []
    for topic, count in sorted(partitions.items()):
        for p in range(count):
            out.append(
                (
                    topic,
                    p,
                    ClockTick(
                        id=str(uuid.uuid5(_IDS, f"{tenant}/{topic}/{p}/{at.isoformat()}")),
                        source=SOURCE,
                        type="clock.tick",
                        subject=f"~{topic}/{p}",
                        tenant=tenant,
                        time=at,
                        data=ClockTickData(round=at, topic=topic, partition=p, round_size=size),
                    ),
                )
            )
    return out


def watermark_records(
    tenant: str, at: datetime, partitions: dict[str, int]
) -> list[tuple[str, int, ClockWatermark]]:
    """A time-ordered history's promise at ``at`` (see ``clock.watermark``) for every
    partition of ``partitions``; ids derive from (tenant, topic, partition, time)."""
    size = sum(partitions.values())
    return [
        (
            topic,
            p,
            ClockWatermark(
                id=str(uuid.uuid5(_IDS, f"{tenant}/{topic}/{p}/watermark/{at.isoformat()}")),
                source="loyalty/ingest",
                type="clock.watermark",
                subject=f"~{topic}/{p}",
                tenant=tenant,
                time=at,
                data=ClockWatermarkData(watermark=at, topic=topic, partition=p, partitions=size),
            ),
        )
        for topic, count in sorted(partitions.items())
        for p in range(count)
    ]


async def partition_counts(
    producer: AIOKafkaProducer, names: TopicNames, topics: Iterable[str] = TICKED_TOPICS
) -> dict[str, int]:
    """Logical topic -> how many partitions it has (from the producer's metadata)."""
    return {t: len(await producer.partitions_for(names.physical(t))) for t in topics}


async def send_to_partitions(
    producer: AIOKafkaProducer,
    names: TopicNames,
    records: Iterable[tuple[str, int, Event]],
    timestamp_ms: int | None = None,
) -> int:
    """Sends each (logical topic, partition, event) to that very partition and waits
    until the broker acknowledged all of them; returns how many."""
    sent = []
    for topic, partition, event in records:
        msg = encode(event)
        sent.append(
            await producer.send(
                names.physical(topic),
                msg.value,
                key=msg.key,
                partition=partition,
                headers=list(msg.headers),
                timestamp_ms=timestamp_ms,
            )
        )
    if sent:
        await asyncio.gather(*sent)
    return len(sent)


def split_ticks(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """(the account events, the time records: ticks and watermarks) of a batch, each
    in batch order."""
    events: list[T] = []
    ticks: list[T] = []
    for item in items:
        (ticks if isinstance(item.event, ClockTick | ClockWatermark) else events).append(item)
    return events, ticks


async def complete_rounds(conn: AsyncConnection, ticks: Sequence[Inbound]) -> dict[str, datetime]:
    """Counts ``ticks`` (first seen, in the batch's transaction; watermarks in it are
    not rounds and are passed over) towards their rounds
    and returns, per tenant, the time of the newest round now read in full. A round
    missing a tick (its ticker died halfway) never completes; the next one does,
    and older rounds are then forgotten."""
    counts: Counter[tuple[str, datetime, int]] = Counter()
    for item in ticks:
        tick = item.event
        if isinstance(tick, ClockTick):
            counts[(tick.tenant, tick.data.round, tick.data.round_size)] += 1
    if not counts:
        return {}
    keys = sorted(counts)
    rows = await conn.execute(
        text(
            "INSERT INTO tick_rounds (tenant, round_at, seen, size)"
            " SELECT * FROM unnest(CAST(:t AS text[]), CAST(:r AS timestamptz[]),"
            " CAST(:n AS int[]), CAST(:s AS int[]))"
            " ON CONFLICT (tenant, round_at) DO UPDATE SET seen = tick_rounds.seen + EXCLUDED.seen"
            " RETURNING tenant, round_at, seen >= size"
        ),
        {
            "t": [k[0] for k in keys],
            "r": [k[1] for k in keys],
            "n": [counts[k] for k in keys],
            "s": [k[2] for k in keys],
        },
    )
    done: dict[str, datetime] = {}
    for tenant, at, complete in rows.all():
        if complete and (tenant not in done or at > done[tenant]):
            done[tenant] = at
    if done:
        tenants = sorted(done)
        await conn.execute(
            text(
                "DELETE FROM tick_rounds r USING unnest(CAST(:t AS text[]),"
                " CAST(:r AS timestamptz[])) AS d(tenant, round_at)"
                " WHERE r.tenant = d.tenant AND r.round_at <= d.round_at"
            ),
            {"t": tenants, "r": [done[t] for t in tenants]},
        )
    return done


class Ticker:
    """Writes a round of ticks every ``interval`` while it holds the ticker lock.

    Every service instance runs one; the one whose dedicated connection holds the
    session advisory lock of the topic prefix ticks, the others wait to take over
    (a dead leader's connection closes, and its lock with it)."""

    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        kafka: KafkaConnection,
        names: TopicNames,
        interval: timedelta,
        metrics: RuntimeMetrics,
        topics: Iterable[str] = TICKED_TOPICS,
    ) -> None:
        self.service = service
        self.engine = engine
        self.kafka = kafka
        self.names = names
        self.interval = interval
        self.metrics = metrics
        self.topics = tuple(topics)
        self._lock_key = zlib.crc32(f"ticker:{names.prefix}".encode())
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.leading = False
        self.rounds = 0

    async def start(self) -> None:
        if self.interval > timedelta(0):
            self._task = asyncio.create_task(self._run(), name=f"{self.service}-ticker")

    async def stop(self) -> None:
        self._stopping.set()
        await finish_task(self._task, f"{self.service} ticker")

    async def _run(self) -> None:
        from services.runtime.relay import make_producer  # the relay imports the worker too

        delay = 0.5
        while not self._stopping.is_set():
            producer = make_producer(self.kafka)
            try:
                await producer.start()
                async with self.engine.connect() as conn:
                    await self._lead(conn, producer)
                delay = 0.5
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("%s: the ticker failed; it starts again", self.service)
                else:
                    log.warning("%s: ticker: %s; retrying", self.service, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self.leading = False
                await stop_quietly(producer.stop(), f"{self.service} ticker producer")

    async def _lead(self, conn: AsyncConnection, producer: AIOKafkaProducer) -> None:
        """Waits for the lock on ``conn``, then ticks until stopped; the lock goes
        with the connection."""
        while not self._stopping.is_set():
            got = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key})
            ).scalar_one()
            await conn.commit()
            if got:
                break
            await self._sleep(self.interval.total_seconds())
        else:
            return
        self.leading = True
        log.info("%s: leading the ticker (every %s)", self.service, self.interval)
        try:
            while not self._stopping.is_set():
                await self.tick(conn, producer, datetime.now(UTC))
                await self._sleep(self.interval.total_seconds())
        finally:
            if not conn.closed and not conn.invalidated:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._lock_key})
                await conn.commit()

    async def tick(self, conn: AsyncConnection, producer: AIOKafkaProducer, at: datetime) -> int:
        """Writes one round at ``at`` for every known tenant; returns the ticks written."""
        tenants = (
            await conn.execute(text("SELECT DISTINCT tenant FROM api_keys ORDER BY tenant"))
        ).scalars()
        names = list(tenants)
        await conn.commit()
        partitions = await partition_counts(producer, self.names, self.topics)
        records = [r for tenant in names for r in round_ticks(tenant, at, partitions)]
        sent = await send_to_partitions(
            producer, self.names, records, timestamp_ms=int(at.timestamp() * 1000)
        )
        self.rounds += 1
        self.metrics.ticks.inc(sent)
        return sent

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass
