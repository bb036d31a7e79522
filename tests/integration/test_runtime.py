"""The runtime on the real broker and Postgres: effectively-once under crashes,
dedupe, dead letters, resume from stored offsets, broker incarnation changes."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from schemas.events import Login, LoginData
from services.runtime.batch import Handler, Inbound, UnitOfWork
from services.runtime.codec import encode
from services.runtime.config import Settings
from services.runtime.db import create_engine
from services.runtime.service import ServiceRuntime, ServiceSpec
from tests.kafka_helpers import decoded, produce, produce_raw, read_all, wait_published
from tests.tenants import create_tenant

TENANT = "acme"


@pytest.fixture(autouse=True)
async def _tenant(settings: Settings) -> None:
    """The tenant of these tests' events exists: the runtime dead-letters any other's."""
    await create_tenant(settings, TENANT)


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the runtime may catch it, like a process dying."""


def login(i: int, event_id: str | None = None) -> Login:
    return Login(
        id=event_id or f"ev-{i}",
        source="test",
        type="product.login",
        subject=f"acct-{i % 7}",
        tenant=TENANT,
        time=datetime(2026, 11, 1, tzinfo=UTC),
        data=LoginData(user_id=f"u{i}"),
    )


async def record_and_echo(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    """The test service: one effect row per event, and one echo event per event."""
    await uow.conn.execute(
        text("INSERT INTO effects (tenant, event_id, account) VALUES (:t, :e, :a)"),
        [{"t": i.event.tenant, "e": i.event.id, "a": i.event.subject} for i in batch],
    )
    for item in batch:
        if item.event.data.user_id == "poison-for-handler":
            raise ValueError("this event breaks the handler")
        echo = item.event.model_copy(update={"id": f"echo-{item.event.id}"})
        uow.publish("segments.changes", echo)


def spec(fixture_migrations: Path) -> ServiceSpec:
    return ServiceSpec(
        name="echo", migrations=fixture_migrations, handlers={"events.product": record_and_echo}
    )


async def effects(rt: ServiceRuntime) -> list[str]:
    async with rt.engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_id FROM effects ORDER BY n"))
        return [r[0] for r in rows.all()]


async def wait_for(predicate_coro, timeout_s: float = 40) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate_coro():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def run_until_effects(
    settings: Settings, fixture_migrations: Path, n: int, fault=None
) -> ServiceRuntime:  # type: ignore[no-untyped-def]
    rt = ServiceRuntime(spec(fixture_migrations), settings, fault=fault)
    await rt.start()

    async def done() -> bool:
        return len(await effects(rt)) >= n or (
            fault is not None and not (rt.worker.alive and rt.relay.alive)
        )

    await wait_for(done)
    return rt


async def test_applies_each_event_once_and_publishes_through_the_outbox(
    settings: Settings, fixture_migrations: Path
) -> None:
    events = [login(i) for i in range(20)]
    topic = f"{settings.topic_prefix}events.product"
    rt = await run_until_effects(settings, fixture_migrations, 0)
    try:
        await produce(settings.kafka_bootstrap, topic, events)
        # a producer retry: the same ids again
        await produce(settings.kafka_bootstrap, topic, events[:5])
        await wait_for(lambda: _count_at_least(rt, 20))
        # past every record, the five repeats included, and everything published
        await wait_for(lambda: _consumed_at_least(rt, len(events) + 5))
        await wait_published(rt)
        echoes = decoded(
            await read_all(
                settings.kafka_bootstrap, f"{settings.topic_prefix}segments.changes", at_least=20
            )
        )
        assert sorted(await effects(rt)) == sorted(e.id for e in events)
        assert sorted(e.id for e in echoes) == sorted(f"echo-{e.id}" for e in events)
        per_account = {}
        for e in echoes:  # per-key order survives the outbox
            per_account.setdefault(e.subject, []).append(int(e.id.split("-")[-1]))
        assert all(seq == sorted(seq) for seq in per_account.values())
    finally:
        await rt.stop()


async def _count_at_least(rt: ServiceRuntime, n: int) -> bool:
    return len(await effects(rt)) >= n


@pytest.mark.parametrize("step", ["before_commit", "after_commit", "relay_after_send"])
async def test_a_crash_at_any_step_loses_nothing_and_doubles_nothing(
    settings: Settings, fixture_migrations: Path, step: str
) -> None:
    events = [login(i) for i in range(30)]
    topic = f"{settings.topic_prefix}events.product"
    await produce(settings.kafka_bootstrap, topic, events)
    crashed: list[str] = []

    def crash_once(at: str) -> None:
        if at == step and not crashed:
            crashed.append(at)
            raise SimulatedCrash(at)

    first = await run_until_effects(settings, fixture_migrations, 30, fault=crash_once)
    await first.stop()
    assert crashed == [step]

    second = await run_until_effects(settings, fixture_migrations, 30)
    try:
        out = f"{settings.topic_prefix}segments.changes"
        echoes = decoded(await read_all(settings.kafka_bootstrap, out, at_least=30))
        assert sorted(await effects(second)) == sorted(e.id for e in events)
        assert sorted({e.id for e in echoes}) == sorted(f"echo-{e.id}" for e in events)
        if step == "relay_after_send":
            # the crashed relay had sent a batch it never deleted: it goes out again,
            # and only the event id tells the copies apart
            assert len(echoes) > len(events)
    finally:
        await second.stop()


async def test_poison_goes_to_the_dlq_with_a_reason_and_the_next_message_is_processed(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    rt = await run_until_effects(settings, fixture_migrations, 0)
    try:
        await produce_raw(
            settings.kafka_bootstrap, topic, b"acme:acct-1", b"{not json", [("ce_id", b"bad-1")]
        )
        bad = login(1, "bad-2").model_copy(update={"data": {"user_id": ""}})
        await produce(settings.kafka_bootstrap, topic, [bad])
        await produce(settings.kafka_bootstrap, topic, [login(2, "after-poison")])
        poison_handler = login(3, "breaks-handler").model_copy(
            update={"data": LoginData(user_id="poison-for-handler")}
        )
        await produce(settings.kafka_bootstrap, topic, [poison_handler, login(4, "after-2")])
        await wait_for(lambda: _count_at_least(rt, 2))
        dlq = await read_all(settings.kafka_bootstrap, f"{topic}.dlq", at_least=3)
        reasons = {
            dict(r.headers).get("ce_id", b"").decode(): dict(r.headers)["dlq_reason"].decode()
            for r in dlq
        }
        assert "missing header" in reasons["bad-1"]
        assert "data.user_id" in reasons["bad-2"]
        assert "handler error: ValueError" in reasons["breaks-handler"]
        assert all(dict(r.headers)["dlq_source_topic"] == topic.encode() for r in dlq)
        assert sorted(await effects(rt)) == ["after-2", "after-poison"]
    finally:
        await rt.stop()


async def test_resumes_from_offsets_stored_in_postgres(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    await produce(settings.kafka_bootstrap, topic, [login(i) for i in range(10)])
    rt = await run_until_effects(settings, fixture_migrations, 10)
    await rt.stop()
    # new ids, so that only the offsets (not the dedupe) can prevent reprocessing
    await produce(settings.kafka_bootstrap, topic, [login(i, f"later-{i}") for i in range(5)])
    rt = await run_until_effects(settings, fixture_migrations, 15)
    try:
        await wait_for(lambda: _consumed_at_least(rt, 15))  # past the last record
        assert len(await effects(rt)) == 15
        async with rt.engine.connect() as conn:
            dupes = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM processed_events"
                        " WHERE event_id LIKE 'ev-%' OR event_id LIKE 'later-%'"
                    )
                )
            ).scalar_one()
        assert dupes == 15  # (the tenant's key event is the one other row)
    finally:
        await rt.stop()


async def test_a_recreated_topic_set_is_detected_and_read_from_the_start(
    settings: Settings, fixture_migrations: Path
) -> None:
    """Simulates the embedded broker losing its topics: the stored offsets point
    beyond the new log's end and must be dropped, not waited on."""
    topic = f"{settings.topic_prefix}events.product"
    rt = await run_until_effects(settings, fixture_migrations, 0)
    await rt.stop()
    async with rt.engine.begin() as conn:
        # offsets as a previous broker's much longer log left them, and its marker
        await conn.execute(text("UPDATE consumer_offsets SET next_offset = 10000"))
        await conn.execute(
            text(
                "INSERT INTO consumer_offsets (topic, partition, next_offset)"
                " SELECT :t, p, 10000 FROM generate_series(0, 5) p ON CONFLICT DO NOTHING"
            ),
            {"t": topic},
        )
        await conn.execute(text("UPDATE runtime_meta SET value = 'old-broker'"))
    await produce(settings.kafka_bootstrap, topic, [login(i, str(uuid.uuid4())) for i in range(6)])
    rt = await run_until_effects(settings, fixture_migrations, 6)
    try:
        assert len(await effects(rt)) == 6
    finally:
        await rt.stop()


async def test_lost_database_connections_are_retried_without_loss_or_doubling(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    rt = await run_until_effects(settings, fixture_migrations, 0)
    admin = create_engine(settings.async_database_url(), "public")
    try:
        for round_ in range(5):
            await produce(
                settings.kafka_bootstrap, topic, [login(i, f"r{round_}-{i}") for i in range(40)]
            )
            async with admin.connect() as conn:  # cut every other session to this database
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
        await wait_for(lambda: _count_at_least(rt, 200), timeout_s=60)
        await wait_for(lambda: _consumed_at_least(rt, 200))  # past the last record
        ids = await effects(rt)
        assert len(ids) == 200 and len(set(ids)) == 200
        assert rt.worker.alive and rt.relay.alive
    finally:
        await admin.dispose()
        await rt.stop()


async def always_broken(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    raise RuntimeError("a bug: every event fails")


class Recording:
    """A test handler that counts its calls and records every event id it was given
    (trial runs, which are rolled back, included), then does what ``then`` does."""

    def __init__(self, then: Handler = record_and_echo) -> None:
        self.then = then
        self.calls = 0
        self.seen: list[str] = []

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        self.calls += 1
        self.seen.extend(i.event.id for i in batch)
        await self.then(uow, batch)


def runtime_with(
    handler: Handler, settings: Settings, fixture_migrations: Path, **overrides: object
) -> ServiceRuntime:
    spec = ServiceSpec(
        name="echo", migrations=fixture_migrations, handlers={"events.product": handler}
    )
    return ServiceRuntime(spec, settings.model_copy(update=overrides))


async def dead_letters(settings: Settings, topic: str, at_least: int) -> dict[str, str]:
    """The dead letters of ``topic``: event id (``ce_id``) -> ``dlq_reason``."""
    dlq = await read_all(settings.kafka_bootstrap, f"{topic}.dlq", at_least=at_least)
    return {
        dict(r.headers).get("ce_id", b"").decode(): dict(r.headers)["dlq_reason"].decode()
        for r in dlq
    }


async def test_a_handler_that_fails_on_everything_dead_letters_nothing(
    settings: Settings, fixture_migrations: Path
) -> None:
    """Below the bound of attempts, a broken handler is retried and nothing is
    dead-lettered, stored or published; once it is fixed, everything is applied."""
    topic = f"{settings.topic_prefix}events.product"
    await produce(settings.kafka_bootstrap, topic, [login(i) for i in range(7)])
    broken = Recording(always_broken)
    rt = runtime_with(broken, settings, fixture_migrations, max_attempts=1000)
    await rt.start()
    try:
        # several failed attempts, each of which ran the handler (not a timer: a
        # handler that never ran would never make the worker rewind)
        await wait_for(lambda: _at_least(rt.worker.rewinds, 3))
        assert broken.calls >= rt.worker.rewinds >= 3  # each attempt ran the handler
        assert broken.seen and set(broken.seen) <= {f"ev-{i}" for i in range(7)}
        assert rt.worker.alive
        stored = await rt.worker.consumed(["events.product"])
        async with rt.engine.connect() as conn:
            queued = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert stored == 0 and queued == 0
        assert rt.metrics.dead_lettered("events.product")._value.get() == 0
    finally:
        await rt.stop()
    assert await read_all(settings.kafka_bootstrap, f"{topic}.dlq", timeout_s=2) == []
    # the fix is deployed: everything is applied, nothing was lost
    fixed = await run_until_effects(settings, fixture_migrations, 7)
    try:
        assert len(await effects(fixed)) == 7
    finally:
        await fixed.stop()


async def _at_least(value: int, n: int) -> bool:
    return value >= n


async def test_a_handler_that_fails_on_everything_gives_up_on_a_record_after_max_attempts(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    doomed = [login(7 * i, f"doomed-{i}") for i in range(3)]  # one account: one partition
    await produce(settings.kafka_bootstrap, topic, doomed, one_batch=True)
    broken = Recording(always_broken)
    rt = runtime_with(broken, settings, fixture_migrations, max_attempts=2)
    await rt.start()
    try:
        await wait_for(lambda: _consumed_at_least(rt, 3))
        reasons = await dead_letters(settings, topic, at_least=3)
        error = "handler error: RuntimeError: a bug: every event fails"
        # the first two fail with the rest of their batch: retried, then given up on
        assert reasons["doomed-0"] == f"gave up after 2 attempts: {error}"
        assert reasons["doomed-1"] == f"gave up after 2 attempts: {error}"
        # the last one fails alone: as any poison, at once
        assert reasons["doomed-2"] == error
        assert rt.worker.rewinds >= 4  # two failed attempts each for the first two
        assert broken.calls >= 4 and "doomed-0" in broken.seen
        assert rt.worker.alive
    finally:
        await rt.stop()


async def _consumed_at_least(rt: ServiceRuntime, n: int) -> bool:
    return await rt.worker.consumed(["events.product"]) >= n


async def test_a_handler_failing_on_one_event_dead_letters_that_event_alone(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"

    async def fails_on_one(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        if any(i.event.id.startswith("breaks-") for i in batch):
            raise ValueError("this event breaks the handler")
        await record_and_echo(uow, batch)

    handler = Recording(fails_on_one)
    rt = runtime_with(handler, settings, fixture_migrations)
    await rt.start()
    try:
        await wait_for(lambda: _assigned(rt))
        await produce(settings.kafka_bootstrap, topic, [login(5, "breaks-alone")])
        await wait_for(lambda: _consumed_at_least(rt, 1))
        # and in a batch with others, on the same partition
        batch = [login(5, "before"), login(5, "breaks-in-a-batch"), login(5, "after")]
        await produce(settings.kafka_bootstrap, topic, batch, one_batch=True)
        await wait_for(lambda: _consumed_at_least(rt, 4))
        reasons = await dead_letters(settings, topic, at_least=2)
        assert reasons == {
            "breaks-alone": "handler error: ValueError: this event breaks the handler",
            "breaks-in-a-batch": "handler error: ValueError: this event breaks the handler",
        }
        assert sorted(await effects(rt)) == ["after", "before"]
        assert {"breaks-alone", "breaks-in-a-batch"} <= set(handler.seen)
        assert rt.worker.rewinds == 0
    finally:
        await rt.stop()


async def _assigned(rt: ServiceRuntime) -> bool:
    return bool(rt.worker.assigned)


async def test_an_event_from_the_future_is_dead_lettered_before_any_handler_sees_it(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    handler = Recording()
    rt = runtime_with(handler, settings, fixture_migrations)
    await rt.start()
    try:
        now = datetime.now(UTC)
        events = [  # one account: one partition, in this order
            login(1, "from-9999").model_copy(update={"time": datetime(9999, 12, 31, tzinfo=UTC)}),
            login(1, "two-minutes-ahead").model_copy(update={"time": now + timedelta(minutes=2)}),
            login(1, "after-the-future"),
        ]
        await produce(settings.kafka_bootstrap, topic, events)
        await wait_for(lambda: _consumed_at_least(rt, 3))
        reasons = await dead_letters(settings, topic, at_least=1)
        assert list(reasons) == ["from-9999"]
        assert re.fullmatch(
            r"event time 9999-12-31T00:00:00\+00:00 is \d+ days, [\d:]+ ahead of its arrival"
            r" \S+ \(max clock skew 0:05:00\)",
            reasons["from-9999"],
        ), reasons["from-9999"]
        assert "from-9999" not in handler.seen  # so it can move no stream clock
        assert sorted(await effects(rt)) == ["after-the-future", "two-minutes-ahead"]
        assert rt.worker.rewinds == 0
    finally:
        await rt.stop()


async def test_an_event_dated_ahead_of_a_late_arrival_is_judged_by_its_record_timestamp(
    settings: Settings, fixture_migrations: Path
) -> None:
    """The skew is measured against the record's timestamp, not the consumer's
    clock: a replay of the same records decides the same."""
    topic = f"{settings.topic_prefix}events.product"
    stamped = datetime(2026, 1, 1, tzinfo=UTC)
    ms = int(stamped.timestamp() * 1000)
    ahead = login(2, "ahead-of-its-record").model_copy(
        update={"time": stamped + timedelta(minutes=6)}
    )
    within = login(2, "within-its-record").model_copy(
        update={"time": stamped + timedelta(minutes=4)}
    )
    await produce(settings.kafka_bootstrap, topic, [ahead, within], timestamp_ms=ms)
    rt = runtime_with(Recording(), settings, fixture_migrations)
    await rt.start()
    try:
        await wait_for(lambda: _consumed_at_least(rt, 2))
        reasons = await dead_letters(settings, topic, at_least=1)
        assert list(reasons) == ["ahead-of-its-record"]
        assert (
            "is 0:06:00 ahead of its arrival 2026-01-01T00:00:00+00:00"
            in (reasons["ahead-of-its-record"])
        )
        assert await effects(rt) == ["within-its-record"]
    finally:
        await rt.stop()


async def test_a_nul_in_an_id_or_an_account_is_dead_lettered_as_a_data_error_without_rewinding(
    settings: Settings, fixture_migrations: Path
) -> None:
    """Postgres refuses a NUL in a text: in the dedupe insert (the id) or in the
    handler's own insert (the account). Either is the record's fault, not a reason
    to retry the batch."""
    topic = f"{settings.topic_prefix}events.product"
    handler = Recording()
    rt = runtime_with(handler, settings, fixture_migrations)
    await rt.start()
    try:
        await wait_for(lambda: _assigned(rt))
        nul_id = login(2, "nul-id")
        msg = encode(nul_id)
        headers = [(k, b"nul\x00id" if k == "ce_id" else v) for k, v in msg.headers]
        await produce_raw(settings.kafka_bootstrap, topic, msg.key, msg.value, headers)
        nul_account = login(3, "nul-account").model_copy(update={"subject": "acct-\x00"})
        after = login(2, "after-the-nul")  # the NUL id's account: its partition
        await produce(settings.kafka_bootstrap, topic, [nul_account, after], one_batch=True)
        await wait_for(lambda: _consumed_at_least(rt, 3))
        reasons = await dead_letters(settings, topic, at_least=2)
        refused = "data error: CharacterNotInRepertoireError: invalid byte sequence for encoding"
        assert set(reasons) == {"nul\x00id", "nul-account"}
        assert all(
            r.startswith(refused) and r.endswith("(SQLSTATE 22021)") for r in reasons.values()
        )
        assert "nul\x00id" not in handler.seen  # refused by the dedupe, before the handler
        assert "nul-account" in handler.seen  # refused by the handler's insert
        assert await effects(rt) == ["after-the-nul"]
        assert rt.worker.rewinds == 0
        assert rt.metrics.batch_retries._value.get() == 0
    finally:
        await rt.stop()
