"""The runtime on the real broker and Postgres: effectively-once under crashes,
dedupe, dead letters, resume from stored offsets, broker incarnation changes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from schemas.events import Login, LoginData
from services.runtime.config import Settings
from services.runtime.db import create_engine
from services.runtime.service import ServiceRuntime, ServiceSpec
from services.runtime.worker import Inbound, UnitOfWork
from tests.kafka_helpers import decoded, produce, produce_raw, read_all

TENANT = "acme"


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
        echoes = decoded(
            await read_all(
                settings.kafka_bootstrap, f"{settings.topic_prefix}segments.changes", at_least=20
            )
        )
        await asyncio.sleep(1)
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
        await asyncio.sleep(1)
        assert len(await effects(rt)) == 15
        async with rt.engine.connect() as conn:
            dupes = (await conn.execute(text("SELECT count(*) FROM processed_events"))).scalar_one()
        assert dupes == 15
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
        await asyncio.sleep(1)
        ids = await effects(rt)
        assert len(ids) == 200 and len(set(ids)) == 200
        assert rt.worker.alive and rt.relay.alive
    finally:
        await admin.dispose()
        await rt.stop()


async def always_broken(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    raise RuntimeError("a bug: every event fails")


async def test_a_handler_that_fails_on_everything_dead_letters_nothing(
    settings: Settings, fixture_migrations: Path
) -> None:
    topic = f"{settings.topic_prefix}events.product"
    await produce(settings.kafka_bootstrap, topic, [login(i) for i in range(7)])
    broken = ServiceSpec(
        name="echo", migrations=fixture_migrations, handlers={"events.product": always_broken}
    )
    rt = ServiceRuntime(broken, settings)
    await rt.start()
    try:
        for _ in range(100):
            if rt.metrics.batch_retries._value.get() or rt.worker.batches:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(4)  # several failed attempts
        assert rt.worker.alive
        stored = await rt.worker.consumed(["events.product"])
        async with rt.engine.connect() as conn:
            queued = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert stored == 0 and queued == 0
    finally:
        await rt.stop()
    assert await read_all(settings.kafka_bootstrap, f"{topic}.dlq", timeout_s=2) == []
    # the fix is deployed: everything is applied, nothing was lost
    fixed = await run_until_effects(settings, fixture_migrations, 7)
    try:
        assert len(await effects(fixed)) == 7
    finally:
        await fixed.stop()
