"""Tenant API keys: scoped, named, revocable.

Keys are random 256-bit tokens shown once; only their SHA-256 travels and is
stored (a fast hash is enough for high-entropy tokens, unlike passwords).
``tenant.key_added`` and ``tenant.key_revoked`` events on the ``tenants`` topic
are folded by every service into its own ``api_keys`` table, so no service reads
another's tables, and each learns a revocation from the same stream (within its
consumer's poll plus :class:`TenantKeys`' cache of a few seconds).

A key has a **scope** and a **holder**. ``ingest`` posts events; ``read`` reads
the APIs and reports; ``approve`` reads too and decides approvals; ``admin``
may do everything, keys and dead letters included. The holder (a person or a
system) is what audits record as the actor.

The same stream says which tenants exist: :class:`TenantRegistry` answers it for
the consumers, which dead-letter an event of a tenant that was never created.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import (
    Scope,
    TenantKeyAdded,
    TenantKeyAddedData,
    TenantKeyRevoked,
    TenantKeyRevokedData,
)
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.codec import DecodeError, decode
from services.runtime.connections import Kafka, as_connection
from services.runtime.topics import TENANTS, TopicNames

log = logging.getLogger(__name__)

SCOPES: tuple[Scope, ...] = ("ingest", "read", "approve", "admin")
ALLOWED: dict[Scope, frozenset[Scope]] = {
    "ingest": frozenset({"ingest", "admin"}),
    "read": frozenset({"read", "approve", "admin"}),
    "approve": frozenset({"approve", "admin"}),
    "admin": frozenset({"admin"}),
}
"""Route scope -> the key scopes that may use it."""


def new_api_key() -> str:
    return "lk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key_hash: str) -> str:
    """A key's public name: the first 12 hex digits of its hash."""
    return key_hash[:12]


def tenant_id_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"tenant name {name!r} has no letters or digits")
    return slug[:64]


def key_added_event(
    name: str,
    key: str,
    now: datetime | None = None,
    scope: Scope = "admin",
    holder: str | None = None,
) -> TenantKeyAdded:
    tenant = tenant_id_for(name)
    digest = hash_key(key)
    return TenantKeyAdded(
        id=str(uuid.uuid4()),
        source="loyalty/keys",
        type="tenant.key_added",
        subject=tenant,
        tenant=tenant,
        time=now or datetime.now(UTC),
        data=TenantKeyAddedData(
            name=name,
            key_hash=digest,
            key_id=key_id_of(digest),
            scope=scope,
            holder=holder or f"{name} ({scope} key)",
        ),
    )


def key_revoked_event(
    tenant: str, key_hash: str, by: str, reason: str | None = None, now: datetime | None = None
) -> TenantKeyRevoked:
    return TenantKeyRevoked(
        id=str(uuid.uuid4()),
        source="loyalty/keys",
        type="tenant.key_revoked",
        subject=tenant,
        tenant=tenant,
        time=now or datetime.now(UTC),
        data=TenantKeyRevokedData(
            key_id=key_id_of(key_hash), key_hash=key_hash, by=by, reason=reason
        ),
    )


@dataclass(frozen=True)
class KeyRecord:
    """What the ``tenants`` stream says of one key."""

    key_id: str
    key_hash: str
    tenant: str
    name: str
    scope: Scope
    holder: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None


def fold_keys(events: Iterable[object]) -> dict[str, KeyRecord]:
    """The keys of a ``tenants`` stream, by key hash (pure; for ``loyalty keys list``)."""
    keys: dict[str, KeyRecord] = {}
    for e in events:
        if isinstance(e, TenantKeyAdded):
            d = e.data
            keys.setdefault(
                d.key_hash,
                KeyRecord(
                    key_id_of(d.key_hash),
                    d.key_hash,
                    e.tenant,
                    d.name,
                    d.scope,
                    d.holder or d.name,
                    e.time,
                ),
            )
        elif isinstance(e, TenantKeyRevoked):
            found = keys.get(e.data.key_hash)
            if found is not None and found.revoked_at is None and found.tenant == e.tenant:
                keys[e.data.key_hash] = KeyRecord(
                    **{**found.__dict__, "revoked_at": e.time, "revoked_by": e.data.by}
                )
    return keys


async def fold_tenant_keys(uow: UnitOfWork, events: Sequence[Inbound]) -> None:
    """Handler for the ``tenants`` topic: upsert each key, mark each revocation."""
    for ev in events:
        e = ev.event
        if isinstance(e, TenantKeyAdded):
            d = e.data
            await uow.conn.execute(
                text(
                    "INSERT INTO api_keys (key_hash, tenant, name, key_id, scope, holder,"
                    " created_at) VALUES (:h, :t, :n, :id, :s, :holder, :at)"
                    " ON CONFLICT (key_hash) DO NOTHING"
                ),
                {
                    "h": d.key_hash,
                    "t": e.tenant,
                    "n": d.name,
                    "id": key_id_of(d.key_hash),
                    "s": d.scope,
                    "holder": d.holder or d.name,
                    "at": e.time,
                },
            )
        elif isinstance(e, TenantKeyRevoked):
            await uow.conn.execute(
                text(
                    "UPDATE api_keys SET revoked_at = :at, revoked_by = :by"
                    " WHERE key_hash = :h AND tenant = :t AND revoked_at IS NULL"
                ),
                {"h": e.data.key_hash, "t": e.tenant, "at": e.time, "by": e.data.by},
            )


@dataclass(frozen=True)
class Caller:
    """Who presents a key: its tenant, scope, holder and public id."""

    tenant: str
    scope: Scope
    holder: str
    key_id: str

    def may(self, route_scope: Scope) -> bool:
        return self.scope in ALLOWED[route_scope]


class TenantKeys:
    """Resolves a bearer key to its :class:`Caller`, with a short positive cache
    (a revocation takes effect within ``ttl_s`` of being folded)."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 2.0) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._cache: dict[str, tuple[Caller, float]] = {}

    async def caller_for(self, key: str) -> Caller | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT tenant, scope, coalesce(holder, name) FROM api_keys"
                        " WHERE key_hash = :h AND revoked_at IS NULL"
                    ),
                    {"h": digest},
                )
            ).one_or_none()
        if row is None:
            self._cache.pop(digest, None)
            return None
        caller = Caller(row[0], row[1], row[2], key_id_of(digest))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (caller, now + self._ttl)
        return caller

    async def tenant_for(self, key: str) -> str | None:
        caller = await self.caller_for(key)
        return caller.tenant if caller else None

    async def keys(self, tenant: str) -> list[KeyRecord]:
        """The tenant's keys as this service folded them, newest first."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT key_id, key_hash, tenant, name, scope, coalesce(holder, name),"
                        " created_at, revoked_at, revoked_by FROM api_keys WHERE tenant = :t"
                        " ORDER BY created_at DESC, key_hash"
                    ),
                    {"t": tenant},
                )
            ).all()
        return [KeyRecord(r[0] or key_id_of(r[1]), r[1], *r[2:]) for r in rows]


class TenantsUnavailable(ConnectionError):
    """The ``tenants`` topic could not be read to its end, so whether a tenant exists
    is not known. A ``ConnectionError`` (an ``OSError``): the worker retries the batch
    as it does for any infrastructure error, and dead-letters nothing for it."""


class TenantRegistry:
    """Which tenants exist, for the consumer's admission check (``ConsumerWorker``).

    A tenant exists once a ``tenant.key_added`` for it is on the ``tenants`` topic,
    and forever after: a tenant whose keys are all revoked is still a tenant, and
    its events are still processed (revocation is about who may call the HTTP APIs,
    not about the tenant's data). Nothing removes a tenant.

    **The race it closes.** A tenant is created (its key acknowledged on ``tenants``)
    and its first events follow at once on the account topics; this service may
    read them before its consumer has folded ``tenants`` (another partition, another
    instance of the group, a backlog). So a miss is never final by itself: before
    :meth:`unknown` calls a tenant unknown, it reads ``tenants`` from where this
    registry last stopped (at first: from the offset this service stored for it, the
    tenants of its ``api_keys`` standing for everything before) to the high
    watermark of fetches made *after* the events in question had been fetched.
    Their producer wrote them after the key was acknowledged, so the key is below
    that watermark; a tenant still missing then was never created. One such read
    answers for every record fetched before it began, so a batch costs at most one
    read however many unknown tenants it holds. Known tenants cost a set lookup.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        kafka: Kafka,
        names: TopicNames,
        *,
        timeout_s: float = 10.0,
        on_refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._kafka = kafka
        self._tp = TopicPartition(names.physical(TENANTS), 0)
        self._timeout_s = timeout_s
        self._on_refresh = on_refresh
        self._known: set[str] = set()
        self._position: int | None = None  # next offset of ``tenants`` to read; None: unloaded
        self._read_since = float("-inf")  # when the last complete read began (monotonic)
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._known

    async def unknown(self, tenants: Iterable[str], fetched_by: float) -> set[str]:
        """The ``tenants`` that do not exist, judged for records that had all been
        fetched from Kafka by ``fetched_by`` (a ``time.monotonic()``): reads ``tenants``
        to its end first, unless a read that began after ``fetched_by`` already did.
        Raises :class:`TenantsUnavailable` when it cannot read it."""
        missing = {t for t in tenants if t not in self._known}
        if not missing:
            return missing
        async with self._lock:
            if self._read_since <= fetched_by:  # no read since: make one
                await self._refresh()
        return {t for t in missing if t not in self._known}

    async def _refresh(self) -> None:
        began = time.monotonic()
        if self._position is None:
            position, folded = await self._folded()
            self._known.update(folded)
        else:
            position = self._position
        self._position = await self._read_from(position)
        self._read_since = began
        self.refreshes += 1
        self._on_refresh()

    async def _folded(self) -> tuple[int, list[str]]:
        """What this service's consumer has folded, in one snapshot: the offset it
        stored for ``tenants`` and the tenants of its ``api_keys`` (one statement:
        the two always agree)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT (SELECT next_offset FROM consumer_offsets"
                        " WHERE topic = :t AND partition = :p),"
                        " ARRAY(SELECT DISTINCT tenant FROM api_keys)"
                    ),
                    {"t": self._tp.topic, "p": self._tp.partition},
                )
            ).one()
        return int(row[0] or 0), list(row[1])

    async def _read_from(self, position: int) -> int:
        """Reads ``tenants`` from ``position`` to the high watermark of this read's
        own fetches (never ``end_offsets()``: the embedded broker gets it wrong),
        adding each key's tenant; returns where it stopped."""
        consumer = AIOKafkaConsumer(
            **as_connection(self._kafka).client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a position past a recreated topic's end
            fetch_max_wait_ms=5,  # an empty fetch is the usual answer: do not linger
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            await consumer.start()
            consumer.assign([self._tp])
            consumer.seek(self._tp, position)
            while True:
                # short polls: an empty one waits out its whole timeout, while the high
                # watermark of the fetch made meanwhile is what ends the read
                batch = await consumer.getmany(self._tp, timeout_ms=10)
                for rec in batch.get(self._tp, []):
                    try:
                        event = decode(rec.value, rec.headers or ())
                    except DecodeError:
                        continue  # the consumer dead-letters it; no tenant comes of it
                    if isinstance(event, TenantKeyAdded):
                        self._known.add(event.tenant)
                high = consumer.highwater(self._tp)
                position = await consumer.position(self._tp)
                if high is not None and position >= high:
                    return position
                if loop.time() > deadline:
                    raise TenantsUnavailable(
                        f"{self._tp.topic} not read to its end in {self._timeout_s:.0f}s"
                        f" (at {position}, high watermark {high})"
                    )
        except KafkaError as exc:
            raise TenantsUnavailable(f"cannot read {self._tp.topic}: {exc}") from exc
        finally:
            await consumer.stop()


async def publish_key_event(
    kafka: Any, names: Any, partitions: int, event: TenantKeyAdded | TenantKeyRevoked
) -> None:
    """Writes a key event on the ``tenants`` topic (creating the topics if needed)
    and waits for the broker's acknowledgement."""
    from services.runtime.codec import encode
    from services.runtime.relay import make_producer
    from services.runtime.topics import TENANTS, ensure_topics

    await ensure_topics(kafka, names, partitions)
    msg = encode(event)
    producer = make_producer(kafka)
    await producer.start()
    try:
        await producer.send_and_wait(
            names.physical(TENANTS), msg.value, key=msg.key, headers=msg.headers
        )
    finally:
        await producer.stop()


async def read_key_events(kafka: Any, names: Any, timeout_s: float = 10.0) -> list[object]:
    """Every key event of the ``tenants`` topic, from its start to its end (the
    high watermark of the fetches, not the broker's ListOffsets)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.runtime.codec import DecodeError, decode
    from services.runtime.connections import as_connection
    from services.runtime.topics import TENANTS

    tp = TopicPartition(names.physical(TENANTS), 0)
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).client_kwargs(), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    out: list[object] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=300)
            for rec in batch.get(tp, []):
                try:
                    out.append(decode(rec.value, rec.headers))
                except DecodeError:
                    continue
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                break
    finally:
        await consumer.stop()
    return out
