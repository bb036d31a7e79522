"""Which tenants exist, on the real broker and Postgres: the registry the consumers
ask before they dead-letter an event as of an unknown tenant, and the race it
closes (a tenant created just before its first events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from schemas.events import Login, LoginData
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.config import Settings
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate
from services.runtime.errors import is_transient
from services.runtime.service import ServiceRuntime, ServiceSpec
from services.runtime.tenants import (
    TenantRegistry,
    TenantsUnavailable,
    hash_key,
    key_revoked_event,
    publish_key_event,
)
from services.runtime.topics import TENANTS, TopicNames, ensure_topics
from tests.kafka_helpers import produce, read_all
from tests.tenants import create_tenant


def login(tenant: str, event_id: str, account: str = "acct-1") -> Login:
    return Login(
        id=event_id,
        source="test",
        type="product.login",
        subject=account,
        tenant=tenant,
        time=datetime(2026, 11, 1, tzinfo=UTC),
        data=LoginData(user_id="u1"),
    )


async def revoke_every_key(settings: Settings, tenant: str, key: str) -> None:
    await publish_key_event(
        settings.kafka_bootstrap,
        TopicNames(settings.topic_prefix),
        settings.partitions,
        key_revoked_event(tenant, hash_key(key), by="test"),
    )


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = 40) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_a_miss_reads_the_tenants_topic_to_its_end_once_per_batch(
    settings: Settings,
) -> None:
    names = TopicNames(settings.topic_prefix)
    engine = create_engine(settings.async_database_url(), "registry")
    try:
        await migrate(engine, "registry", {"runtime": RUNTIME_MIGRATIONS})
        await ensure_topics(settings.kafka_bootstrap, names, settings.partitions)
        registry = TenantRegistry(engine, settings.kafka_bootstrap, names)
        await create_tenant(settings, "acme")
        gone_key = await create_tenant(settings, "gone")
        await revoke_every_key(settings, "gone", gone_key)

        # a batch fetched now names acme, gone and ghost: one read of the topic decides
        fetched = time.monotonic()
        assert await registry.unknown({"acme", "gone", "ghost"}, fetched) == {"ghost"}
        assert registry.refreshes == 1
        assert "gone" in registry  # every key revoked: still a tenant
        # the same batch asks again (split, retried): that read answers for it
        assert await registry.unknown({"ghost"}, fetched) == {"ghost"}
        assert registry.refreshes == 1
        # known tenants are a lookup, whenever their records were fetched
        assert await registry.unknown({"acme", "gone"}, time.monotonic()) == set()
        assert registry.refreshes == 1

        # ghost is created now; a record of it fetched after that is its own, not a
        # stranger's: the read the earlier batch made does not answer for it
        await create_tenant(settings, "ghost")
        assert await registry.unknown({"ghost"}, time.monotonic()) == set()
        assert registry.refreshes == 2

        # a registry that starts (another instance, a restart) takes what this service
        # folded, the tenants of its api_keys up to the offset stored with them, and
        # reads the topic from there on
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO api_keys (key_hash, tenant, name) SELECT t, t, t"
                    " FROM unnest(CAST(:t AS text[])) AS t"
                ),
                {"t": ["acme", "gone", "ghost", "folded-only"]},
            )
            await conn.execute(
                text(
                    "INSERT INTO consumer_offsets (topic, partition, next_offset)"
                    " VALUES (:t, 0, 4)"  # past acme, gone, its revocation and ghost
                ),
                {"t": names.physical(TENANTS)},
            )
        await create_tenant(settings, "newer")
        second = TenantRegistry(engine, settings.kafka_bootstrap, names)
        wanted = {"acme", "gone", "ghost", "folded-only", "newer", "stranger"}
        assert await second.unknown(wanted, time.monotonic()) == {"stranger"}
        assert second.refreshes == 1
    finally:
        await engine.dispose()


async def test_an_unreachable_broker_is_an_outage_never_an_unknown_tenant(
    settings: Settings,
) -> None:
    engine = create_engine(settings.async_database_url(), "registry")
    try:
        await migrate(engine, "registry", {"runtime": RUNTIME_MIGRATIONS})
        nowhere = TenantRegistry(engine, "127.0.0.1:1", TopicNames("x."), timeout_s=2)
        with pytest.raises(TenantsUnavailable) as raised:
            await nowhere.unknown({"acme"}, time.monotonic())
        assert is_transient(raised.value)  # the worker retries the batch
    finally:
        await engine.dispose()


async def test_a_tenant_created_just_before_its_events_is_not_dead_lettered(
    settings: Settings, fixture_migrations: Path
) -> None:
    """This instance never folds the tenants topic (as when another instance of the
    group owns its partition and lags): only the registry's read can know the new
    tenant, whose events follow its key at once. A tenant never created is
    dead-lettered with the reason; created afterwards, its new events are applied."""
    applied: list[tuple[str, str]] = []

    async def record(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        applied.extend((i.event.tenant, i.event.id) for i in batch)

    spec = ServiceSpec(
        name="race", migrations=fixture_migrations, handlers={"events.product": record}
    )
    rt = ServiceRuntime(spec, settings)
    del rt.worker.handlers[TENANTS]
    topic = f"{settings.topic_prefix}events.product"
    await rt.start()
    try:
        await wait_for(lambda: _true(bool(rt.worker.assigned)))
        await create_tenant(settings, "newco")
        revoked = await create_tenant(settings, "revoked")
        await revoke_every_key(settings, "revoked", revoked)
        first = [
            login("newco", "n-1"),
            login("ghost", "g-1"),
            login("newco", "n-2", "acct-2"),
            login("revoked", "r-1"),
        ]
        await produce(settings.kafka_bootstrap, topic, first, one_batch=True)
        await wait_for(lambda: _consumed(rt, len(first)))
        assert sorted(applied) == [("newco", "n-1"), ("newco", "n-2"), ("revoked", "r-1")]
        dlq = await read_all(settings.kafka_bootstrap, f"{topic}.dlq", at_least=1)
        assert [
            (dict(r.headers)["ce_id"], dict(r.headers)["dlq_reason"].decode()) for r in dlq
        ] == [(b"g-1", "unknown tenant 'ghost'")]
        async with rt.engine.connect() as conn:
            folded = (await conn.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
            seen = (
                await conn.execute(
                    text("SELECT count(*) FROM processed_events WHERE tenant = 'ghost'")
                )
            ).scalar_one()
        assert folded == 0  # the registry alone knew them
        assert seen == 0  # a dead-lettered event is not done: its id stays free

        # ghost is created now: its next events are its own
        await create_tenant(settings, "ghost")
        await produce(settings.kafka_bootstrap, topic, [login("ghost", "g-2")])
        await wait_for(lambda: _consumed(rt, len(first) + 1))
        assert ("ghost", "g-2") in applied

        # known tenants never read the topic again, however many batches they fill
        reads = rt.worker.tenants.refreshes
        more = [
            login(t, f"{t}-more-{i}", f"acct-{i}") for i in range(10) for t in ("newco", "ghost")
        ]
        await produce(settings.kafka_bootstrap, topic, more)
        await wait_for(lambda: _consumed(rt, len(first) + 1 + len(more)))
        assert rt.worker.tenants.refreshes == reads
        assert rt.metrics.tenant_refreshes._value.get() == reads
    finally:
        await rt.stop()


async def _true(value: bool) -> bool:
    return value


async def _consumed(rt: ServiceRuntime, n: int) -> bool:
    return await rt.worker.consumed(["events.product"]) >= n
