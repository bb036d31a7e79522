"""Time without traffic: the elected ticker's clock ticks expire a silent tenant's
credit on time, and a replay of the topics, ticks included, decides the same."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from services.cli import create_tenant_key
from services.runtime.config import Settings
from services.runtime.ticks import TICKED_TOPICS
from tests.apps import running, runtime_of
from tests.conftest import SettingsFactory
from tests.kafka_helpers import decoded, produce, read_all
from tests.ledger_harness import offer_issued

INTERVAL = timedelta(seconds=1)


async def books_of(settings: Settings) -> list[tuple[object, ...]]:
    from services.runtime.db import create_engine

    engine = create_engine(settings.async_database_url(), "ledger")
    try:
        async with engine.connect() as conn:
            credits = (
                await conn.execute(
                    text(
                        "SELECT credit_id, amount, redeemed, expired, expires_at FROM credits"
                        " ORDER BY credit_id"
                    )
                )
            ).all()
            entries = (
                await conn.execute(
                    text("SELECT txn_id, ledger_account, amount FROM entries ORDER BY txn_id, line")
                )
            ).all()
    finally:
        await engine.dispose()
    return [tuple(r) for r in credits] + [tuple(r) for r in entries]


async def test_a_silent_tenants_credit_expires_by_the_ticks_and_a_replay_decides_the_same(
    settings: Settings, make_settings: SettingsFactory
) -> None:
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app

    live = Settings(**{**settings.model_dump(), "tick_interval": INTERVAL})
    await create_tenant_key(live, "Acme")
    now = datetime.now(UTC)
    # granted a day ago, valid for one day: it expires a few seconds from now, and
    # nothing else will ever happen in this tenant
    offer = offer_issued(
        "acme", "acct-1", "offer-1", now - timedelta(days=1, seconds=-4), value=1_000, days=1
    )
    credits_topic = f"{live.topic_prefix}credits.decisions"
    apps = [ledger_app(live), offers_app(live)]  # two services compete for the ticker
    async with running(*apps):
        await produce(live.kafka_bootstrap, f"{live.topic_prefix}offers.decisions", [offer])
        found = decoded(
            await read_all(
                live.kafka_bootstrap, credits_topic, at_least=2, timeout_s=60, settle_s=0
            )
        )
        assert [c.type for c in found] == ["credit.granted", "credit.expired"]
        granted, expired = found
        assert granted.data.expires_at == offer.time + timedelta(days=1)
        assert expired.data.credit_id == granted.data.credit_id == "offer-1"
        assert expired.data.amount.amount == 1_000
        assert expired.time == expired.data.expires_at == granted.data.expires_at
        leaders = [runtime_of(a).ticker for a in apps if runtime_of(a).ticker.leading]
        assert len(leaders) == 1 and leaders[0].rounds >= 1
    # the ticks are in the topics: every partition of every input topic got them
    billing = decoded(await read_all(live.kafka_bootstrap, f"{live.topic_prefix}events.billing"))
    per_round: dict[datetime, set[int]] = defaultdict(set)
    for t in billing:
        assert t.type == "clock.tick" and t.tenant == "acme"
        per_round[t.data.round].add(t.data.partition)
    assert per_round and all(p == set(range(live.partitions)) for p in per_round.values())
    assert {t.data.round_size for t in billing} == {len(TICKED_TOPICS) * live.partitions}
    # the tick that expired it came after the expiry, and the one before did not reach it
    rounds = sorted(per_round)
    first_after = next(r for r in rounds if r >= expired.data.expires_at)
    assert first_after - expired.data.expires_at <= INTERVAL + timedelta(seconds=1)

    # a replay: a fresh ledger database reading the same topics, with no ticker
    fresh = await make_settings()
    replay = Settings(
        **{**live.model_dump(), "database_url": fresh.database_url, "tick_interval": timedelta(0)}
    )
    app = ledger_app(replay)
    async with running(app):
        rt = runtime_of(app)
        total = len(billing) + 1
        for _ in range(300):
            if await rt.worker.consumed(["events.billing", "offers.decisions"]) >= total:
                break
            await asyncio.sleep(0.1)
        assert await rt.worker.consumed(["events.billing", "offers.decisions"]) == total
    assert await books_of(replay) == await books_of(live)
    # both published the same decisions: each id twice, with the same content
    published = decoded(await read_all(live.kafka_bootstrap, credits_topic, at_least=4))
    by_id: dict[str, list[object]] = defaultdict(list)
    for e in published:
        by_id[e.id].append(e)
    assert sorted(by_id) == sorted({granted.id, expired.id})
    assert all(len(v) == 2 and v[0] == v[1] for v in by_id.values())
