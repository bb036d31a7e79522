"""Topic names (with the configurable prefix), topic creation, and the broker
incarnation marker.

The embedded broker keeps topics in memory: after a restart they are new and
empty while Postgres still holds the old offsets. Each topic set therefore carries
an *incarnation* — a random id written as the first record of the
``loyalty.incarnation`` topic by whoever creates the topics first. A service that
finds a different incarnation than the one stored with its offsets knows its
offsets point into a log that no longer exists, and starts the new one from the
beginning instead of wedging on offsets beyond the end.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

# the topic contract lives in schemas/ (the AsyncAPI document is made from it)
from schemas.topics import ACCOUNT_TOPICS as ACCOUNT_TOPICS
from schemas.topics import DLQ_SUFFIX as DLQ_SUFFIX
from schemas.topics import INCARNATION as INCARNATION
from schemas.topics import TENANTS as TENANTS
from services.runtime.connections import Kafka, as_connection

log = logging.getLogger(__name__)


class TopicNames:
    """Maps logical names (``events.product``) to physical ones (with the prefix)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def physical(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix) :] if physical.startswith(self.prefix) else physical

    def dlq(self, logical: str) -> str:
        return self.physical(logical + DLQ_SUFFIX)

    def all_topics(self, partitions: int) -> dict[str, int]:
        """Every physical topic the system uses -> its partition count."""
        topics = {self.physical(t): partitions for t in ACCOUNT_TOPICS}
        topics.update({self.dlq(t): partitions for t in ACCOUNT_TOPICS})
        topics[self.physical(TENANTS)] = 1
        topics[self.dlq(TENANTS)] = 1
        topics[self.physical(INCARNATION)] = 1
        return topics


async def ensure_topics(kafka: Kafka, names: TopicNames, partitions: int) -> list[str]:
    """Creates the missing topics; returns the names it created."""
    wanted = names.all_topics(partitions)
    admin = AIOKafkaAdminClient(**as_connection(kafka).client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, p, 1) for n, p in wanted.items() if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; the topics exist, which is what we want
        return [t.name for t in missing]
    finally:
        await admin.close()


async def broker_incarnation(kafka: Kafka, names: TopicNames, timeout_s: float = 30) -> str:
    """The incarnation id of the current topic set, writing one if there is none."""
    tp = TopicPartition(names.physical(INCARNATION), 0)
    first = await _first_record(kafka, tp, wait_s=0.5)
    if first is None:
        producer = AIOKafkaProducer(
            **as_connection(kafka).client_kwargs(), acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            await producer.send_and_wait(tp.topic, uuid.uuid4().hex.encode(), partition=0)
        finally:
            await producer.stop()
        first = await _first_record(kafka, tp, wait_s=timeout_s)
    if first is None:
        raise RuntimeError(f"could not read the incarnation marker from {tp.topic}")
    return first


async def _first_record(kafka: Kafka, tp: TopicPartition, wait_s: float) -> str | None:
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).client_kwargs(), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            batch = await consumer.getmany(tp, timeout_ms=max(int(remaining * 1000), 50))
            for rec in batch.get(tp, []):
                if rec.value:
                    return bytes(rec.value).decode()
            if loop.time() >= deadline:
                return None
    finally:
        await consumer.stop()
