"""A real ``kill -9`` in the middle of a stream. Segmenter -> offers -> ledger run
as three ``loyalty serve`` processes on the session's broker and Postgres; a few
thousand events stream straight onto ``events.*``; once one of the services (each
in turn) has published some of its outputs, its process gets SIGKILL and a new one
is started, while the stream goes on.

The kill aims at the worst moment it can find: outbox rows committed and already
sent, not yet deleted (the new process publishes them again), else rows committed
and not yet sent. What the architecture promises is checked, no weaker: effectively
once. A topic may carry a copy of a message (same id, same bytes); it may never
carry a second, different effect, and nothing may be missing:

- every account enters ``expansion_ready`` once, its transitions alternate per
  segment, and folding them gives the memberships the segmenter stores;
- every account gets exactly one decision, the one of the moment of its
  ``expansion_ready`` (issued, or held out by the holdout draw), and every issued
  offer exactly one credit of 10 % of its MRR;
- the ledger booked each offer once, balanced;
- nothing was dead-lettered.

The expected outcome is computed from the input, not from a second run: the
per-account chain is deterministic, while some transitions (``non_member`` before
the subscription arrives on the other topic, RFM redraws) depend on how partitions
and topics interleave, and are checked by their invariants instead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from base64 import b64decode
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import Event, Money
from schemas.events import (
    FeatureUsed,
    FeatureUsedData,
    Login,
    LoginData,
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.cli import create_tenant_key
from services.ledger.app import TOPICS as LEDGER_TOPICS
from services.offers.app import TOPICS as OFFERS_TOPICS
from services.offers.app import load as load_offers
from services.offers.domain.engine import in_holdout, offer_id
from services.runtime.codec import decode, encode
from services.runtime.config import Settings
from services.runtime.db import engine_for
from services.runtime.embedded import die_with_parent, free_port
from services.runtime.relay import make_producer
from services.runtime.topics import TENANTS
from services.segmenter.app import TOPICS as SEGMENTER_TOPICS

TENANT = "acme"  # the tenant id of create_tenant_key(settings, "Acme")
ACCOUNTS = 300
NOISE = 8  # logins and feature uses per account, besides its subscription and seats
MRR = 500  # cents: 270-odd credits of 10 % stay far below every cap of the program
CHUNK = 10  # accounts per write: the stream takes several seconds
PACE_S = 0.2
SEARCH_S = 4.0  # how long to look for the relay's window before the kill
HOLD_AT = 5 * ACCOUNTS // 6  # the accounts written before the kill, at most
CHAIN = ("segmenter", "offers", "ledger")
INPUTS = {
    "segmenter": (*SEGMENTER_TOPICS, TENANTS),
    "offers": (*OFFERS_TOPICS, TENANTS),
    "ledger": (*LEDGER_TOPICS, TENANTS),
}
OUTPUT = {
    "segmenter": "segments.changes",
    "offers": "offers.decisions",
    "ledger": "credits.decisions",
}
_SCRIPT = Path(sys.executable).with_name("loyalty")  # the console script of this venv
LOYALTY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "services.cli"]


# ------------------------------------------------------------------ the stream


def account_events(i: int, t0: datetime) -> list[tuple[str, Event]]:
    """An account that subscribes to 10 seats and then uses 9 of them (90 %: the
    seat expansion offer), with some product use in between; (topic, event)."""
    account = f"acct-{i:04d}"
    common: dict[str, Any] = {"subject": account, "tenant": TENANT}
    events: list[tuple[str, Event]] = [
        (
            "events.billing",
            SubscriptionUpdated(
                id=f"{account}-sub",
                source="billing",
                type="billing.subscription_updated",
                time=t0,
                data=SubscriptionUpdatedData(
                    plan="business",
                    interval="month",
                    seats_purchased=10,
                    mrr=Money(amount=MRR, currency="USD"),
                    renewal_date=(t0 + timedelta(days=200)).date(),
                    status="active",
                ),
                **common,
            ),
        )
    ]
    for n in range(NOISE):
        at = t0 + timedelta(seconds=20 * (n + 1))
        noise: Event
        if n % 2:
            noise = FeatureUsed(
                id=f"{account}-use-{n}",
                source="app",
                type="product.feature_used",
                time=at,
                data=FeatureUsedData(user_id=f"u{n}", feature="dashboards"),
                **common,
            )
        else:
            noise = Login(
                id=f"{account}-login-{n}",
                source="app",
                type="product.login",
                time=at,
                data=LoginData(user_id=f"u{n}"),
                **common,
            )
        events.append(("events.product", noise))
    events.append(
        (
            "events.product",
            SeatsChanged(
                id=f"{account}-seats",
                source="app",
                type="product.seats_changed",
                time=t0 + timedelta(minutes=5),
                data=SeatsChangedData(seats_used=9),
                **common,
            ),
        )
    )
    return events


@dataclass
class Stream:
    """Writes the accounts' events chunk by chunk, paced, and counts what it wrote.
    The last sixth waits for ``resume``: whenever the kill comes, it comes while the
    stream is still being written, and the rest arrives while the victim is down."""

    settings: Settings
    t0: datetime
    written: int = 0
    total: int = ACCOUNTS * (NOISE + 2)
    resume: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        producer = make_producer(self.settings.kafka_bootstrap)
        await producer.start()
        try:
            for first in range(0, ACCOUNTS, CHUNK):
                if first >= HOLD_AT and not self.resume.is_set():
                    await asyncio.wait_for(self.resume.wait(), 90)
                sent = []
                for i in range(first, min(first + CHUNK, ACCOUNTS)):
                    for topic, event in account_events(i, self.t0):
                        m = encode(event)
                        sent.append(
                            await producer.send(
                                self.settings.topic_prefix + topic,
                                m.value,
                                key=m.key,
                                headers=m.headers,
                            )
                        )
                await asyncio.gather(*sent)  # acks=all: on the broker
                self.written += len(sent)
                await asyncio.sleep(PACE_S)
        finally:
            await producer.stop()


# ------------------------------------------------------------------ processes


@dataclass
class Served:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def service_env(settings: Settings) -> dict[str, str]:
    """The settings of this test for a ``loyalty serve`` process, as variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(
        LOYALTY_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        LOYALTY_DATABASE_URL=settings.database_url.get_secret_value(),
        LOYALTY_TOPIC_PREFIX=settings.topic_prefix,
        LOYALTY_PARTITIONS=str(settings.partitions),
        LOYALTY_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        LOYALTY_CONSUMER_POLL_MS=str(settings.consumer_poll_ms),
        LOYALTY_TICK_INTERVAL="0s",
        # the events carry their own (past) times: fold them in event time
        LOYALTY_SEGMENTER_CLOCK="event",
    )
    return env


def serve(name: str, env: dict[str, str], logs: Path) -> Served:
    port = free_port()
    log = logs / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*LOYALTY, "serve", name, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no orphan if this test process dies
        )
    return Served(name, port, proc, log)


async def wait_ready(served: Served, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if served.proc.poll() is not None:
                raise AssertionError(
                    f"{served.name} exited with {served.proc.returncode}:\n{served.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.get(f"http://127.0.0.1:{served.port}/ready")
                if resp.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{served.name} not ready in {timeout_s}s:\n{served.tail()}")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def processes(env: dict[str, str], logs: Path) -> AsyncIterator[dict[str, Served]]:
    """The chain's processes by name (a test may replace one); all killed at the end."""
    running: dict[str, Served] = {}
    started: list[Served] = []
    try:
        for name in CHAIN:
            running[name] = serve(name, env, logs)
            started.append(running[name])
        yield running
    finally:
        started.extend(s for s in running.values() if s not in started)
        for s in started:
            if s.proc.poll() is None:
                s.proc.kill()
        for s in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(10)


# ------------------------------------------------------------------ topics and tables


async def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, up to the high watermark its fetches report (never
    ``end_offsets()``: the embedded broker's is wrong). The consumer is new, so its
    watermarks are from after the call: a complete read of what was there."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parts = consumer.partitions_for_topic(topic)
        while not parts:
            if loop.time() > deadline:
                raise AssertionError(f"no topic {topic}")
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            ends = [consumer.highwater(tp) for tp in tps]
            if None not in ends and all(
                [await consumer.position(tp) >= end for tp, end in zip(tps, ends, strict=True)]
            ):
                return records
            if loop.time() > deadline:
                raise AssertionError(f"{topic} not read to its end in {timeout_s}s")
    finally:
        await consumer.stop()


def ends_of(records: Iterable[ConsumerRecord[bytes, bytes]]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        ends[key] = max(ends.get(key, 0), r.offset + 1)
    return ends


async def wait_caught_up(settings: Settings, service: str, timeout_s: float = 90) -> None:
    """Waits until ``service`` has applied every record now on its input topics (its
    offsets in Postgres, stored with the effects, are at their ends) and published
    everything it queued (its outbox is empty)."""
    ends: dict[tuple[str, int], int] = {}
    for topic in INPUTS[service]:
        ends |= ends_of(await read_to_end(settings.kafka_bootstrap, settings.topic_prefix + topic))
    engine = engine_for(settings, service, pool_size=1)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            async with engine.connect() as conn:
                stored = {
                    (t, p): o
                    for t, p, o in (
                        await conn.execute(
                            text("SELECT topic, partition, next_offset FROM consumer_offsets")
                        )
                    ).all()
                }
                queued = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            behind = {tp: end for tp, end in ends.items() if stored.get(tp, 0) < end}
            if not behind and queued == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{service} after {timeout_s}s: {len(behind)} partitions behind"
                    f" ({sorted(behind.items())[:4]}, stored {stored}), {queued} outbox rows"
                )
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


@dataclass
class Published:
    """A topic's events by id: each copy of an id must be the same message."""

    events: list[Any]  # the first copy of each id, in topic order per partition
    copies: int  # records beyond the first of their id (republished after the kill)


def published(records: Sequence[ConsumerRecord[bytes, bytes]]) -> Published:
    first: dict[str, ConsumerRecord[bytes, bytes]] = {}
    events = []
    copies = 0
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = decode(r.value, r.headers)
        earlier = first.get(event.id)
        if earlier is None:
            first[event.id] = r
            events.append(event)
            continue
        copies += 1
        assert (earlier.key, earlier.value, list(earlier.headers)) == (
            r.key,
            r.value,
            list(r.headers),
        ), f"two different messages with the id {event.id}: {earlier.value!r} and {r.value!r}"
    return Published(events, copies)


async def watch_outputs(
    settings: Settings, topic: str, seen: set[str], stop: asyncio.Event
) -> None:
    """Collects the ids published on ``topic`` as they come (for the kill's timing)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        physical = settings.topic_prefix + topic
        while not (parts := consumer.partitions_for_topic(physical)):
            if stop.is_set():
                return
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        tps = [TopicPartition(physical, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            for recs in (await consumer.getmany(timeout_ms=100)).values():
                seen.update(dict(r.headers)["ce_id"].decode() for r in recs)
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ the kill


@dataclass
class Kill:
    written: int  # events of the stream written at the kill
    outbox: int  # rows the victim had committed and not yet deleted
    sent: int  # of them, those already on the broker (the relay's window)
    probes: int  # times the victim was stopped and looked at before


async def outbox_ids(conn: AsyncConnection) -> set[str]:
    rows = (await conn.execute(text("SELECT headers FROM outbox"))).scalars().all()
    await conn.rollback()
    return {b64decode(v).decode() for pairs in rows for k, v in pairs if k == "ce_id"}


async def kill_mid_stream(
    settings: Settings, victim: Served, stream: Stream, seen: set[str], threshold: int
) -> Kill:
    """SIGKILLs ``victim`` once ``threshold`` of its outputs are out, and lets the
    stream go on.

    It looks for the worst moment first, for a few seconds: committed outbox rows
    that the relay has sent but not yet deleted (a restart publishes them again).
    Whenever the outbox holds rows it stops the process (SIGSTOP), a few ms later
    each time, and looks; SIGKILL on a hit, else at the next moment the outbox holds
    rows at all (committed, not yet published)."""
    deadline = time.monotonic() + 60
    while len(seen) < threshold:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{victim.name} published {len(seen)} outputs in 60s ({stream.written}"
                f" of {stream.total} events written):\n{victim.tail()}"
            )
        await asyncio.sleep(0.02)
    pid = victim.proc.pid
    engine = engine_for(settings, victim.name, pool_size=1)
    try:
        async with engine.connect() as conn:
            search_until = time.monotonic() + SEARCH_S
            probe = 0
            while time.monotonic() < search_until:
                if not await outbox_ids(conn):
                    continue
                await asyncio.sleep(probe % 5 * 0.002)
                probe += 1
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(0.2)  # for the watcher to read what the broker has
                if await outbox_ids(conn) & seen:
                    break
                os.kill(pid, signal.SIGCONT)
            else:
                fallback_until = time.monotonic() + 2
                while time.monotonic() < fallback_until and not await outbox_ids(conn):
                    pass
            os.kill(pid, signal.SIGKILL)
            written = stream.written
            stream.resume.set()
            victim.proc.wait(10)
            assert victim.proc.returncode == -signal.SIGKILL
            await asyncio.sleep(0.2)  # for the watcher to read what the broker has
            queued = await outbox_ids(conn)
    finally:
        await engine.dispose()
    return Kill(written, len(queued), len(queued & seen), probe)


# ------------------------------------------------------------------ the test


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victim", CHAIN)
async def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(
    settings: Settings, tmp_path: Path, victim: str
) -> None:
    started = time.monotonic()
    key = await create_tenant_key(settings, "Acme")  # creates the topics too
    program = load_offers(settings)
    accounts = [f"acct-{i:04d}" for i in range(ACCOUNTS)]
    held = {a for a in accounts if in_holdout(program, TENANT, a)}
    # the search for the moment of the kill starts once the victim has published a
    # tenth of what it will (at least: an expansion_ready transition each, among
    # others; a decision each; a credit each not held out)
    threshold = {
        "segmenter": len(accounts),
        "offers": len(accounts),
        "ledger": len(accounts) - len(held),
    }[victim] // 10
    t0 = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    prefix = settings.topic_prefix
    env = service_env(settings)

    async with processes(env, tmp_path) as running:
        await asyncio.gather(*(wait_ready(s) for s in running.values()))
        stream = Stream(settings, t0)
        seen: set[str] = set()
        stop_watching = asyncio.Event()
        watcher = asyncio.create_task(watch_outputs(settings, OUTPUT[victim], seen, stop_watching))
        writer = asyncio.create_task(stream.run())
        try:
            kill = await kill_mid_stream(settings, running[victim], stream, seen, threshold)
            killed_at = time.monotonic() - started
            at_kill = published(
                await read_to_end(settings.kafka_bootstrap, prefix + OUTPUT[victim])
            )
            running[victim] = serve(victim, env, tmp_path)
            await wait_ready(running[victim])
            await asyncio.wait_for(writer, 90)
        finally:
            stream.resume.set()
            stop_watching.set()
            writer.cancel()
            await asyncio.gather(watcher, writer, return_exceptions=True)
        for name in CHAIN:  # in chain order: each one's inputs are complete then
            await wait_caught_up(settings, name)
        for served in running.values():
            assert served.proc.poll() is None, f"{served.name} died:\n{served.tail()}"

        outputs = {
            name: published(await read_to_end(settings.kafka_bootstrap, prefix + OUTPUT[name]))
            for name in CHAIN
        }
        # mid-stream for real: the victim had published some of its outputs, not
        # all, and the stream was still being written
        assert 0 < len(at_kill.events) < len(outputs[victim].events), len(at_kill.events)
        assert kill.written < stream.total

        # ---------------------------------------------------------- segments
        changes = outputs["segmenter"].events
        per_account: dict[str, list[Any]] = defaultdict(list)
        for e in changes:
            per_account[e.subject].append(e)
        assert sorted(per_account) == accounts
        expansions = [
            e
            for e in changes
            if e.type == "segment.entered" and e.data.segment == "expansion_ready"
        ]
        assert Counter(e.subject for e in expansions) == Counter(accounts), (
            "expansion_ready entered other than once each"
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{running['segmenter'].port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ) as client:
            for account, transitions in per_account.items():
                members: set[str] = set()
                for t in transitions:  # one account: one partition, in order
                    name = t.data.segment
                    if t.type == "segment.entered":
                        assert name not in members, f"{account} entered {name} twice"
                        members.add(name)
                    else:
                        assert t.type == "segment.exited", t.type
                        assert name in members, f"{account} left {name}, not in it"
                        members.remove(name)
                assert members == set(transitions[-1].data.segments), account
                stored = (await client.get(f"/v1/accounts/{account}")).json()
                assert members == {s["name"] for s in stored["segments"]}, account

        # ---------------------------------------------------------- offers
        # one decision per account, the one of the moment of its expansion_ready
        decisions = outputs["offers"].events
        rule = "seat_expansion_credit"
        assert sorted((d.subject, d.type, d.data.rule, d.id) for d in decisions) == sorted(
            (
                e.subject,
                "offer.held_out" if e.subject in held else "offer.issued",
                rule,
                offer_id(TENANT, e.subject, e.data.cause or e.id, rule),
            )
            for e in expansions
        )
        assert all(d.id == d.data.offer_id for d in decisions)
        issued = {d.data.offer_id: d.subject for d in decisions if d.type == "offer.issued"}

        # ---------------------------------------------------------- credits
        credits = outputs["ledger"].events
        assert sorted(
            (c.type, c.data.offer_id, c.subject, c.data.amount.amount, c.data.amount.currency)
            for c in credits
        ) == sorted(
            ("credit.granted", offer, account, MRR // 10, "USD")
            for offer, account in issued.items()
        )

        # ---------------------------------------------------------- the books
        engine = engine_for(settings, "ledger", pool_size=1)
        try:
            async with engine.connect() as conn:
                booked = (
                    await conn.execute(text("SELECT offer_id, account, amount FROM credits"))
                ).all()
                lines = (
                    await conn.execute(text("SELECT ledger_account, amount, currency FROM entries"))
                ).all()
                unbalanced = (
                    await conn.execute(
                        text(
                            "SELECT txn_id FROM entries GROUP BY txn_id, currency"
                            " HAVING sum(amount) <> 0"
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        assert sorted(tuple(b) for b in booked) == sorted(
            (offer, account, MRR // 10) for offer, account in issued.items()
        )
        assert sorted(tuple(line) for line in lines) == sorted(
            [("reward_expense", MRR // 10, "USD")] * len(issued)
            + [(f"customer_credit:{a}", -(MRR // 10), "USD") for a in issued.values()]
        )
        assert unbalanced == []

        # ---------------------------------------------------------- no quarantine
        for topic in ("events.product", "events.billing", "segments.changes", "offers.decisions"):
            dead = await read_to_end(settings.kafka_bootstrap, f"{prefix}{topic}.dlq")
            assert dead == [], (topic, [dict(r.headers).get("dlq_reason") for r in dead])

    print(
        f"\n{victim} killed at {killed_at:.1f}s with {len(at_kill.events)} of"
        f" {len(outputs[victim].events)} outputs out, {kill.written} of {stream.total}"
        f" events written, {kill.outbox} outbox rows left ({kill.sent} sent; {kill.probes}"
        " probes); copies: "
        + ", ".join(f"{n} {o.copies}" for n, o in outputs.items())
        + f"; {time.monotonic() - started:.1f}s"
    )
