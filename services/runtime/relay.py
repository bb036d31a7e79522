"""The outbox relay: publishes committed outbox rows to Kafka, in order.

One relay per service schema is active at a time (a transaction-scoped advisory
lock), so rows go out in ``id`` order. Rows of one account are written by one
partition owner, batch after batch, so their ids follow commit order and the
account's messages stay ordered. A row is deleted only after the broker
acknowledged it (``acks=all``); a crash in between publishes it again, and
consumers drop the repeat by event id.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.batch import FaultHook, headers_from_json
from services.runtime.connections import Kafka, KafkaConnection, as_connection
from services.runtime.errors import is_transient
from services.runtime.metrics import RuntimeMetrics
from services.runtime.tasks import finish_task, stop_quietly

log = logging.getLogger(__name__)

_PARTITIONER = DefaultPartitioner()
"""The producer's default partitioner (murmur2 of the key, as Kafka's Java client):
the partition ``send`` would pick for the same key."""


def make_producer(kafka: Kafka, **extra: Any) -> AIOKafkaProducer:
    """The producer settings of the whole system: acks from all replicas, no
    idempotent producer (the embedded broker lacks InitProducerId), and the
    connection's security options."""
    options: dict[str, Any] = {"linger_ms": 2, "request_timeout_ms": 10_000, **extra}
    return AIOKafkaProducer(
        **as_connection(kafka).client_kwargs(), acks="all", enable_idempotence=False, **options
    )


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        engine: AsyncEngine,
        kafka: KafkaConnection,
        metrics: RuntimeMetrics,
        fault: FaultHook | None = None,
        batch_size: int = 2_000,
        topic_prefix: str = "",
    ) -> None:
        self.service = service
        self.topic_prefix = topic_prefix  # metrics name the logical topic, as the worker's
        self.engine = engine
        self.kafka = kafka
        self.metrics = metrics
        self.fault = fault or (lambda step: None)
        self.batch_size = batch_size
        self._lock_key = zlib.crc32(f"outbox:{schema}".encode())
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self.start_producer()
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-relay")

    async def start_producer(self) -> None:
        """Connects without starting the loop (for one-shot ``publish_once`` use)."""
        # record batches of up to 256 KiB: a batch of outbox rows goes out in a few
        self._producer = make_producer(self.kafka, max_batch_size=262_144)
        await self._producer.start()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        await finish_task(self._task, f"{self.service} relay")
        if self._task is not None and not self._task.cancelled() and self._task.exception() is None:
            await self._drain()
        if self._producer is not None:
            await stop_quietly(self._producer.stop(), f"{self.service} relay producer")
            self._producer = None

    async def _drain(self, budget_s: float = 10) -> None:
        """Graceful stop: publish what the last batches committed, within a budget
        (whatever is left is published by the next start)."""
        try:
            async with asyncio.timeout(budget_s):
                while await self.publish_once() > 0:
                    pass
        except Exception as exc:
            log.warning("%s: outbox not fully drained at stop (%r)", self.service, exc)

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                sent = await self.publish_once()
                delay = 0.1
            except Exception as exc:
                log.warning("%s: relay failed (%s); retry in %.1fs", self.service, exc, delay)
                if not is_transient(exc):
                    log.exception("%s: unexpected relay error", self.service)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if sent < self.batch_size:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                except TimeoutError:
                    pass

    async def _send(self, rows: Sequence[Any]) -> None:
        """Sends the rows in order and waits for every ack. Rows go into one record
        batch per partition (the key's partition, by the producer's own partitioner
        over the topic's partitions in order), sent with ``send_batch``: a few calls
        per partition instead of one per message. A message too large for a batch
        goes alone through ``send``."""
        producer = self._producer
        assert producer is not None
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        futures = []
        for _id, topic, key, value, headers in rows:
            hdrs = headers_from_json(headers)
            parts = partitions.get(topic)
            if parts is None:
                parts = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = _PARTITIONER(key, parts, parts)
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is not None:
                continue
            # the batch is full: send it, and this message in the next one
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is None:
                del open_batches[(topic, partition)]  # larger than any batch
                futures.append(
                    await producer.send(topic, value, key=key, headers=hdrs, partition=partition)
                )
        for (topic, partition), batch in open_batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def publish_once(self) -> int:
        """Publishes one batch of outbox rows; returns how many."""
        assert self._producer is not None
        async with self.engine.begin() as conn:
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": self._lock_key}
                )
            ).scalar_one()
            if not got:
                return 0
            rows = (
                await conn.execute(
                    text("SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT :n"),
                    {"n": self.batch_size},
                )
            ).all()
            if not rows:
                self.metrics.outbox_backlog.set(0)
                return 0
            await self._send(rows)
            self.fault("relay_after_send")
            await conn.execute(
                text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": [r[0] for r in rows]}
            )
            # a partial batch emptied the outbox: count only when there may be more
            backlog = 0
            if len(rows) == self.batch_size:
                backlog = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        self.metrics.outbox_backlog.set(backlog)
        for row in rows:
            topic = row[1].removeprefix(self.topic_prefix)
            self.metrics.published(topic, _event_type(row[4])).inc()
        return len(rows)


def _event_type(headers: str | list[Any]) -> str:
    """The ``ce_type`` of an outbox row's headers ('' for a message without one)."""
    for name, value in headers_from_json(headers):
        if name == "ce_type":
            return value.decode(errors="replace")
    return ""
