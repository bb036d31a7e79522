"""HTTP -> ingest -> Kafka -> segmenter -> offers -> ledger -> credits.decisions,
all four services on the real broker and Postgres."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from services.cli import create_tenant_key
from services.ingest.config import IngestSettings
from services.runtime.codec import decode
from services.runtime.config import Settings
from services.segmenter.app import TOPICS as SEGMENTER_TOPICS
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.kafka_helpers import (
    decoded,
    produce,
    produce_one,
    read_all,
    wait_consumed,
    wait_published,
)
from tests.ledger_harness import tick

BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def the_two_events() -> list[dict[str, object]]:
    # the segmenter runs in live mode: event times near the wall clock, as in production
    now = datetime.now(UTC)
    return [
        {
            "specversion": "1.0",
            "id": "sub-1",
            "source": "billing",
            "subject": "acct-42",
            "type": "billing.subscription_updated",
            "time": (now - timedelta(minutes=5)).isoformat(),
            "data": {
                "plan": "business",
                "interval": "month",
                "seats_purchased": 10,
                "mrr": {"amount": 50000, "currency": "USD"},
                "renewal_date": (now + timedelta(days=200)).date().isoformat(),
                "status": "active",
            },
        },
        {
            "specversion": "1.0",
            "id": "seats-1",
            "source": "app",
            "subject": "acct-42",
            "type": "product.seats_changed",
            "time": now.isoformat(),
            "data": {"seats_used": 9},
        },
    ]


async def mark(settings: Settings, topic: str) -> tuple[str, int, int]:
    """Copies the last record read of the logical ``topic`` to the end of its
    partition, as a marker its consumers drop as a repeat (the same event id); returns
    (topic, partition, offset). Every record of this test is acct-42's: on one
    partition of each topic, so a marker there follows all of them."""
    physical = f"{settings.topic_prefix}{topic}"
    last = (await read_all(settings.kafka_bootstrap, physical, at_least=1, settle_s=0))[-1]
    partition, offset = await produce_one(
        settings.kafka_bootstrap,
        physical,
        decode(last.value, last.headers),
        partition=last.partition,
    )
    return topic, partition, offset


async def test_seat_use_at_90_percent_grants_one_credit_of_10_percent_of_mrr(
    settings: Settings,
) -> None:
    from services.ingest.app import create_app as ingest_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app

    key = await create_tenant_key(settings, "Acme")
    apps = [
        ingest_app(IngestSettings(**settings.model_dump())),
        segmenter_app(SegmenterSettings(**settings.model_dump())),
        offers_app(settings),
        ledger_app(settings),
    ]
    credits_topic = f"{settings.topic_prefix}credits.decisions"
    async with running(*apps) as clients:
        for client in clients:
            for _ in range(300):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("a service never became ready")
            # what the alert LoyaltyServiceNotReady watches says the same as /ready
            assert "\nloyalty_ready 1.0\n" in (await client.get("/metrics")).text
        auth = {"Authorization": f"Bearer {key}", **BATCH}
        started = time.perf_counter()
        resp = await clients[0].post(
            "/v1/events", content=json.dumps(the_two_events()), headers=auth
        )
        assert resp.status_code == 202, resp.text
        credits = decoded(
            await read_all(
                settings.kafka_bootstrap, credits_topic, at_least=1, timeout_s=60, settle_s=0
            )
        )
        latency = time.perf_counter() - started
        print(f"\nPOST -> credit.granted: {latency * 1000:.0f} ms")
        assert [c.type for c in credits] == ["credit.granted"]
        granted = credits[0]
        assert granted.subject == "acct-42" and granted.tenant == "acme"
        assert granted.data.amount.amount == 5000
        assert granted.data.amount.currency == "USD"

        # the same two events again (same ids): nothing new anywhere
        resp = await clients[0].post(
            "/v1/events", content=json.dumps(the_two_events()), headers=auth
        )
        assert resp.status_code == 202
        product = f"{settings.topic_prefix}events.product"
        assert len(await read_all(settings.kafka_bootstrap, product, at_least=2)) == 2
        seg, offers, ledger = (runtime_of(app) for app in apps[1:])
        for _ in range(100):  # wait until the segmenter has consumed the repeats
            stored = await seg.worker.consumed(SEGMENTER_TOPICS)
            if stored >= 4:
                break
            await asyncio.sleep(0.1)
        assert stored == 4
        # nor downstream: each service in turn has read past a marker written after
        # all its upstream published (its outbox is empty), and published what it queued
        await wait_published(seg)
        marks = [
            await mark(settings, "events.product"),
            await mark(settings, "events.billing"),
            await mark(settings, "segments.changes"),
        ]
        for topic, partition, offset in marks:
            await wait_consumed(offers, topic, partition, offset)
        await wait_published(offers)
        marks = [*marks[1:], await mark(settings, "offers.decisions")]  # the ledger's topics
        for topic, partition, offset in marks:
            await wait_consumed(ledger, topic, partition, offset)
        await wait_published(ledger)
        credits = await read_all(settings.kafka_bootstrap, credits_topic, at_least=1)
        assert len(credits) == 1

        async with runtime_of(apps[3]).engine.connect() as conn:
            booked = (
                await conn.execute(
                    text("SELECT ledger_account, amount, currency FROM entries ORDER BY line")
                )
            ).all()
        assert [tuple(r) for r in booked] == [
            ("reward_expense", 5000, "USD"),
            ("customer_credit:acct-42", -5000, "USD"),
        ]

        # billing applies 20.00 of the credit to an invoice: a redemption
        ledger = clients[3]
        applied = {
            "specversion": "1.0",
            "id": "applied-1",
            "source": "billing",
            "subject": "acct-42",
            "type": "billing.credit_applied",
            "time": datetime.now(UTC).isoformat(),
            "data": {
                "credit_id": granted.data.credit_id,
                "invoice_id": "inv-1",
                "amount": {"amount": 2000, "currency": "USD"},
            },
        }
        resp = await clients[0].post("/v1/events", content=json.dumps([applied]), headers=auth)
        assert resp.status_code == 202, resp.text
        reader = {"Authorization": f"Bearer {key}"}
        # generous: on a loaded 2-core machine a consumer group may rebalance meanwhile
        for _ in range(900):
            statement = (await ledger.get("/v1/accounts/acct-42/credits", headers=reader)).json()
            if statement["credits"][0]["redemptions"]:
                break
            await asyncio.sleep(0.1)
        if statement["balance"] != {"USD": 3000}:  # say why, for the next person
            rt = runtime_of(apps[3])
            dlq = await read_all(
                settings.kafka_bootstrap,
                f"{settings.topic_prefix}events.billing.dlq",
                timeout_s=3,
            )
            reasons = [dict(r.headers or ()).get("dlq_reason") for r in dlq]
            counts = {
                s.name: s.value
                for m in rt.metrics.registry.collect()
                for s in m.samples
                if "billing" in str(s.labels.get("topic", ""))
            }
            billing = await read_all(
                settings.kafka_bootstrap, f"{settings.topic_prefix}events.billing", timeout_s=3
            )
            async with rt.engine.connect() as conn:
                offsets = (await conn.execute(text("SELECT * FROM consumer_offsets"))).all()
                moves = (await conn.execute(text("SELECT * FROM credit_moves"))).all()
            raise AssertionError(
                f"billing records {[(r.partition, r.offset, r.key) for r in billing]};"
                f" stored offsets {[tuple(o) for o in offsets]}; moves {moves};"
                f" positions {rt.worker._positions}; assigned {rt.worker.assigned};"
                f" redemption not booked: balance {statement['balance']}; ledger read"
                f" {await rt.worker.consumed(['events.billing'])} billing records,"
                f" rewinds {rt.worker.rewinds}, dead letters {reasons}, counters {counts}"
            )
        [credit] = statement["credits"]
        assert [r["amount"] for r in credit["redemptions"]] == [2000]
        # by hand: one credit of 50.00, 20.00 redeemed -> 30.00 outstanding, in the
        # account's tier (10 seats: silver) and in the month the credit expires (90 days)
        expires = granted.data.expires_at
        assert expires is not None
        liability = (await ledger.get("/v1/reports/liability", headers=reader)).json()
        assert liability["liability"] == [
            {
                "dimension": "tier",
                "key": "tier_silver",
                "currency": "USD",
                "outstanding": 3000,
                "credits": 1,
            },
            {
                "dimension": "expiry_month",
                "key": expires.strftime("%Y-%m"),
                "currency": "USD",
                "outstanding": 3000,
                "credits": 1,
            },
        ]

        # billing's stream moves past the expiry: the 30.00 left is breakage
        later = tick("acme", "acct-42", "paid-later", expires + timedelta(days=1))
        # it arrives then, as far as its record says: an event dated more than the
        # clock skew ahead of its arrival would be dead-lettered, not move the clock
        arrives = int(later.time.timestamp() * 1000)
        await produce(
            settings.kafka_bootstrap,
            f"{settings.topic_prefix}events.billing",
            [later],
            timestamp_ms=arrives,
        )
        for _ in range(300):
            report = (await ledger.get("/v1/reports/credits", headers=reader)).json()
            if report["credits"][0]["expired"]:
                break
            await asyncio.sleep(0.1)
        assert report["credits"] == [
            {
                "currency": "USD",
                "credits": 1,
                "granted": 5000,
                "redeemed": 2000,
                "expired": 3000,
                "outstanding": 0,
                "redemption_rate": 0.4,
                "breakage_rate": 0.6,
            }
        ]
        csv_text = (await ledger.get("/v1/reports/credits?format=csv", headers=reader)).text
        assert csv_text.splitlines()[1].startswith("USD,1,5000,2000,3000,0,0.4,0.6")
        statement = (await ledger.get("/v1/accounts/acct-42/credits", headers=reader)).json()
        assert statement["balance"] == {"USD": 0}
        assert [e["amount"] for e in statement["credits"][0]["expiries"]] == [3000]
