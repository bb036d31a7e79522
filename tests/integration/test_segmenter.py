"""The segmenter on the real broker and Postgres: segments move in stream time,
the read API answers, and one big batch equals event-by-event processing."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from schemas import Event
from services.cli import create_tenant_key
from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime
from services.runtime.tenants import key_added_event, new_api_key
from services.runtime.ticks import round_ticks
from services.runtime.topics import TENANTS
from services.segmenter.app import TOPICS, create_app, load, spec
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.conftest import SettingsFactory
from tests.kafka_helpers import (
    decoded,
    produce,
    produce_one,
    produce_ticks,
    read_all,
    wait_consumed,
    wait_published,
)
from tests.tenants import create_tenant
from tests.unit.segmenter_events import at, key_action, login, subscribed


def history(tenant: str) -> list[Event]:
    events: list[Event] = []
    for account in ("quiet", "busy"):
        events.append(
            subscribed(account, at(0), tenant=tenant, seats=20 if account == "quiet" else 120)
        )
        for d in range(15):
            events += [
                key_action(account, at(d * 2, 1), tenant=tenant),
                key_action(account, at(d * 2, 2), tenant=tenant),
            ]
    events += [login("busy", at(d, 3), tenant=tenant) for d in range(30, 75)]
    events.sort(key=lambda e: e.time)
    return events


async def feed(settings: Settings, events: list[Event]) -> None:
    """Event-time mode needs one ordered stream (see docs/segments.md): the segmenter
    folds whatever type arrives on any of its topics, so a replay goes to one topic."""
    await produce(settings.kafka_bootstrap, f"{settings.topic_prefix}events.product", events)


async def until_consumed(rt: ServiceRuntime, n: int, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        done = await rt.worker.consumed(TOPICS)
        if done >= n:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"consumed {done} of {n}")
        await asyncio.sleep(0.2)


async def test_segments_move_in_stream_time_and_the_api_shows_them(settings: Settings) -> None:
    local = SegmenterSettings(
        **{**settings.model_dump(), "segmenter_clock": "event", "partitions": 1}
    )
    key = await create_tenant_key(local, "Acme")
    events = history("acme")
    await feed(local, events)
    app = create_app(local)
    async with running(app) as (client,):
        await until_consumed(runtime_of(app), len(events))
        auth = {"Authorization": f"Bearer {key}"}
        for _ in range(100):  # the tenant key arrives on its own topic
            resp = await client.get("/v1/accounts/quiet", headers=auth)
            if resp.status_code != 401:
                break
            await asyncio.sleep(0.1)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        names = {s["name"] for s in body["segments"]}
        assert "at_risk" in names and "power_users" not in names and "tier_silver" in names
        assert body["features"]["days_since_last_activity"] >= 30
        assert set(body["rfm"]) == {"r", "f", "m", "cell"}

        sizes = {
            s["name"]: s["size"]
            for s in (await client.get("/v1/segments", headers=auth)).json()["segments"]
        }
        assert sizes["at_risk"] == 1 and sizes["tier_platinum"] == 1
        page1 = (
            await client.get("/v1/segments/member_active/members?limit=1", headers=auth)
        ).json()
        page2 = (
            await client.get(
                f"/v1/segments/member_active/members?limit=1&after={page1['next']}", headers=auth
            )
        ).json()
        assert [m["account"] for m in page1["members"] + page2["members"]] == ["busy", "quiet"]
        assert (await client.get("/v1/segments/nope/members", headers=auth)).status_code == 404
        assert (await client.get("/v1/accounts/nobody", headers=auth)).status_code == 404
        # another tenant's key, once the segmenter has applied its record: known, and
        # still shown nothing of acme's
        other = new_api_key()
        where = await produce_one(
            local.kafka_bootstrap,
            f"{local.topic_prefix}{TENANTS}",
            key_added_event("Other Co", other),
        )
        await wait_consumed(runtime_of(app), TENANTS, *where)
        resp = await client.get("/v1/accounts/quiet", headers={"Authorization": f"Bearer {other}"})
        assert resp.status_code == 404  # tenant-scoped
        await wait_published(runtime_of(app))  # every change is on the topic

    changes = decoded(
        await read_all(local.kafka_bootstrap, f"{local.topic_prefix}segments.changes", at_least=1)
    )
    quiet = [(c.type, c.data.segment) for c in changes if c.subject == "quiet"]
    assert quiet.count(("segment.entered", "at_risk")) == 1
    assert quiet.index(("segment.exited", "power_users")) < quiet.index(
        ("segment.entered", "at_risk")
    )


async def run_history(
    settings: Settings, events: list[Event], max_records: int
) -> tuple[list[Any], list[Any]]:
    local = SegmenterSettings(
        **{
            **settings.model_dump(),
            "segmenter_clock": "event",
            "partitions": 1,
            "batch_max_records": max_records,
        }
    )
    await create_tenant(local, "acme")
    await feed(local, events)
    rt = ServiceRuntime(spec(load(local), None), local)
    await rt.start()
    try:
        await until_consumed(rt, len(events))
        async with rt.engine.connect() as conn:
            states = (
                await conn.execute(
                    text("SELECT tenant, account, state FROM accounts ORDER BY 1, 2")
                )
            ).all()
    finally:
        await rt.stop()
    changes = await read_all(
        local.kafka_bootstrap, f"{local.topic_prefix}segments.changes", at_least=1
    )
    return [tuple(s) for s in states], sorted(
        (bytes(c.key), bytes(c.value), sorted(c.headers)) for c in changes
    )


async def test_one_batch_equals_event_by_event_on_the_real_stack(
    make_settings: SettingsFactory,
) -> None:
    events = history("acme")
    whole = await run_history(await make_settings(), events, max_records=5000)
    # a second, independent stack (topics and database): one record per batch
    single = await run_history(await make_settings(), events, max_records=1)
    assert whole[0] == single[0]
    assert whole[1] == single[1] and len(whole[1]) > 10


async def test_live_mode_rolls_days_over_when_a_round_of_ticks_is_read_everywhere(
    settings: Settings,
) -> None:
    """No event for 31 days: a round of clock ticks then makes the silent account at
    risk — but only once the round has been read on every input partition (a
    partition whose tick is still unread may hold a backlog from before)."""
    from datetime import UTC, datetime, timedelta

    local = SegmenterSettings(**{**settings.model_dump(), "segmenter_clock": "live"})
    now = datetime.now(UTC)
    events: list[Event] = [subscribed("acct", now - timedelta(minutes=30), tenant="acme")]
    events += [
        key_action("acct", now - timedelta(minutes=20 - i), tenant="acme") for i in range(10)
    ]
    later = now + timedelta(days=31)
    partitions = dict.fromkeys(TOPICS, local.partitions)
    ticks = round_ticks("acme", later, partitions)
    assert len(ticks) == 3 * local.partitions
    app = create_app(local)
    await create_tenant(local, "acme")
    async with running(app):  # creates the topics with their partitions
        rt = runtime_of(app)
        await feed(local, events)
        await until_consumed(rt, len(events))

        async def segments_and_day() -> tuple[list[str], int]:
            async with rt.engine.connect() as conn:
                segments, day = (
                    await conn.execute(
                        text(
                            "SELECT a.segments, c.stream_day FROM accounts a JOIN tenant_clocks c"
                            " USING (tenant) WHERE a.account = 'acct'"
                        )
                    )
                ).one()
            return list(segments), int(day)

        _, first_day = await segments_and_day()
        # all ticks of the round but one: the day may not end yet
        await produce_ticks(local.kafka_bootstrap, local.topic_prefix, ticks[:-1])
        await until_consumed(rt, len(events) + len(ticks) - 1)
        segments, day = await segments_and_day()
        assert day == first_day and "at_risk" not in segments
        # the last tick of the round (and the same round again: nothing more)
        await produce_ticks(local.kafka_bootstrap, local.topic_prefix, ticks[-1:] + ticks[:2])
        await until_consumed(rt, len(events) + len(ticks) + 2)
        for _ in range(100):
            segments, day = await segments_and_day()
            if "at_risk" in segments:
                break
            await asyncio.sleep(0.1)
        assert "at_risk" in segments
        assert day == (later - timedelta(hours=1)).date().toordinal()
        await wait_published(rt)  # every change is on the topic
    changes = decoded(
        await read_all(local.kafka_bootstrap, f"{local.topic_prefix}segments.changes", at_least=1)
    )
    at_risk = [c for c in changes if c.data.segment == "at_risk"]
    assert [c.type for c in at_risk] == ["segment.entered"]
