"""What a handler sees of a batch: the decoded events (:class:`Inbound`) and the
batch's unit of work — its open transaction and an outbox to publish into — and
the dedupe by event id that runs before any handler."""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import AnyEvent, Event
from schemas.topics import (
    DLQ_REASON,
    DLQ_REASON_MAX_BYTES,
    DLQ_SERVICE,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
)
from services.runtime.codec import KafkaMessage, encode
from services.runtime.topics import TopicNames

T = TypeVar("T")

FaultHook = Callable[[str], None]
"""Called with a step name (``before_commit``, ``after_commit``, ``relay_after_send``);
tests raise from it to simulate a crash at that step."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded event and where it came from."""

    event: AnyEvent
    topic: str
    partition: int
    offset: int
    record: Any = field(default=None, compare=False)  # the ConsumerRecord, to dead-letter
    arrival: datetime | None = None  # the record's Kafka timestamp: when it entered the system


@dataclass
class UnitOfWork:
    """What a handler gets: the batch's open transaction and an outbox to publish into."""

    conn: AsyncConnection
    names: TopicNames
    service: str = ""
    _rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[Inbound, str]] = field(default_factory=list)

    def reject(self, item: Inbound, reason: str) -> None:
        """Dead-letters an event the handler refuses (e.g. too late), with the reason;
        its offset is stored with the rest of the batch, so the consumer goes on."""
        if item.record is None:
            raise ValueError("only a consumed event can be dead-lettered")
        self.dead_letter(item.record, item.topic, reason, self.service)
        self.rejected.append((item, reason))

    def publish(self, topic: str, event: Event) -> None:
        """Queue ``event`` for the logical ``topic``; sent after the transaction commits."""
        self.publish_message(topic, encode(event))

    def publish_message(self, topic: str, msg: KafkaMessage) -> None:
        """Queue an encoded message (see ``codec.encode_fields``) for the logical ``topic``."""
        self._rows.append(_outbox_row(self.names.physical(topic), msg.key, msg.value, msg.headers))

    def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], logical_topic: str, reason: str, service: str
    ) -> None:
        headers = [
            *(record.headers or ()),
            (DLQ_REASON, reason.encode()[:DLQ_REASON_MAX_BYTES]),
            (DLQ_SERVICE, service.encode()),
            (DLQ_SOURCE_TOPIC, record.topic.encode()),
            (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
            (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
        ]
        self._rows.append(
            _outbox_row(self.names.dlq(logical_topic), record.key, record.value, headers)
        )

    async def flush(self) -> int:
        rows = self._rows
        for start in range(0, len(rows), _FLUSH_ROWS):
            part = rows[start : start + _FLUSH_ROWS]
            # one statement with arrays per slice, in queue order (ids follow it)
            await self.conn.execute(
                text(
                    "INSERT INTO outbox (topic, key, value, headers)"
                    " SELECT t, k, v, CAST(h AS jsonb) FROM unnest(CAST(:t AS text[]),"
                    " CAST(:k AS bytea[]), CAST(:v AS bytea[]), CAST(:h AS text[]))"
                    " WITH ORDINALITY AS x(t, k, v, h, n) ORDER BY n"
                ),
                {
                    "t": [r["topic"] for r in part],
                    "k": [r["key"] for r in part],
                    "v": [r["value"] for r in part],
                    "h": [r["headers"] for r in part],
                },
            )
        n = len(rows)
        self._rows = []
        return n


_FLUSH_ROWS = 5_000  # rows per statement: large arrays cost more than they save


@lru_cache(maxsize=4096)
def _json_name(name: str) -> str:
    return json.dumps(name)


@lru_cache(maxsize=65_536)
def _b64(value: bytes) -> str:
    return b64encode(value).decode()  # most header values repeat (type, source, tenant, day)


def headers_json(headers: Iterable[tuple[str, bytes]]) -> str:
    """Record headers as stored in Postgres (outbox, held events): a JSON list of
    ``[name, base64 value]``. Built by hand, as it runs for every message: names
    quoted once and values encoded once, cached."""
    return "[" + ",".join(f'[{_json_name(k)},"{_b64(v)}"]' for k, v in headers) + "]"


def headers_from_json(stored: str | list[Any]) -> list[tuple[str, bytes]]:
    """What :func:`headers_json` stored (as text, or as the list a jsonb column reads
    back as) -> record headers."""
    pairs = json.loads(stored) if isinstance(stored, str) else stored
    return [(k, b64decode(v)) for k, v in pairs]


def _outbox_row(
    topic: str, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value, "headers": headers_json(headers)}


Handler = Callable[[UnitOfWork, Sequence[Inbound]], Awaitable[None]]


async def keep_first_seen(
    conn: AsyncConnection, items: Sequence[T], key: Callable[[T], tuple[str, str]]
) -> list[T]:
    """Records ``(tenant, event id)`` of each item in ``processed_events`` and keeps
    only the items seen for the first time (a second copy in ``items`` too)."""
    if not items:
        return []
    keys = [key(i) for i in items]
    rows = await conn.execute(
        text(
            "INSERT INTO processed_events (tenant, event_id)"
            " SELECT * FROM unnest(CAST(:t AS text[]), CAST(:i AS text[]))"
            " ON CONFLICT DO NOTHING RETURNING tenant, event_id"
        ),
        {"t": [k[0] for k in keys], "i": [k[1] for k in keys]},
    )
    new = {(t, e) for t, e in rows.all()}
    fresh = []
    for item, k in zip(items, keys, strict=True):
        if k in new:
            new.discard(k)
            fresh.append(item)
    return fresh
