"""Producing accepted events, acknowledged by all in-sync replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import Event
from services.runtime.codec import encode
from services.runtime.connections import Kafka
from services.runtime.relay import make_producer
from services.runtime.tasks import stop_quietly
from services.runtime.ticks import partition_counts, send_to_partitions, watermark_records
from services.runtime.topics import TopicNames

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time: nothing may be reported accepted."""


class KafkaEventPublisher:
    def __init__(self, kafka: Kafka, names: TopicNames, ack_timeout_s: float) -> None:
        self.kafka = kafka
        self.names = names
        self.ack_timeout_s = ack_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._starting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = make_producer(self.kafka, request_timeout_ms=int(self.ack_timeout_s * 1000))
            try:
                await producer.start()
                self._producer = producer
                return
            except KafkaError as exc:
                await producer.stop()
                log.warning("ingest: broker not reachable (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._producer is not None:
            await stop_quietly(self._producer.stop(), "ingest producer")

    async def publish(self, topic_of: Sequence[tuple[str, Event]]) -> None:
        """Sends every event and returns once the broker acknowledged all of them."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("not connected to the broker yet")
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                futures = []
                for topic, event in topic_of:
                    msg = encode(event)
                    futures.append(
                        await producer.send(
                            self.names.physical(topic), msg.value, key=msg.key, headers=msg.headers
                        )
                    )
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def publish_watermark(self, tenant: str, at: datetime) -> None:
        """Writes ``clock.watermark`` at ``at`` for ``tenant`` to every partition of the
        input topics (a time-ordered history's promise) and waits for the acks."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("not connected to the broker yet")
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                partitions = await partition_counts(producer, self.names)
                await send_to_partitions(
                    producer, self.names, watermark_records(tenant, at, partitions)
                )
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
