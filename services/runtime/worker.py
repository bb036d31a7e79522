"""The consumer worker: effectively-once batch processing.

For each batch read from Kafka, one Postgres transaction

1. locks the stored offsets of the batch's partitions (``FOR UPDATE``) and drops
   records below them — a zombie instance that lost a partition in a rebalance
   can therefore never apply a record twice;
2. drops events whose ``(tenant, id)`` is already in ``processed_events``
   (producer retries, replays);
3. runs the service's handlers, which write their effects and queue outbox rows;
4. queues undecodable messages for ``<topic>.dlq`` (also through the outbox);
5. stores the next offsets.

A crash anywhere before the commit changes nothing; after it, the stored offsets
say where to resume. On partition assignment the consumer seeks to the offsets
stored in Postgres, never to Kafka's committed ones (those are written too, best
effort, only so that standard lag tools work).

Before any handler sees an event, the one decode path here checks it: undecodable
or invalid messages, events dated more than ``max_clock_skew`` ahead of their
arrival (they would move a stream clock into the future), producers' events with
negative money, and events of a tenant that does not exist are dead-lettered, each
with its reason. Whether a tenant exists is the :class:`TenantRegistry`'s answer,
which reads the ``tenants`` topic to its end before it calls a tenant unknown: a
tenant created just before its first events is never mistaken for a stranger, even
when this service has not folded its key yet. Every topic but ``tenants`` itself is
checked, internal ones included (their producers checked already; the check costs a
set lookup, and no topic is left that a stray producer could bypass it through).

Transient errors (connection loss, serialization failures, deadlocks) retry the
batch with exponential backoff. A data error (Postgres refuses a value or a
constraint: SQLSTATE classes 22 and 23) or a handler error raised while applying a
batch makes the worker split the batch and dead-letter the record that causes it
alone, with the error as the reason; the rest of the batch is applied. A handler
that fails on every one of its events in a batch (whatever the handlers of other
topics in it do, the tenants fold say) is retried, but a record that keeps failing
is dead-lettered after ``max_attempts`` attempts, so no record stalls its partition
forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.topics import consumer_group
from services.runtime import offsets
from services.runtime.admission import (
    clock_skew_violation,
    negative_money_violation,
    record_arrival,
    unknown_tenant,
)
from services.runtime.batch import FaultHook, Handler, Inbound, UnitOfWork, keep_first_seen
from services.runtime.codec import DecodeError, decode
from services.runtime.connections import KafkaConnection
from services.runtime.errors import describe_error, is_data_error, is_transient
from services.runtime.logs import record_context
from services.runtime.metrics import RuntimeMetrics
from services.runtime.tasks import finish_task, stop_quietly
from services.runtime.tenants import TenantRegistry
from services.runtime.topics import TENANTS, TopicNames

log = logging.getLogger(__name__)


class HandlerBroken(Exception):
    """Every event of a batch made the handler fail: the batch is retried (after a
    rewind and a backoff) instead of being dead-lettered wholesale. ``record`` is the
    first record the handler failed on; the error is its reason."""

    def __init__(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason


class _RollBack(Exception):
    """Ends a trial transaction; ``handled`` says whether a handler ran (and passed)."""

    def __init__(self, handled: bool) -> None:
        super().__init__()
        self.handled = handled


class _SplitBatch(Exception):
    """Raised inside the transaction to roll it back and retry record by record."""


class _Poison(Exception):
    """The one record of an isolated batch cannot be applied: ``kind`` says whether
    the handler failed on it or Postgres refused its data."""

    def __init__(
        self, record: ConsumerRecord[bytes, bytes], reason: str, kind: Literal["handler", "data"]
    ) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason
        self.kind = kind


RecordKey = tuple[str, int, int]
"""(physical topic, partition, offset): a record, whichever fetch brought it."""


class ConsumerWorker:
    """Consumes ``handlers``' topics in a consumer group and applies them effectively once."""

    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        kafka: KafkaConnection,
        names: TopicNames,
        handlers: dict[str, Handler],
        metrics: RuntimeMetrics,
        group_id: str | None = None,
        on_committed: Callable[[], None] = lambda: None,
        fault: FaultHook | None = None,
        session_timeout_ms: int = 10_000,
        max_records: int = 2_000,
        poll_ms: int = 200,
        linger_ms: int = 50,
        max_clock_skew: timedelta = timedelta(minutes=5),
        max_attempts: int = 5,
        tenants: TenantRegistry | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.service = service
        self.engine = engine
        self.kafka = kafka
        self.names = names
        self.handlers = handlers
        self.metrics = metrics
        self.group_id = group_id or names.physical(consumer_group(service))
        self.on_committed = on_committed
        self.fault = fault or (lambda step: None)
        self.session_timeout_ms = session_timeout_ms
        self.max_records = max_records
        self.poll_ms = poll_ms
        self.linger_ms = linger_ms
        self.max_clock_skew = max_clock_skew
        self.max_attempts = max_attempts
        self.tenants = tenants or TenantRegistry(
            engine, kafka, names, on_refresh=metrics.tenant_refreshes.inc
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.batches = 0
        self.rewinds = 0  # batches that failed as a whole and were read again
        # failed attempts per record since its partition last advanced (not counting
        # transient errors, which are retried inside one attempt)
        self._attempts: dict[RecordKey, int] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 5, 500),
            max_poll_interval_ms=300_000,
            rebalance_timeout_ms=self.session_timeout_ms * 3,
        )
        await consumer.start()
        consumer.subscribe(
            topics=[self.names.physical(t) for t in self.handlers],
            listener=_Rebalance(self),
        )
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-consumer")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stopping.set()
        await finish_task(self._task, f"{self.service} consumer")
        if self._consumer is not None:
            await stop_quietly(self._consumer.stop(), f"{self.service} consumer")
            self._consumer = None

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(
                    timeout_ms=self.poll_ms, max_records=self.max_records
                )
            except KafkaError as exc:
                log.warning("%s: fetch failed (%s); retrying", self.service, exc)
                await asyncio.sleep(1)
                continue
            records = [r for recs in batch.values() for r in recs]
            linger_until = time.monotonic() + self.linger_ms / 1000
            while records and len(records) < self.max_records:
                # a fetch brings one record batch per partition (the embedded broker
                # returns little per fetch): gather for a few ms more, so that one
                # transaction carries hundreds of events instead of dozens
                left = linger_until - time.monotonic()
                if left <= 0:
                    break
                more = await consumer.getmany(
                    timeout_ms=int(left * 1000) or 1, max_records=self.max_records - len(records)
                )
                if not more:
                    break
                for tp, recs in more.items():
                    batch.setdefault(tp, []).extend(recs)
                    records.extend(recs)
            if records:
                try:
                    async with self._lock:
                        await self._process_with_retry(records)
                        self.batches += 1
                except Exception as exc:
                    # not transient, not one poisoned event: keep going from what is stored
                    blamed = exc.record if isinstance(exc, HandlerBroken) else records[0]
                    await self._after_failure(consumer, records, blamed, exc)
                    continue
                self._succeeded(records)
                await self._commit_to_kafka(batch)
                self.on_committed()
            self._update_lag(consumer)

    def _succeeded(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """A batch was applied: its partitions moved on, so their failure counts
        start again (a record that failed before is behind them now)."""
        if self._attempts:
            advanced = {(r.topic, r.partition) for r in records}
            for key in [k for k in self._attempts if (k[0], k[1]) in advanced]:
                del self._attempts[key]

    async def _after_failure(
        self,
        consumer: AIOKafkaConsumer,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        record: ConsumerRecord[bytes, bytes],
        exc: Exception,
    ) -> None:
        """A batch failed for a reason that is neither transient nor one poisoned
        record (a handler failing on everything, a bug): rewinds to the stored offsets
        and tries again after a pause that doubles with each attempt. Once ``record``
        (the one the failure is blamed on) has failed ``max_attempts`` times it is
        dead-lettered, whatever the error, so that no record stalls its partition
        forever."""
        key: RecordKey = (record.topic, record.partition, record.offset)
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        log.error(
            "%s: batch failed at %s[%d]@%d (attempt %d of %d); rewinding to the stored offsets: %s",
            self.service,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            self.max_attempts,
            exc,
            exc_info=exc,
            extra=self._context(record),
        )
        gave_up = False
        if attempts >= self.max_attempts:
            reason = f"gave up after {attempts} attempts: " + (
                exc.reason if isinstance(exc, HandlerBroken) else describe_error(exc)
            )
            try:
                async with self._lock:
                    await self._dead_letter_alone(record, reason)
                del self._attempts[key]
                gave_up = True
            except Exception as dl_exc:
                # the database may be what fails: keep the count, try again next time
                log.warning("%s: cannot dead-letter the record (%s)", self.service, dl_exc)
        if not gave_up:
            # 1 s, 2 s, 4 s ... up to 30 s: a broken handler is retried soon at first,
            # and does not flood the logs and the database while it stays broken
            await self._pause(min(2.0 ** (attempts - 1), 30.0))
        self.rewinds += 1
        self.metrics.batch_rewinds.inc()
        await self._rewind(consumer, records)

    async def _pause(self, seconds: float) -> None:
        """Sleeps, but no longer than until the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _rewind(
        self, consumer: AIOKafkaConsumer, failed: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Positions each assigned partition of the ``failed`` batch at its offset in
        Postgres, or, where none is stored (or it cannot be read), at the batch's first
        record there: where it was read from, as nothing of it is stored. The other
        partitions lost nothing. A plain seek needs no broker round trip (a seek to the
        beginning waits for a ListOffsets answer, for up to the request timeout)."""
        first: dict[TopicPartition, int] = {}
        # the consumer's own assignment: ours (``assigned``) lags behind it while the
        # rebalance listener is still seeking, and a revoked partition cannot be sought
        assignment = consumer.assignment()
        for r in failed:
            tp = TopicPartition(r.topic, r.partition)
            if tp in assignment:
                first[tp] = min(first.get(tp, r.offset), r.offset)
        try:
            stored = await self.load_offsets(first)
        except Exception as exc:
            log.warning("%s: cannot load offsets to rewind (%s)", self.service, exc)
            stored = {}
        for tp, offset in first.items():
            target = stored.get(tp, offset)
            consumer.seek(tp, target)
            self._positions[tp] = target

    async def seek_to_stored(
        self,
        consumer: AIOKafkaConsumer,
        tps: Iterable[TopicPartition],
        stored: dict[TopicPartition, int],
    ) -> None:
        """Positions each partition at its offset in Postgres (the beginning if none)."""
        for tp in tps:
            if tp in stored:
                consumer.seek(tp, stored[tp])
                self._positions[tp] = stored[tp]
            else:
                await consumer.seek_to_beginning(tp)
                self._positions[tp] = 0

    async def _process_with_retry(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        fetched_by = time.monotonic()  # every record of the batch was fetched before now
        delay = 0.1
        while True:
            try:
                await self._process(records, fetched_by)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.metrics.batch_retries.inc()
                first = records[0]
                log.warning(
                    "%s: transient error on batch from %s[%d]@%d: %s; retry in %.1fs",
                    self.service,
                    first.topic,
                    first.partition,
                    first.offset,
                    exc,
                    delay,
                )
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _process(
        self, records: list[ConsumerRecord[bytes, bytes]], fetched_by: float
    ) -> None:
        try:
            await self._apply(records, fetched_by, isolate=False)
            return
        except _SplitBatch:
            pass
        # every event of the batch that is not poison itself breaks the handler: a bug
        # or an outage, not poison. Dead-lettering the whole stream would be the worst
        # answer; apply what comes before the first failure, then rewind and retry.
        broken = await self._broken_handlers(records, fetched_by) if len(records) > 1 else set()
        for record in records:
            try:
                await self._apply([record], fetched_by, isolate=True)
            except _Poison as poison:
                if poison.kind == "handler" and id(self._handler_of(poison.record)) in broken:
                    raise HandlerBroken(poison.record, poison.reason) from None
                await self._dead_letter_alone(poison.record, poison.reason)

    def _handler_of(self, record: ConsumerRecord[bytes, bytes]) -> Handler:
        return self.handlers[self.names.logical(record.topic)]

    async def _broken_handlers(
        self, records: list[ConsumerRecord[bytes, bytes]], fetched_by: float
    ) -> set[int]:
        """The handlers (by ``id``) that fail on two or more records of the batch and
        pass on none. A record tells only of its own topic's handler (the tenants
        fold passing says nothing of a broken service handler), and records that are
        poison of their own kind (undecodable, refused, a data error) or already
        applied tell nothing either way. Each record is tried alone, exactly as it
        would be applied, in a transaction that is rolled back."""
        failed: Counter[int] = Counter()
        passed: set[int] = set()
        for record in records:
            handler = id(self._handler_of(record))
            if handler in passed:
                continue
            try:
                await self._apply([record], fetched_by, isolate=True, trial=True)
            except _RollBack as trial:
                if trial.handled:
                    passed.add(handler)
            except _Poison as poison:
                failed[handler] += poison.kind == "handler"
        return {h for h, n in failed.items() if n >= 2 and h not in passed}

    def _context(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
        """The log extras of a record: service, topic, partition, offset, tenant, event id."""
        return record_context(
            self.service,
            self.names.logical(record.topic),
            record.partition,
            record.offset,
            record.headers,
        )

    async def _dead_letter_alone(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        topic = self.names.logical(record.topic)
        async with self.engine.begin() as conn:
            stored = await offsets.lock_offsets(conn, [record])
            if record.offset < stored[(record.topic, record.partition)]:
                return
            uow = UnitOfWork(conn, self.names)
            uow.dead_letter(record, topic, reason, self.service)
            await uow.flush()
            await offsets.store_offsets(conn, [record])
        self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
        self.metrics.dead_lettered(topic).inc()
        log.warning(
            "%s: dead-lettered %s[%d]@%d: %s",
            self.service,
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra=self._context(record),
        )

    def admit(self, record: ConsumerRecord[bytes, bytes], now: datetime) -> Inbound | str:
        """The one decode path: ``record`` as an event a handler may see, or the reason
        to dead-letter it — not a valid catalogued CloudEvent, dated more than
        ``max_clock_skew`` ahead of its arrival (its Kafka timestamp; ``now``, the
        wall clock, when it has none), or a producer's event with negative money.
        Whether its tenant exists is asked of the registry, for a whole batch at once
        (:meth:`_admit_batch`)."""
        try:
            event = decode(record.value, record.headers or ())
        except DecodeError as exc:
            return exc.reason
        arrival = record_arrival(record.timestamp)
        too_early = clock_skew_violation(event.time, arrival or now, self.max_clock_skew)
        if too_early is not None:
            return too_early
        negative = negative_money_violation(event)
        if negative is not None:
            return negative
        topic = self.names.logical(record.topic)
        return Inbound(event, topic, record.partition, record.offset, record, arrival)

    async def _admit_batch(
        self, records: list[ConsumerRecord[bytes, bytes]], fetched_by: float
    ) -> tuple[list[Inbound], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
        """:meth:`admit` for each record, then whether the tenants of those admitted
        exist (one registry call for the batch; records fetched by ``fetched_by``):
        the events handlers may see, and the records to dead-letter with their
        reasons, each list in the records' order."""
        now = datetime.now(UTC)
        admitted = [(r, self.admit(r, now)) for r in records]
        tenants = {
            a.event.tenant for _, a in admitted if isinstance(a, Inbound) and a.topic != TENANTS
        }
        unknown = await self.tenants.unknown(tenants, fetched_by) if tenants else set()
        decoded: list[Inbound] = []
        poison: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for r, a in admitted:
            if isinstance(a, Inbound) and a.topic != TENANTS and a.event.tenant in unknown:
                a = unknown_tenant(a.event.tenant)
            if isinstance(a, str):
                poison.append((r, a))
            else:
                decoded.append(a)
        return decoded, poison

    async def _apply(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        fetched_by: float,
        *,
        isolate: bool,
        trial: bool = False,
    ) -> None:
        """Applies ``records`` in one transaction. A failure that is not transient
        raises :class:`_SplitBatch` for a batch, :class:`_Poison` for an isolated
        record; a ``trial`` always ends in :class:`_RollBack`."""
        started = time.perf_counter()
        decoded, poison = await self._admit_batch(records, fetched_by)

        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, self.names, self.service)
            stored = await offsets.lock_offsets(conn, records)
            fresh_ok = [
                i
                for i in decoded
                if i.offset >= stored[(self.names.physical(i.topic), i.partition)]
            ]
            poison = [(r, why) for r, why in poison if r.offset >= stored[(r.topic, r.partition)]]
            step = "dedupe"
            fresh: list[Inbound] = []
            try:
                # everything that touches the records' data, the dedupe insert included:
                # a value Postgres refuses (a NUL in an id) is the record's fault
                fresh = await self._dedupe(conn, fresh_ok)
                step = "handler"
                for handler, items in self._route(fresh):
                    await handler(uow, items)
                step = "outbox"
                for record, reason in poison:
                    uow.dead_letter(record, self.names.logical(record.topic), reason, self.service)
                await uow.flush()
            except Exception as exc:
                if is_transient(exc):
                    raise
                data = is_data_error(exc)
                if not isolate:
                    log.warning(
                        "%s: %s failed on a batch of %d (%s); isolating the poison: %s",
                        self.service,
                        step,
                        len(records),
                        "data error" if data else "not transient",
                        describe_error(exc),
                    )
                    raise _SplitBatch from exc
                # one record: it is the poison. Roll back its effects, keep the rest.
                if data:
                    raise _Poison(records[0], f"data error: {describe_error(exc)}", "data") from exc
                what = "handler error" if step == "handler" else f"error in {step}"
                raise _Poison(records[0], f"{what}: {describe_error(exc)}", "handler") from exc
            if trial:
                raise _RollBack(handled=bool(fresh))
            await offsets.store_offsets(conn, records)
            self.fault("before_commit")
        self.fault("after_commit")

        for topic, n in Counter(self.names.logical(r.topic) for r in records).items():
            self.metrics.consumed(topic).inc(n)
        for topic, n in Counter(i.topic for i in fresh).items():
            self.metrics.processed(topic).inc(n)
        fresh_ids = {id(i) for i in fresh}
        for topic, n in Counter(i.topic for i in fresh_ok if id(i) not in fresh_ids).items():
            self.metrics.duplicates(topic).inc(n)
        for item, why in uow.rejected:
            self.metrics.dead_lettered(item.topic).inc()
            log.info(
                "%s: refused %s[%d]@%d: %s",
                self.service,
                item.topic,
                item.partition,
                item.offset,
                why,
                extra=self._context(item.record),
            )
        for r, reason in poison:
            self.metrics.dead_lettered(self.names.logical(r.topic)).inc()
            log.warning(
                "%s: dead-lettered %s[%d]@%d: %s",
                self.service,
                r.topic,
                r.partition,
                r.offset,
                reason,
                extra=self._context(r),
            )
        for r in records:
            self._positions[TopicPartition(r.topic, r.partition)] = r.offset + 1
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _route(self, items: list[Inbound]) -> list[tuple[Handler, list[Inbound]]]:
        groups: dict[int, tuple[Handler, list[Inbound]]] = {}
        for item in items:
            handler = self.handlers[item.topic]
            groups.setdefault(id(handler), (handler, []))[1].append(item)
        return list(groups.values())

    async def _dedupe(self, conn: AsyncConnection, items: list[Inbound]) -> list[Inbound]:
        return await keep_first_seen(conn, items, lambda i: (i.event.tenant, i.event.id))

    # ------------------------------------------------------------ offsets & lag

    async def consumed(self, topics: Iterable[str]) -> int:
        """How many records of the logical ``topics`` have been applied (the sum of
        the offsets stored in Postgres): progress for benchmarks and tests."""
        return await offsets.consumed(self.engine, (self.names.physical(t) for t in topics))

    async def load_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await offsets.load_offsets(self.engine, tps)

    async def _commit_to_kafka(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError, AssertionError) as exc:
            # normal after a rebalance; Postgres holds the offsets that matter
            log.debug("%s: kafka commit skipped: %s", self.service, exc)

    def _at_end(self, tp: TopicPartition) -> bool:
        """Read up to the high watermark of the last fetch (never ``end_offsets()``:
        the embedded broker gets that wrong)."""
        consumer = self._consumer
        hw = consumer.highwater(tp) if consumer is not None else None
        return hw is not None and self._positions.get(tp, -1) >= hw

    def caught_up(self, topic: str) -> bool:
        """True once every assigned partition of the logical ``topic`` has been read
        up to its high watermark (e.g. all tenant keys are known)."""
        physical = self.names.physical(topic)
        tps = [tp for tp in self.assigned if tp.topic == physical]
        return bool(tps) and all(self._at_end(tp) for tp in tps)

    def caught_up_all(self) -> bool:
        """True when every assigned partition has been read to its high watermark."""
        return bool(self.assigned) and all(self._at_end(tp) for tp in self.assigned)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in self.assigned:
            hw = consumer.highwater(tp)
            pos = self._positions.get(tp)
            if hw is not None and pos is not None:
                self.metrics.lag.labels(self.names.logical(tp.topic), str(tp.partition)).set(
                    max(hw - pos, 0)
                )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.worker._lock:  # let the batch in flight finish first
            self.worker.assigned -= set(revoked)
            gone = {(tp.topic, tp.partition) for tp in revoked}
            for key in [k for k in self.worker._attempts if (k[0], k[1]) in gone]:
                del self.worker._attempts[key]

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        worker = self.worker
        consumer = worker._consumer
        assert consumer is not None
        delay = 0.2
        while True:
            try:
                stored = await worker.load_offsets(assigned)
                break
            except Exception as exc:
                if not is_transient(exc) or worker._stopping.is_set():
                    raise
                log.warning("%s: cannot load offsets (%s); retrying", worker.service, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await worker.seek_to_stored(consumer, assigned, stored)
        worker.assigned |= set(assigned)
        log.info(
            "%s: assigned %s",
            worker.service,
            ", ".join(f"{tp.topic}[{tp.partition}]@{stored.get(tp, 0)}" for tp in sorted(assigned)),
        )
