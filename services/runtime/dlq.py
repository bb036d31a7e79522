"""Dead letters: list, show, replay and discard what the consumers quarantined.

Every consumer writes a record it cannot apply to ``<topic>.dlq`` with its original
key, value and headers plus ``dlq_reason``, ``dlq_service`` and the source
coordinates (``dlq_source_topic``, ``dlq_source_partition``, ``dlq_source_offset``;
see ``UnitOfWork.dead_letter``). This module is the one mechanism over them that the
HTTP API (ingest's ``/v1/dead-letters``) and the command line (``loyalty dlq``) share.

What it guarantees, and why:

- **The topics are the source of the entries, Postgres of their status.** A dead
  letter is named by where it sits: ``{dlq topic}:{partition}:{offset}`` (the
  logical topic, without the prefix), which never changes. Replays and discards
  are stored in the ``dead_letter_status`` table with an audit row each
  (``dead_letter_audit``: who, when, what, the comment) in the schema of the engine
  given (ingest's). A status row also keeps the record's timestamp: after the
  embedded broker lost its topics, a new record at the same offset is open again.
- **A topic is read to the high watermark of its fetches**, never to
  ``end_offsets()`` (the embedded broker gets that wrong), and within bounds
  (``max_records`` records, ``timeout_s`` seconds).
- **A dead letter is acted on once.** The status row is claimed (``INSERT ... ON
  CONFLICT``) in the transaction that then produces the replay and records where it
  went; a second replay or a discard of a decided one raises :class:`NotOpen`. If
  the produce fails nothing is stored and the entry stays open; if the commit fails
  after the produce, the entry stays open although the record was replayed — a
  second replay is then a duplicate, which the consumers drop by its event id.
- **A replay reaches the services that dead-lettered it, and only those.** The
  replay is the original key, value and headers (without the ``dlq_*`` ones, with
  ``loyalty_replay_of``) on the source topic and partition. A consumer records an
  event id in ``processed_events`` only in the transaction that applies it, and a
  dead-lettered record never is (it is refused before the dedupe, or its
  transaction rolled back), so the service that refused it applies it now, while
  every service that had applied it drops it as a duplicate. One bad record is
  often dead-lettered by each consumer of its topic: replaying one of those entries
  replays the source record once and marks its open siblings (the same source
  record) replayed too.
- **Tenant-scoped.** A tenant sees and acts on its own dead letters only (the
  ``ce_tenant`` header); records without one (undecodable ones) only the operator
  (``tenant=None``) does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime.connections import Kafka, as_connection
from services.runtime.relay import make_producer
from services.runtime.topics import ACCOUNT_TOPICS, DLQ_SUFFIX, TopicNames

Status = Literal["open", "replayed", "discarded"]
StatusFilter = Literal["open", "replayed", "discarded", "all"]
Action = Literal["replayed", "discarded"]

REPLAY_HEADER = "loyalty_replay_of"
"""Set on a replayed record: the id of the dead letter it replays."""
DLQ_HEADER_PREFIX = "dlq_"
PREVIEW_CHARS = 200
SOURCE_TOPICS = ACCOUNT_TOPICS
"""The topics whose dead letters are listed (the logical source topics)."""
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,199}\.dlq:[0-9]{1,9}:[0-9]{1,18}$"
"""What a dead letter's id looks like: ``{dlq topic}:{partition}:{offset}``."""
_ID = re.compile(ID_PATTERN)


class DeadLetterError(Exception):
    """Base of the errors of this module."""


class NotFound(DeadLetterError):
    """No dead letter of this id (or not one the caller may see)."""


class NotOpen(DeadLetterError):
    """The dead letter was already replayed or discarded."""

    def __init__(self, dead_letter_id: str, status: Status) -> None:
        super().__init__(f"dead letter {dead_letter_id} was already {status}")
        self.status = status


class UnknownTopic(DeadLetterError):
    """A topic that has no dead-letter topic of the system."""


class TooOld(NotOpen):
    """Older than the consumers remember event ids: a replay could be applied again
    by the services that had applied the record."""

    def __init__(self, dead_letter_id: str, retention: timedelta) -> None:
        DeadLetterError.__init__(
            self,
            f"dead letter {dead_letter_id} is older than the dedupe retention"
            f" ({retention.days} days, LOYALTY_DEDUPE_RETENTION_DAYS): the services that"
            " applied its record have forgotten it and would apply it again",
        )
        self.status = "open"


# ------------------------------------------------------------------ the entries (pure)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, as its headers describe it. Topics are
    logical (without the prefix); ``tenant``, ``event_id`` and ``type`` come from
    the ``ce_*`` headers and are None where a record has none (or an undecodable one)."""

    id: str
    topic: str
    partition: int
    offset: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    service: str | None
    reason: str | None
    event_id: str | None
    type: str | None
    tenant: str | None
    dead_lettered_at: datetime | None
    record_ms: int
    key: bytes | None = field(repr=False)
    value: bytes | None = field(repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False)
    status: Status = "open"

    @property
    def source(self) -> tuple[str, int | None, int | None]:
        """The source record: entries with the same one are its siblings."""
        if self.source_partition is None or self.source_offset is None:
            return (self.id, None, None)  # unknown origin: a sibling of none
        return (self.source_topic, self.source_partition, self.source_offset)

    @property
    def preview(self) -> str:
        return preview(self.value)

    def visible_to(self, tenant: str | None) -> bool:
        """Whether ``tenant`` may see it (None: the operator, who sees everything)."""
        return tenant is None or self.tenant == tenant


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: Action
    actor: str
    comment: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Detail:
    """A dead letter with its headers, value (as text) and audit trail."""

    entry: DeadLetter
    audit: list[AuditEntry]

    @property
    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.entry.headers:
            out[name] = f"{out[name]}, {as_text(value)}" if name in out else as_text(value)
        return out

    @property
    def value(self) -> str:
        return as_text(self.entry.value)


@dataclass(frozen=True, slots=True)
class Query:
    """Which dead letters to list. ``topic``: a logical source or dead-letter topic
    (None: every account topic); ``reason``: a case-insensitive substring;
    ``after``: the id the previous page ended with."""

    topic: str | None = None
    tenant: str | None = None
    reason: str | None = None
    status: StatusFilter = "open"
    limit: int = 100
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    dead_letters: list[DeadLetter]
    next: str | None
    """The cursor of the next page (the last id of this one), or None at the end."""


@dataclass(frozen=True, slots=True)
class Replayed:
    id: str
    topic: str
    partition: int
    offset: int
    siblings: list[str]
    """The other entries of the same source record, marked replayed with it."""


def as_text(value: bytes | None) -> str:
    """Bytes as text that is safe to show: UTF-8, invalid bytes as ``\\xNN``."""
    return "" if value is None else value.decode("utf-8", errors="backslashreplace")


def preview(value: bytes | None, chars: int = PREVIEW_CHARS) -> str:
    shown = as_text(value[: chars * 4] if value else value)
    return shown if len(shown) <= chars else shown[: chars - 1] + "…"


def parse_id(dead_letter_id: str) -> tuple[str, int, int]:
    """``{dlq topic}:{partition}:{offset}`` -> its parts; NotFound if malformed."""
    if not _ID.match(dead_letter_id):
        raise NotFound(f"{dead_letter_id!r} is not a dead letter id")
    topic, partition, offset = dead_letter_id.rsplit(":", 2)
    return topic, int(partition), int(offset)


RETENTION_MARGIN = timedelta(days=1)
"""How much younger than the dedupe retention a dead letter must be to be replayed:
its source record was applied (and its id remembered) by the other services a
little before it was dead-lettered, by up to their lag."""


def too_old(entry: DeadLetter, now: datetime, retention: timedelta | None) -> bool:
    """Whether a replay of ``entry`` could be applied twice: the other consumers
    purge the ids of events applied more than ``retention`` ago (None: never)."""
    if retention is None or entry.dead_lettered_at is None:
        return retention is not None  # no timestamp: cannot tell, so refuse
    return entry.dead_lettered_at < now - retention + RETENTION_MARGIN


def source_of(dlq_topic: str) -> str:
    return dlq_topic[: -len(DLQ_SUFFIX)] if dlq_topic.endswith(DLQ_SUFFIX) else dlq_topic


def dlq_topics(topic: str | None) -> list[str]:
    """The logical dead-letter topics ``topic`` (a source or dead-letter topic, None:
    all) names; UnknownTopic if it is none of the system's."""
    if topic is None:
        return [t + DLQ_SUFFIX for t in SOURCE_TOPICS]
    source = source_of(topic)
    if source not in SOURCE_TOPICS:
        raise UnknownTopic(f"no dead-letter topic for {topic!r}; one of {', '.join(SOURCE_TOPICS)}")
    return [source + DLQ_SUFFIX]


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            try:
                return bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _int(text_value: str | None) -> int | None:
    return int(text_value) if text_value is not None and text_value.isdigit() else None


def parse_record(
    names: TopicNames,
    physical_topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> DeadLetter:
    """A dead-letter record -> its entry (status open; the caller adds the stored one)."""
    topic = names.logical(physical_topic)
    hdrs = tuple((k, bytes(v)) for k, v in headers)
    source_header = _header(hdrs, "dlq_source_topic")
    return DeadLetter(
        id=f"{topic}:{partition}:{offset}",
        topic=topic,
        partition=partition,
        offset=offset,
        source_topic=names.logical(source_header) if source_header else source_of(topic),
        source_partition=_int(_header(hdrs, "dlq_source_partition")),
        source_offset=_int(_header(hdrs, "dlq_source_offset")),
        service=_header(hdrs, "dlq_service"),
        reason=_header(hdrs, "dlq_reason"),
        event_id=_header(hdrs, "ce_id"),
        type=_header(hdrs, "ce_type"),
        tenant=_header(hdrs, "ce_tenant"),
        dead_lettered_at=(
            datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms is not None else None
        ),
        record_ms=timestamp_ms if timestamp_ms is not None else -1,
        key=bytes(key) if key is not None else None,
        value=bytes(value) if value is not None else None,
        headers=hdrs,
    )


def replay_headers(entry: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers (no ``dlq_*``, no earlier replay mark) and the replay mark."""
    kept = [
        (k, v)
        for k, v in entry.headers
        if not k.startswith(DLQ_HEADER_PREFIX) and k != REPLAY_HEADER
    ]
    return [*kept, (REPLAY_HEADER, entry.id.encode())]


def select(entries: Iterable[DeadLetter], query: Query) -> Page:
    """The page of ``entries`` (with their statuses) that ``query`` asks for, in id
    order (topic, partition, offset)."""
    wanted = set(dlq_topics(query.topic))
    after = _order(query.after) if query.after else None
    needle = query.reason.lower() if query.reason else None
    matched = sorted(
        (
            e
            for e in entries
            if e.topic in wanted
            and (query.tenant is None or e.tenant == query.tenant)
            and (needle is None or needle in (e.reason or "").lower())
            and (query.status == "all" or e.status == query.status)
            and (after is None or (e.topic, e.partition, e.offset) > after)
        ),
        key=lambda e: (e.topic, e.partition, e.offset),
    )
    page = matched[: query.limit]
    more = len(matched) > query.limit
    return Page(page, page[-1].id if more and page else None)


def fold_copies(entries: Iterable[DeadLetter]) -> list[DeadLetter]:
    """The entries without the copies of one: the same service's dead letter of the
    same source record written twice (a consumer that dead-lettered it and was then
    rewound or rebalanced before its offset was stored, or a relay that resent it)
    is one dead letter, the first written (the lowest offset of its topic)."""
    seen: set[tuple[str, str | None, tuple[str, int | None, int | None]]] = set()
    out = []
    for e in sorted(entries, key=lambda e: (e.topic, e.partition, e.offset)):
        key = (e.topic, e.service, e.source)
        if e.source[1] is not None and key in seen:
            continue
        seen.add(key)
        out.append(e)
    return out


def _order(dead_letter_id: str) -> tuple[str, int, int]:
    try:
        return parse_id(dead_letter_id)
    except NotFound:
        raise DeadLetterError(f"bad cursor {dead_letter_id!r}") from None


# ------------------------------------------------------------------ reading the topics


async def read_dead_letters(
    kafka: Kafka,
    names: TopicNames,
    topics: Iterable[str],
    *,
    start: dict[str, int] | None = None,
    rest_from: int | None = None,
    max_records: int = 100_000,
    timeout_s: float = 30.0,
    earliest: dict[str, int] | None = None,
) -> list[DeadLetter]:
    """Every record of the logical dead-letter ``topics`` from the beginning (or,
    for a partition-qualified ``start`` like ``{"t:3": 17}``, only that partition
    from that offset, and the partitions it does not name from ``rest_from`` unless
    that is None) up to the high watermark each fetch reports, at most
    ``max_records`` of them (the first ones). ``KafkaTimeoutError`` if that takes
    longer than ``timeout_s``. ``earliest``, if given, is filled with each read
    partition's first offset still held (``{"t:3": 5}``: retention removed 0-4)."""
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        tps: dict[TopicPartition, int] = {}
        await consumer._client.force_metadata_update()
        for topic in topics:
            physical = names.physical(topic)
            for p in sorted(consumer.partitions_for_topic(physical) or ()):
                where = f"{topic}:{p}"
                if start is None:
                    tps[TopicPartition(physical, p)] = 0
                elif where in start:
                    tps[TopicPartition(physical, p)] = start[where]
                elif rest_from is not None:
                    tps[TopicPartition(physical, p)] = rest_from
        if not tps:
            return []
        consumer.assign(list(tps))
        if earliest is not None:
            for tp, first in (await consumer.beginning_offsets(list(tps))).items():
                earliest[f"{names.logical(tp.topic)}:{tp.partition}"] = first
        for tp, offset in tps.items():
            consumer.seek(tp, offset)  # out of range (retention): reset to the earliest
        out: list[DeadLetter] = []
        pending = set(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and len(out) < max_records and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200, max_records=10_000)
            for recs in batch.values():
                out.extend(_entry(names, r) for r in recs)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        if pending and len(out) < max_records:
            # a partial list would look complete: say that the broker did not answer
            raise KafkaTimeoutError(f"dead letters not read to their end in {timeout_s:.0f}s")
        return out[:max_records]
    finally:
        await consumer.stop()


def _entry(names: TopicNames, r: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    return parse_record(
        names, r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers or ()
    )


def merge_read(
    kept: dict[tuple[str, int], list[DeadLetter]],
    fresh: Iterable[DeadLetter],
    earliest: dict[str, int],
) -> None:
    """Adds the records of a read to what was kept per (topic, partition): a record
    at or below the last kept offset means the partition was made anew (its old
    entries go); entries below a partition's ``earliest`` offset are gone from the
    broker (retention) and go too."""
    for e in fresh:
        entries = kept.setdefault((e.topic, e.partition), [])
        if entries and e.offset <= entries[-1].offset:
            entries.clear()
        entries.append(e)
    for where, first in earliest.items():
        topic, _, partition = where.rpartition(":")
        key = (topic, int(partition))
        if key in kept:
            kept[key] = [e for e in kept[key] if e.offset >= first]


class DeadLetterLog:
    """The dead-letter topics as read so far, kept by a long-lived caller (ingest's
    API) so that a listing reads only the records written since the last one: a
    topic is append-only, so what was read stays true. The statuses are not kept
    (Postgres has them, read each time). A partition's entries below its first
    offset still held are dropped (retention); a partition that answers with an
    offset at or below the last one kept was made anew (the embedded broker forgot
    its topics) and is kept from its new records only."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], list[DeadLetter]] = {}
        self._lock = asyncio.Lock()
        self.records_read = 0  # from the broker, over the log's life (for tests)

    async def read(
        self,
        kafka: Kafka,
        names: TopicNames,
        topics: Iterable[str],
        *,
        max_records: int,
        timeout_s: float,
    ) -> list[DeadLetter]:
        """Every entry of ``topics`` (the first ``max_records``), in topic,
        partition and offset order, after reading what is new."""
        wanted = list(topics)
        async with self._lock:
            resume = {
                f"{t}:{p}": kept[-1].offset + 1
                for (t, p), kept in self._entries.items()
                if t in wanted and kept
            }
            earliest: dict[str, int] = {}
            fresh = await read_dead_letters(
                kafka,
                names,
                wanted,
                start=resume,
                rest_from=0,
                max_records=max_records,
                timeout_s=timeout_s,
                earliest=earliest,
            )
            self.records_read += len(fresh)
            merge_read(self._entries, fresh, earliest)
            out = [
                e
                for key in sorted(k for k in self._entries if k[0] in wanted)
                for e in self._entries[key]
            ]
        return out[:max_records]


# ------------------------------------------------------------------ status and audit


_STATUS_KEY = "dlq_topic = :topic AND partition = :partition AND record_offset = :offset"


class DeadLetterBook:
    """Status and audit of dead letters in Postgres (``dead_letter_status``,
    ``dead_letter_audit``), keyed by the physical topic, partition and offset."""

    def __init__(self, engine: AsyncEngine, names: TopicNames) -> None:
        self.engine = engine
        self.names = names

    async def with_status(self, entries: Sequence[DeadLetter]) -> list[DeadLetter]:
        """``entries`` with their stored status (open where none is stored, or where
        the stored one is of an earlier record at that offset)."""
        if not entries:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT dlq_topic, partition, record_offset, record_ms, status"
                    " FROM dead_letter_status WHERE dlq_topic = ANY(:topics)"
                ),
                {"topics": sorted({self.names.physical(e.topic) for e in entries})},
            )
            stored = {(t, p, o): (ms, s) for t, p, o, ms, s in rows.all()}
        out = []
        for e in entries:
            hit = stored.get((self.names.physical(e.topic), e.partition, e.offset))
            out.append(replace(e, status=hit[1]) if hit and hit[0] == e.record_ms else e)
        return out

    async def audit(self, entry: DeadLetter) -> list[AuditEntry]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT action, actor, comment, at FROM dead_letter_audit"
                    f" WHERE {_STATUS_KEY} AND record_ms = :ms ORDER BY seq"
                ),
                self._key(entry),
            )
            return [AuditEntry(a, actor, c, at) for a, actor, c, at in rows.all()]

    def _key(self, entry: DeadLetter) -> dict[str, Any]:
        return {
            "topic": self.names.physical(entry.topic),
            "partition": entry.partition,
            "offset": entry.offset,
            "ms": entry.record_ms,
        }

    async def claim(
        self,
        conn: AsyncConnection,
        entry: DeadLetter,
        action: Action,
        actor: str,
        comment: str | None,
    ) -> bool:
        """Marks ``entry`` ``action`` and audits it, in ``conn``'s transaction;
        False (and nothing written) if it is not open."""
        claimed = await conn.execute(
            text(
                "INSERT INTO dead_letter_status"
                " (dlq_topic, partition, record_offset, record_ms, tenant, status)"
                " VALUES (:topic, :partition, :offset, :ms, :tenant, :status)"
                " ON CONFLICT (dlq_topic, partition, record_offset) DO UPDATE"
                " SET record_ms = EXCLUDED.record_ms, tenant = EXCLUDED.tenant,"
                " status = EXCLUDED.status, replayed_to = NULL, updated_at = now()"
                " WHERE dead_letter_status.record_ms <> EXCLUDED.record_ms"
                " RETURNING 1"
            ),
            {**self._key(entry), "tenant": entry.tenant, "status": action},
        )
        if claimed.first() is None:
            return False
        await conn.execute(
            text(
                "INSERT INTO dead_letter_audit"
                " (dlq_topic, partition, record_offset, record_ms, tenant, action, actor, comment)"
                " VALUES (:topic, :partition, :offset, :ms, :tenant, :action, :actor, :comment)"
            ),
            {
                **self._key(entry),
                "tenant": entry.tenant,
                "action": action,
                "actor": actor,
                "comment": comment,
            },
        )
        return True

    async def replayed_to(
        self, conn: AsyncConnection, entry: DeadLetter, where: tuple[str, int, int]
    ) -> None:
        await conn.execute(
            text(
                "UPDATE dead_letter_status SET replayed_to = CAST(:where AS jsonb)"
                f" WHERE {_STATUS_KEY}"
            ),
            {
                **{k: v for k, v in self._key(entry).items() if k != "ms"},
                "where": json.dumps({"topic": where[0], "partition": where[1], "offset": where[2]}),
            },
        )


# ------------------------------------------------------------------ the operations


class DeadLetters:
    """The operations on dead letters, for a caller who sees ``tenant``'s (None:
    the operator, who sees all)."""

    def __init__(
        self,
        kafka: Kafka,
        names: TopicNames,
        engine: AsyncEngine,
        *,
        dedupe_retention: timedelta | None = None,
        max_records: int = 100_000,
        timeout_s: float = 30.0,
        log: DeadLetterLog | None = None,
    ) -> None:
        self.kafka = kafka
        self.log = log
        self.names = names
        self.book = DeadLetterBook(engine, names)
        self.dedupe_retention = dedupe_retention
        self.max_records = max_records
        self.timeout_s = timeout_s

    async def _read(
        self,
        topics: Iterable[str],
        start: dict[str, int] | None = None,
        max_records: int | None = None,
    ) -> list[DeadLetter]:
        if start is None and self.log is not None:
            entries = await self.log.read(
                self.kafka,
                self.names,
                topics,
                max_records=max_records or self.max_records,
                timeout_s=self.timeout_s,
            )
        else:
            entries = await read_dead_letters(
                self.kafka,
                self.names,
                topics,
                start=start,
                max_records=max_records or self.max_records,
                timeout_s=self.timeout_s,
            )
        return fold_copies(await self.book.with_status(entries))

    async def page(self, query: Query, tenant: str | None = None) -> Page:
        """The page of dead letters ``query`` asks for that ``tenant`` may see."""
        topics = dlq_topics(query.topic)
        if query.after:
            _order(query.after)
        entries = [e for e in await self._read(topics) if e.visible_to(tenant)]
        return select(entries, query)

    async def get(self, dead_letter_id: str, tenant: str | None = None) -> DeadLetter:
        topic, partition, offset = parse_id(dead_letter_id)
        if source_of(topic) not in SOURCE_TOPICS:
            raise NotFound(f"no dead letter {dead_letter_id}")
        found = [
            e
            # the first record from ``offset`` on is the one, if it exists
            for e in await self._read([topic], {f"{topic}:{partition}": offset}, max_records=1)
            if e.offset == offset
        ]
        if not found or not found[0].visible_to(tenant):
            raise NotFound(f"no dead letter {dead_letter_id}")
        return found[0]

    async def show(self, dead_letter_id: str, tenant: str | None = None) -> Detail:
        entry = await self.get(dead_letter_id, tenant)
        return Detail(entry, await self.book.audit(entry))

    async def replay(
        self, dead_letter_id: str, actor: str, comment: str | None, tenant: str | None = None
    ) -> Replayed:
        """Replays one dead letter (and marks its open siblings replayed with it);
        NotOpen if it was replayed or discarded before."""
        entry = await self.get(dead_letter_id, tenant)
        if entry.status != "open":
            raise NotOpen(entry.id, entry.status)
        if too_old(entry, datetime.now(UTC), self.dedupe_retention):
            raise TooOld(entry.id, self.dedupe_retention or timedelta(0))
        siblings = [
            e
            for e in await self._read([entry.topic])
            if e.source == entry.source and e.id != entry.id and e.status == "open"
        ]
        done = await self._replay_group(entry, siblings, actor, comment)
        if done is None:
            raise NotOpen(entry.id, "replayed")
        return done

    async def replay_reason(
        self,
        reason: str,
        actor: str,
        comment: str | None,
        *,
        topic: str | None = None,
        tenant: str | None = None,
    ) -> list[Replayed]:
        """Replays every open dead letter with exactly ``reason`` that ``tenant`` may
        see, each source record once; those replayed (or decided) meanwhile, and those
        older than the dedupe retention (see :class:`TooOld`), are left as they are."""
        now = datetime.now(UTC)
        entries = [
            e
            for e in await self._read(dlq_topics(topic))
            if e.visible_to(tenant)
            and e.status == "open"
            and e.reason == reason
            and not too_old(e, now, self.dedupe_retention)
        ]
        groups: dict[tuple[str, int | None, int | None], list[DeadLetter]] = {}
        for e in sorted(entries, key=lambda e: (e.topic, e.partition, e.offset)):
            groups.setdefault(e.source, []).append(e)
        out = []
        for first, *rest in groups.values():
            done = await self._replay_group(first, rest, actor, comment)
            if done is not None:
                out.append(done)
        return out

    async def _replay_group(
        self, entry: DeadLetter, siblings: list[DeadLetter], actor: str, comment: str | None
    ) -> Replayed | None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            async with self.book.engine.begin() as conn:
                if not await self.book.claim(conn, entry, "replayed", actor, comment):
                    return None
                also = [
                    s.id
                    for s in siblings
                    if await self.book.claim(conn, s, "replayed", actor, comment)
                ]
                sent = await producer.send_and_wait(
                    self.names.physical(source_of(entry.topic)),
                    entry.value,
                    key=entry.key,
                    headers=replay_headers(entry),
                    partition=entry.source_partition,
                )
                where = (source_of(entry.topic), sent.partition, sent.offset)
                for e in [entry, *(s for s in siblings if s.id in also)]:
                    await self.book.replayed_to(conn, e, where)
        finally:
            await producer.stop()
        return Replayed(entry.id, where[0], where[1], where[2], also)

    async def discard(
        self, dead_letter_id: str, actor: str, reason: str, tenant: str | None = None
    ) -> DeadLetter:
        """Marks one dead letter discarded, with the reason; NotOpen unless open."""
        entry = await self.get(dead_letter_id, tenant)
        if entry.status != "open":
            raise NotOpen(entry.id, entry.status)
        async with self.book.engine.begin() as conn:
            if not await self.book.claim(conn, entry, "discarded", actor, reason):
                raise NotOpen(entry.id, "discarded")
        return replace(entry, status="discarded")


def public_fields(entry: DeadLetter) -> dict[str, Any]:
    """The entry as the API lists it (JSON-ready): what ``loyalty dlq list --json`` prints."""
    return {
        "id": entry.id,
        "topic": entry.topic,
        "source_topic": entry.source_topic,
        "source_partition": entry.source_partition,
        "source_offset": entry.source_offset,
        "service": entry.service,
        "reason": entry.reason,
        "event_id": entry.event_id,
        "type": entry.type,
        "tenant": entry.tenant,
        "dead_lettered_at": entry.dead_lettered_at.isoformat() if entry.dead_lettered_at else None,
        "status": entry.status,
        "preview": entry.preview,
    }
