"""``loyalty bench ingest``: events/s accepted over HTTP.

Starts one ingest process (``loyalty serve ingest``, on the configured or an
embedded broker and Postgres), creates a tenant key, and has N concurrent
clients POST batches of CloudEvents (``application/cloudevents-batch+json``) as
fast as it answers. Every 202 means the broker acknowledged every event of the
batch (``acks=all``); the bench counts only 202s and prints events/s and the
latency of a request (p50, p99).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.stack import with_stack
from services.runtime.config import Settings
from services.runtime.connections import Kafka, as_connection, kafka_connection
from services.runtime.embedded import free_port


@dataclass
class IngestBench:
    events: int
    clients: int
    batch: int
    seconds: float
    latencies_ms: list[float]
    refused: int
    on_topic: int  # records read back from the topic (the warm-up batch included)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def _pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def lines(self) -> list[str]:
        return [
            f"posted      {self.events:,} events by {self.clients} clients in batches of"
            f" {self.batch:,} ({self.refused} requests not accepted)",
            f"ingest      {self.rate:>10,.0f} events/s accepted (202 after acks=all)",
            f"latency     p50 {self._pct(0.5):.0f} ms, p99 {self._pct(0.99):.0f} ms a request",
            f"read back   {self.on_topic:,} records on events.product"
            f" ({self.events + self.batch:,} accepted with the warm-up batch)",
        ]

    def json(self) -> dict[str, Any]:
        return {
            "bench": "ingest",
            "events": self.events,
            "clients": self.clients,
            "batch": self.batch,
            "events_per_s": self.rate,
            "p50_ms": self._pct(0.5),
            "p99_ms": self._pct(0.99),
            "refused_requests": self.refused,
            "records_on_topic": self.on_topic,
        }


def _bodies(batches: int, batch: int) -> list[bytes]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    out = []
    for b in range(batches):
        events = [
            {
                "specversion": "1.0",
                "id": uuid.uuid4().hex,
                "source": "bench",
                "type": "product.feature_used",
                "subject": f"acct-{(b * batch + i) % 5000:05d}",
                "time": (now + timedelta(microseconds=b * batch + i)).isoformat(),
                "data": {"user_id": "u1", "feature": "reports", "key_action": i % 3 == 0},
            }
            for i in range(batch)
        ]
        out.append(json.dumps(events).encode())
    return out


async def run_ingest_bench(
    bootstrap: str, database_url: str, events: int, clients: int, batch: int
) -> IngestBench:
    from services.cli import create_tenant_key

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix)
    key = await create_tenant_key(settings, "bench")
    port = free_port()
    env = {
        **os.environ,
        "LOYALTY_KAFKA_BOOTSTRAP": bootstrap,
        "LOYALTY_DATABASE_URL": database_url,
        "LOYALTY_TOPIC_PREFIX": prefix,
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "ingest", "--port", str(port), env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.returncode is not None:
                    raise RuntimeError("ingest did not become ready")
                await asyncio.sleep(0.2)
            bodies = _bodies(max(1, events // batch), batch)
            headers = {
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/cloudevents-batch+json",
            }
            await http.post("/v1/events", content=bodies[0], headers=headers)  # warm up
            queue = list(range(1, len(bodies)))
            latencies: list[float] = []
            refused = 0

            async def client() -> None:
                nonlocal refused
                while queue:
                    body = bodies[queue.pop()]
                    t = time.perf_counter()
                    r = await http.post("/v1/events", content=body, headers=headers)
                    latencies.append(1000 * (time.perf_counter() - t))
                    if r.status_code != 202:
                        refused += 1

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            seconds = time.perf_counter() - started
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
    accepted = (len(bodies) - 1 - refused) * batch
    on_topic = await _count(kafka_connection(settings), f"{prefix}events.product", accepted + batch)
    return IngestBench(accepted, clients, batch, seconds, latencies, refused, on_topic)


async def _count(kafka: Kafka, topic: str, expected: int) -> int:
    """Records on the topic (read back, never ``end_offsets()``: the embedded
    broker gets it wrong), until ``expected`` or 5 s without more."""
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).client_kwargs(), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        while not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, quiet_since = 0, time.monotonic()
        while seen < expected and time.monotonic() - quiet_since < 5:
            got = await consumer.getmany(timeout_ms=500, max_records=20_000)
            n = sum(len(v) for v in got.values())
            if n:
                seen, quiet_since = seen + n, time.monotonic()
        return seen
    finally:
        await consumer.stop()


def ingest_bench_with_embedded(events: int, clients: int, batch: int) -> IngestBench:
    return with_stack(lambda b, db: run_ingest_bench(b, db, events, clients, batch))
