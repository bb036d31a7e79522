"""The Kafka and Postgres security settings reach the clients the system builds:
every aiokafka client carries the SASL settings; the defaults make a real round
trip through the embedded broker; asyncpg gets the TLS mode (``require`` against
the embedded Postgres, which has no TLS, fails with an SSL error)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text

from services.cli import Up, create_tenant_key
from services.ingest.adapters.kafka import KafkaEventPublisher
from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.runtime.config import Settings
from services.runtime.connections import as_connection, kafka_connection
from services.runtime.db import engine_for
from services.runtime.embedded import free_port
from services.runtime.service import ServiceRuntime, ServiceSpec
from services.runtime.topics import TENANTS, TopicNames, broker_incarnation, ensure_topics
from tests.kafka_helpers import read_all

SASL = {
    "LOYALTY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "LOYALTY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "LOYALTY_KAFKA_SASL_USERNAME": "loyalty",
    "LOYALTY_KAFKA_SASL_PASSWORD": "s3cret",
}


class Clients(list[AIOKafkaClient]):
    def __init__(self) -> None:
        super().__init__()
        self.added = asyncio.Event()

    async def another(self, timeout_s: float = 10) -> None:
        """Waits for the next client (``added`` is cleared before what makes one)."""
        await asyncio.wait_for(self.added.wait(), timeout_s)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    """Every aiokafka client made while the test runs (producers, consumers and
    admin clients all make one)."""
    made = Clients()
    original = AIOKafkaClient.__init__

    def recording(self: AIOKafkaClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)
        made.added.set()

    monkeypatch.setattr(AIOKafkaClient, "__init__", recording)
    yield made


def secure_settings(monkeypatch: pytest.MonkeyPatch, base: Settings, **extra: Any) -> Settings:
    """``base`` with the SASL settings from the environment and a broker address
    where nothing listens (every client fails to bootstrap, after being built)."""
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        database_url=base.database_url,
        topic_prefix=base.topic_prefix,
        **extra,
    )


async def test_sasl_settings_reach_every_kafka_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, clients: Clients
) -> None:
    secure = secure_settings(monkeypatch, settings, tick_interval=timedelta(seconds=1))
    rt = ServiceRuntime(ServiceSpec(name="conn"), secure)
    assert rt.relay.kafka is rt.kafka and rt.worker.kafka is rt.kafka
    assert rt.ticker.kafka is rt.kafka
    made: dict[str, int] = {}

    async def fails(what: str, step: Any) -> None:
        with pytest.raises(KafkaConnectionError):
            await step
        made[what] = len(clients)

    try:
        await fails("admin (ensure_topics)", ensure_topics(rt.kafka, rt.names, 1))
        await fails("consumer + producer (incarnation)", broker_incarnation(rt.kafka, rt.names))
        await fails("relay producer", rt.relay.start_producer())
        await fails("worker consumer", rt.worker.start())
        await fails("cli tenants create", create_tenant_key(secure, "acme"))
        up = Up(argparse.Namespace())
        await fails("cli up's tail", up._tail_credits(rt.kafka, rt.names, asyncio.Event()))

        clients.added.clear()
        await rt.ticker.start()
        await clients.another()
        await rt.ticker.stop()
        made["ticker producer"] = len(clients)

        clients.added.clear()
        publisher = KafkaEventPublisher(rt.kafka, rt.names, ack_timeout_s=1)
        await publisher.start()
        await clients.another()
        await publisher.stop()
        made["ingest producer"] = len(clients)
    finally:
        await rt.engine.dispose()

    counts = list(made.values())
    assert all(b > a for a, b in zip([0, *counts], counts, strict=False)), made
    for client in clients:
        assert client._bootstrap_servers == secure.kafka_bootstrap
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-256"
        assert client._sasl_plain_username == "loyalty"
        assert client._sasl_plain_password == "s3cret"


async def test_the_ingest_app_builds_its_publisher_from_the_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    secure = secure_settings(monkeypatch, settings)
    app = create_app(IngestSettings(**dict(secure)))
    try:
        options = as_connection(app.state.publisher.kafka).options
        assert options["security_protocol"] == "SASL_PLAINTEXT"
        assert options["sasl_plain_username"] == "loyalty"
    finally:
        await app.state.runtime.engine.dispose()


async def test_the_defaults_make_a_round_trip_through_the_embedded_broker(
    settings: Settings, clients: Clients
) -> None:
    kafka = kafka_connection(settings)
    assert kafka.options == {}
    names = TopicNames(settings.topic_prefix)
    assert await ensure_topics(kafka, names, 1)
    first = await broker_incarnation(kafka, names)
    assert await broker_incarnation(kafka, names) == first
    await create_tenant_key(settings, "acme")
    assert len(await read_all(settings.kafka_bootstrap, names.physical(TENANTS), at_least=1)) == 1
    assert clients and all(c._security_protocol == "PLAINTEXT" for c in clients)


@contextlib.asynccontextmanager
async def tcp_to_unix(socket_path: Path) -> AsyncIterator[int]:
    """A loopback TCP port forwarding to Postgres's unix socket: asyncpg uses TLS
    over TCP only, and the embedded Postgres listens on its socket alone."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(str(socket_path))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def over_tcp(settings: Settings, port: int, mode: str) -> Settings:
    url = urlsplit(settings.async_database_url())
    user = url.netloc.rsplit("@", 1)[0] if "@" in url.netloc else "postgres"
    return Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        database_url=f"postgresql+asyncpg://{user}@127.0.0.1:{port}{url.path}",  # type: ignore[arg-type]
        topic_prefix=settings.topic_prefix,
        database_ssl_mode=mode,  # type: ignore[arg-type]
    )


def unix_socket(settings: Settings) -> Path:
    url = urlsplit(settings.async_database_url())
    query = parse_qs(url.query)
    folder = Path(query["host"][0])
    port = query.get("port", [str(url.port or 5432)])[0]
    return folder / f".s.PGSQL.{port}"


async def test_the_database_ssl_mode_reaches_asyncpg(settings: Settings) -> None:
    async with tcp_to_unix(unix_socket(settings)) as port:
        plain = ServiceRuntime(ServiceSpec(name="conn"), over_tcp(settings, port, "disable"))
        try:
            async with plain.engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await plain.engine.dispose()

        preferred = engine_for(over_tcp(settings, port, "prefer"), "public")
        try:
            async with preferred.connect() as conn:  # the server declines TLS: plain it is
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await preferred.dispose()

        tls = ServiceRuntime(ServiceSpec(name="conn"), over_tcp(settings, port, "require"))
        try:
            with pytest.raises(Exception, match="SSL") as info:
                async with tls.engine.connect():
                    pass
            assert "rejected SSL upgrade" in str(info.value), info.value
        finally:
            await tls.engine.dispose()
