"""Session-scoped real infrastructure: one embedded Tansu broker and one embedded
PostgreSQL per test session, on free loopback ports / a private socket dir.
Tests are isolated by a fresh topic prefix and a fresh database each."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker("127.0.0.1", free_port(), tmp_path_factory.mktemp("broker") / "log")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", database="loyalty_tests")
    pg.start()
    yield pg
    pg.stop()


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


SettingsFactory = Callable[[], Awaitable[Settings]]


@pytest.fixture
def make_settings(broker: EmbeddedBroker, postgres: EmbeddedPostgres) -> SettingsFactory:
    """Makes isolated settings: a fresh topic prefix and a fresh database each call."""

    async def make() -> Settings:
        tag = uuid.uuid4().hex[:10]
        db = f"t_{tag}"
        await _create_database(postgres.admin_url, db)
        return Settings(
            kafka_bootstrap=broker.bootstrap,
            database_url=postgres.url_for(db),  # type: ignore[arg-type]
            topic_prefix=f"t{tag}.",
            session_timeout_ms=6_000,
            consumer_poll_ms=100,
            # most tests drive stream time with their own (often historic) event
            # times; the tests of ticks turn the ticker on
            tick_interval=timedelta(0),
        )

    return make


@pytest.fixture
async def settings(make_settings: SettingsFactory) -> Settings:
    """Settings for one test: its own topic prefix and its own database."""
    return await make_settings()


@pytest.fixture(scope="session")
def fixture_migrations() -> Path:
    return Path(__file__).parent / "integration" / "fixture_migrations"
