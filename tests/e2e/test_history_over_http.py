"""A tenant's history posted in time order over HTTP, through ingest and the topics,
into a segmenter in event-time mode, ends exactly where `loyalty segments
backfill` of the same file ends: memberships, scores, clock and transitions."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from schemas import Event
from services.cli import create_tenant_key
from services.ingest.config import IngestSettings
from services.runtime.config import Settings
from services.runtime.db import create_engine
from services.runtime.ticks import TICKED_TOPICS
from services.segmenter.app import TOPICS, load
from services.segmenter.backfill import backfill
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.conftest import SettingsFactory
from tests.kafka_helpers import decoded, read_all
from tests.unit.segmenter_events import at, key_action, login, paid, subscribed

BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def history(accounts: int, seed: int = 7) -> list[Event]:
    """Subscriptions, key actions, logins and invoices over four months, in time
    order, every event at its own microsecond."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(accounts):
        a = f"acct-{i:04d}"
        start = rng.uniform(0, 60)
        events.append(subscribed(a, at(start), mrr=rng.choice([2_000, 10_000, 50_000, 250_000])))
        for _ in range(rng.randint(0, 4)):
            events.append(key_action(a, at(start + rng.uniform(0, 60))))
        if rng.random() < 0.5:
            events.append(login(a, at(start + rng.uniform(0, 60))))
        if rng.random() < 0.4:
            events.append(paid(a, at(start + 30), amount=rng.randint(1_000, 90_000)))
    events.sort(key=lambda e: e.time)
    return [
        e.model_copy(update={"time": e.time + timedelta(microseconds=n)})
        for n, e in enumerate(events)
    ]


async def state_of(settings: Settings, tenant: str) -> dict[str, Any]:
    engine = create_engine(settings.async_database_url(), "segmenter")
    try:
        async with engine.connect() as conn:
            accounts = (
                await conn.execute(
                    text(
                        "SELECT account, segments, evaluated_day FROM accounts"
                        " WHERE tenant = :t ORDER BY account"
                    ),
                    {"t": tenant},
                )
            ).all()
            clock = (
                await conn.execute(
                    text(
                        "SELECT watermark, stream_day, breakpoints, accounts FROM tenant_clocks"
                        " WHERE tenant = :t"
                    ),
                    {"t": tenant},
                )
            ).one()
    finally:
        await engine.dispose()
    return {"accounts": [tuple(r) for r in accounts], "clock": tuple(clock)}


def transitions(records: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (e.id, e.type, e.subject, e.data.segment, e.data.as_of, tuple(e.data.segments), e.time)
        for e in decoded(records)
    )


async def test_a_history_posted_in_order_over_http_gives_what_the_backfill_gives(
    settings: Settings, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from services.ingest.app import create_app as ingest_app
    from services.segmenter.app import create_app as segmenter_app

    events = history(1_200)
    assert len(events) > 3_000
    lines = [json.dumps(e.model_dump(mode="json", exclude={"tenant"})) for e in events]
    file = tmp_path / "history.jsonl"
    file.write_text("\n".join(lines) + "\n")

    # the file through `loyalty segments backfill`, into its own database and topics
    reference = SegmenterSettings(**(await make_settings()).model_dump())
    report = await backfill(reference, load(reference), file, "acme")
    assert (report.applied, report.late) == (len(events), 0)
    expected_state = await state_of(reference, "acme")
    expected_changes = transitions(
        await read_all(
            reference.kafka_bootstrap,
            f"{reference.topic_prefix}segments.changes",
            at_least=report.published,
        )
    )
    assert len(expected_changes) == report.transitions > 1_000

    # the same history posted over HTTP, in order, in batches of 1,000
    seg = SegmenterSettings(**{**settings.model_dump(), "segmenter_clock": "event"})
    key = await create_tenant_key(settings, "Acme")
    auth = {"Authorization": f"Bearer {key}", **BATCH}
    apps = [ingest_app(IngestSettings(**settings.model_dump())), segmenter_app(seg)]
    async with running(*apps) as (ingest, _):
        for _ in range(300):
            if (await ingest.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        batches = [lines[i : i + 1_000] for i in range(0, len(lines), 1_000)]
        for batch in batches:
            resp = await ingest.post(
                "/v1/events?ordered=true", content="[" + ",".join(batch) + "]", headers=auth
            )
            assert resp.status_code == 202, resp.text
        rt = runtime_of(apps[1])
        marks = 2 * len(batches) * len(TICKED_TOPICS) * settings.partitions
        total = len(events) + marks
        for _ in range(600):
            if await rt.worker.consumed(TOPICS) >= total:
                break
            await asyncio.sleep(0.1)
        assert await rt.worker.consumed(TOPICS) == total
        async with rt.engine.connect() as conn:
            held = (await conn.execute(text("SELECT count(*) FROM held_events"))).scalar_one()
        assert held == 0
    assert await state_of(seg, "acme") == expected_state
    dlq = await read_all(settings.kafka_bootstrap, f"{settings.topic_prefix}events.product.dlq")
    assert dlq == []
    changes = transitions(
        await read_all(
            settings.kafka_bootstrap,
            f"{settings.topic_prefix}segments.changes",
            at_least=len(expected_changes),
        )
    )
    assert changes == expected_changes
