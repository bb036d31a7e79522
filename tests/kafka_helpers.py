"""Small helpers for tests that read and write real topics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text

from schemas import Event
from services.runtime.codec import DecodeError, decode, encode

if TYPE_CHECKING:
    from services.runtime.service import ServiceRuntime


async def produce(
    bootstrap: str,
    topic: str,
    events: Sequence[Event],
    *,
    timestamp_ms: int | None = None,
    one_batch: bool = False,
) -> None:
    """Writes ``events`` with the one codec, in order. ``timestamp_ms`` stamps the
    records (their arrival, as a producer may set it; the send time otherwise);
    ``one_batch`` sends them together, so that a consumer gets them in one fetch."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=200 if one_batch else 0,
    )
    await producer.start()
    try:
        pending = []
        for e in events:
            m = encode(e)
            sent = await producer.send(
                topic, m.value, key=m.key, headers=m.headers, timestamp_ms=timestamp_ms
            )
            if one_batch:
                pending.append(sent)
            else:
                await sent
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def produce_ticks(
    bootstrap: str, prefix: str, ticks: Sequence[tuple[str, int, Event]]
) -> None:
    """Writes clock ticks as the ticker does (each to its own partition, stamped with
    its round's time), in order."""
    from services.runtime.relay import make_producer
    from services.runtime.ticks import partition_counts, send_to_partitions
    from services.runtime.topics import TopicNames

    names = TopicNames(prefix)
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        await partition_counts(producer, names, {t for t, _, _ in ticks})  # metadata
        for tick in ticks:
            await send_to_partitions(
                producer, names, [tick], timestamp_ms=int(tick[2].time.timestamp() * 1000)
            )
    finally:
        await producer.stop()


async def produce_raw(
    bootstrap: str, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, *, at_least: int = 0, timeout_s: float = 30, settle_s: float = 1.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting until at least
    ``at_least`` arrived (or the timeout), then ``settle_s`` more for stragglers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            if asyncio.get_running_loop().time() > deadline:
                return []
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        settle_until: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            now = loop.time()
            if len(records) >= at_least and settle_until is None:
                settle_until = now + settle_s
            if (settle_until is not None and now >= settle_until) or now > deadline:
                return records
    finally:
        await consumer.stop()


def decoded(records: Sequence[Any]) -> list[Any]:
    out = []
    for r in records:
        try:
            out.append(decode(r.value, r.headers))
        except DecodeError:
            pass
    return out


async def produce_one(
    bootstrap: str, topic: str, event: Event, *, partition: int | None = None
) -> tuple[int, int]:
    """Writes ``event`` with the one codec, to ``partition`` or else its key's (as
    every producer of the system would); returns the partition and offset it got."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        m = encode(event)
        sent = await producer.send_and_wait(
            topic, m.value, key=m.key, headers=m.headers, partition=partition
        )
    finally:
        await producer.stop()
    return sent.partition, sent.offset


async def wait_consumed(
    runtime: ServiceRuntime, topic: str, partition: int, offset: int, timeout_s: float = 60
) -> None:
    """Waits until ``runtime`` has applied the record at ``offset`` of the logical
    ``topic``'s ``partition``, and so every record before it there: the offset it
    stores in Postgres, in the transaction of the batch's effects, is past it.

    The ground for a negative assertion. Write a marker after the records under test
    on their partition (e.g. with :func:`produce_one`; a copy of an event the
    consumers already applied is a no-op for them, dropped by their dedupe) and wait
    for it: whatever those records were going to do, they have done."""
    tp = TopicPartition(runtime.names.physical(topic), partition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        stored = (await runtime.worker.load_offsets([tp])).get(tp, 0)
        if stored > offset:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"{runtime.spec.name} stored offset {stored} on {tp.topic}[{partition}]"
                f" after {timeout_s}s; waited for it to pass {offset}"
            )
        await asyncio.sleep(0.1)


async def wait_published(runtime: ServiceRuntime, timeout_s: float = 60) -> None:
    """Waits until ``runtime``'s outbox is empty: everything its committed batches
    queued is on the broker (the relay deletes a row only once it is acknowledged),
    so a marker written now follows all of it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        async with runtime.engine.connect() as conn:
            queued = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        if queued == 0:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{runtime.spec.name}: {queued} outbox rows after {timeout_s}s")
        await asyncio.sleep(0.1)
