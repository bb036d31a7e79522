"""Small helpers for tests that read and write real topics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import Event
from services.runtime.codec import DecodeError, decode, encode


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
