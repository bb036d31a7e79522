"""What a producer on Kafka can write that ingest would have refused: events of a
tenant that was never created, negative money, records that are no CloudEvent of
this system. All four consuming services on the real broker and Postgres.

Every bad record sits on one partition, after account C's credit and ahead of
account B's events; ghost's records even name C's account id. Each consumer
dead-letters each bad record with its reason and goes on: B still reaches its
segment, its offer and its credit; C's offer and credit are as they were; nothing
of ghost reaches any table of any service; and ``/metrics`` names no tenant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from schemas import Event, Money
from schemas.events import (
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.offers.app import load as load_offers_program
from services.offers.domain.engine import in_holdout
from services.runtime.codec import encode, encode_fields
from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.e2e.test_bad_records import partition_of
from tests.kafka_helpers import decoded, produce_one, produce_raw, read_all, wait_consumed
from tests.tenants import create_tenant

B = "acct-42"


def subscribed(tenant: str, account: str, event_id: str, at: datetime) -> SubscriptionUpdated:
    return SubscriptionUpdated(
        id=event_id,
        source="billing",
        type="billing.subscription_updated",
        subject=account,
        tenant=tenant,
        time=at,
        data=SubscriptionUpdatedData(
            plan="business",
            interval="month",
            seats_purchased=10,
            mrr=Money(amount=50000, currency="USD"),
            renewal_date=(at + timedelta(days=200)).date(),
            status="active",
        ),
    )


def seats(tenant: str, account: str, event_id: str, at: datetime) -> SeatsChanged:
    return SeatsChanged(
        id=event_id,
        source="app",
        type="product.seats_changed",
        subject=account,
        tenant=tenant,
        time=at,
        data=SeatsChangedData(seats_used=9),  # of 10: seat use at 90 %
    )


def raw(
    event_type: str, event_id: str, account: str, at: datetime, data: dict[str, Any]
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A record as the codec writes it, from plain JSON: no model validates it."""
    msg = encode_fields(
        type=event_type,
        id=event_id,
        source="billing",
        subject=account,
        tenant="acme",
        time=at,
        data=data,
    )
    return msg.key, msg.value, msg.headers


def without(headers: list[tuple[str, bytes]], name: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers if k != name]


def replaced(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == name else v) for k, v in headers]


async def all_ready(clients: Sequence[httpx.AsyncClient]) -> None:
    for client in clients:
        for _ in range(300):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a service never became ready")


async def credit_for(settings: Settings, account: str) -> Any:
    topic = f"{settings.topic_prefix}credits.decisions"
    for _ in range(120):
        credits = decoded(await read_all(settings.kafka_bootstrap, topic, settle_s=0, timeout_s=2))
        found = [c for c in credits if c.subject == account]
        if found:
            return found[0]
        await asyncio.sleep(0.25)
    raise AssertionError(f"no credit for {account}")


async def rows_of_tenant(rt: ServiceRuntime, tenant: str) -> dict[str, int]:
    """Every table of the service's schema with a ``tenant`` column -> its rows of
    ``tenant``: state, dedupe and clocks alike."""
    async with rt.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.columns"
                    " WHERE table_schema = :s AND column_name = 'tenant'"
                ),
                {"s": rt.spec.db_schema},
            )
        ).scalars()
        counts = {}
        for table in tables:
            counts[table] = (
                await conn.execute(
                    text(f'SELECT count(*) FROM "{table}" WHERE tenant = :t'), {"t": tenant}
                )
            ).scalar_one()
    return counts


def dead_letters(records: Sequence[Any]) -> dict[tuple[str, str], str]:
    """(service, event id) -> reason."""
    out = {}
    for r in records:
        h = dict(r.headers)
        out[(h["dlq_service"].decode(), h["ce_id"].decode())] = h["dlq_reason"].decode()
    return out


async def test_unknown_tenants_negative_money_and_undecodable_records_change_nothing(
    settings: Settings,
) -> None:
    from services.insights.app import create_app as insights_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app

    n = settings.partitions
    here = partition_of("acme", B, n)
    program = load_offers_program(settings)
    candidates = [f"acct-{i}" for i in range(2000) if f"acct-{i}" != B]
    # C: acme's account with an offer and a credit, whose id ghost's records name too
    c = next(
        a
        for a in candidates
        if partition_of("acme", a, n) == here == partition_of("ghost", a, n)
        and not in_holdout(program, "acme", a)
    )
    a = next(x for x in candidates if x != c and partition_of("acme", x, n) == here)

    key = await create_tenant(settings, "acme")
    apps = [
        segmenter_app(SegmenterSettings(**settings.model_dump())),
        offers_app(settings),
        ledger_app(settings),
        insights_app(settings),
    ]
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    billing, product = f"{prefix}events.billing", f"{prefix}events.product"
    reader = {"Authorization": f"Bearer {key}"}
    async with running(*apps) as clients:
        await all_ready(clients)
        segmenter, offers, ledger, insights = (runtime_of(app) for app in apps)
        now = datetime.now(UTC)

        # C first: its offer and credit, as they stand before any bad record
        await produce_one(
            bootstrap, billing, subscribed("acme", c, "c-sub", now - timedelta(minutes=9))
        )
        await produce_one(
            bootstrap, product, seats("acme", c, "c-seats", now - timedelta(minutes=8))
        )
        c_credit = await credit_for(settings, c)
        c_offers = (await clients[1].get(f"/v1/accounts/{c}/offers", headers=reader)).json()
        c_credits = (await clients[2].get(f"/v1/accounts/{c}/credits", headers=reader)).json()
        assert c_credits["balance"] == {"USD": 5000}

        # the bad records, all on B's partition
        at = now - timedelta(minutes=7)
        typed: list[tuple[str, Event]] = [
            # (a) a tenant that was never created, naming C's account
            (billing, subscribed("ghost", c, "ghost-sub", at)),
            (product, seats("ghost", c, "ghost-seats", at)),
        ]
        for topic, event in typed:
            await produce_one(bootstrap, topic, event)
        sub = json.loads(encode(subscribed("acme", a, "x", at)).value)
        paid = {"invoice_id": "inv-a", "amount": {"amount": 100, "currency": "USD"}}
        key_a, good_value, good_headers = raw("billing.invoice_paid", "paid", a, at, paid)
        bad: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
            # (b) negative money, which the models would accept: an MRR, a redemption
            raw(
                "billing.subscription_updated",
                "negative-mrr",
                a,
                at,
                {**sub, "mrr": {"amount": -50000, "currency": "USD"}},
            ),
            raw(
                "billing.credit_applied",
                "negative-redemption",
                c,
                at,
                {
                    "credit_id": c_credit.data.credit_id,
                    "invoice_id": "inv-c",
                    "amount": {"amount": -1000, "currency": "USD"},
                },
            ),
            # (c) not this system's CloudEvents: garbage, another spec version, no type
            (key_a, b"\x00\xff{garbage", good_headers),
            (key_a, good_value, replaced(good_headers, "ce_specversion", b"2.0")),
            (key_a, good_value, without(good_headers, "ce_type")),
        ]
        ids = ["negative-mrr", "negative-redemption", "garbage", "specversion-2", "no-type"]
        for (k, v, h), event_id in zip(bad, ids, strict=True):
            await produce_raw(bootstrap, billing, k, v, replaced(h, "ce_id", event_id.encode()))
        # A's valid seat count: without its (refused) subscription, no seat use at 90 %
        await produce_one(bootstrap, product, seats("acme", a, "a-seats", at))

        # B, after them on the same partition: exactly C's path
        _, b_sub = await produce_one(
            bootstrap, billing, subscribed("acme", B, "b-sub", now - timedelta(minutes=5))
        )
        _, b_seats = await produce_one(bootstrap, product, seats("acme", B, "b-seats", now))
        b_credit = await credit_for(settings, B)
        assert (b_credit.type, b_credit.data.amount.amount) == ("credit.granted", 5000)

        # every consumer has gone past every bad record (B's follow them)
        for rt in (segmenter, offers, ledger, insights):
            await wait_consumed(rt, "events.billing", here, b_sub)
            if rt is not ledger:
                await wait_consumed(rt, "events.product", here, b_seats)
            assert rt.worker.rewinds == 0, rt.spec.name  # nothing was retried on the way

        # each dead-lettered each bad record of the topics it reads, with its reason
        billing_dlq = dead_letters(await read_all(bootstrap, f"{billing}.dlq", at_least=24))
        product_dlq = dead_letters(await read_all(bootstrap, f"{product}.dlq", at_least=3))
        billing_readers = ("segmenter", "offers", "ledger", "insights")
        assert set(billing_dlq) == {(s, i) for s in billing_readers for i in ["ghost-sub", *ids]}
        assert set(product_dlq) == {(s, "ghost-seats") for s in ("segmenter", "offers", "insights")}
        for (_, event_id), reason in [*billing_dlq.items(), *product_dlq.items()]:
            if event_id.startswith("ghost-"):
                assert reason == "unknown tenant 'ghost'"
            elif event_id == "negative-mrr":
                assert reason == "data.mrr.amount: must not be negative; got -50000"
            elif event_id == "negative-redemption":
                assert reason == "data.amount.amount: must not be negative; got -1000"
            elif event_id == "garbage":
                assert reason.startswith("data is not JSON"), reason
            elif event_id == "specversion-2":
                assert "specversion" in reason, reason
            else:
                assert reason == "not a CloudEvent: missing header(s) ce_type", reason

        # B: its segment, its offer, its credit
        segments = (await clients[0].get(f"/v1/accounts/{B}", headers=reader)).json()
        assert "expansion_ready" in {s["name"] for s in segments["segments"]}
        made = (await clients[1].get(f"/v1/accounts/{B}/offers", headers=reader)).json()
        assert [o["status"] for o in made["offers"]] == ["issued"], made
        statement = (await clients[2].get(f"/v1/accounts/{B}/credits", headers=reader)).json()
        assert statement["balance"] == {"USD": 5000}
        # C as it was; A (negative MRR) got nothing; no other offer or credit anywhere
        assert (await clients[1].get(f"/v1/accounts/{c}/offers", headers=reader)).json() == c_offers
        assert (
            await clients[2].get(f"/v1/accounts/{c}/credits", headers=reader)
        ).json() == c_credits
        segments = (await clients[0].get(f"/v1/accounts/{a}", headers=reader)).json()
        assert "expansion_ready" not in {s["name"] for s in segments["segments"]}
        decisions = decoded(await read_all(bootstrap, f"{prefix}offers.decisions", at_least=2))
        assert sorted((d.type, d.subject) for d in decisions) == [
            ("offer.issued", B),
            ("offer.issued", c),
        ]
        credits = decoded(await read_all(bootstrap, f"{prefix}credits.decisions", at_least=2))
        assert sorted((d.type, d.subject, d.data.amount.amount) for d in credits) == [
            ("credit.granted", B, 5000),
            ("credit.granted", c, 5000),
        ]

        # nothing of ghost in any table of any service, dedupe included
        for rt in (segmenter, offers, ledger, insights):
            counts = await rows_of_tenant(rt, "ghost")
            assert counts and not any(counts.values()), (rt.spec.name, counts)
            assert (await rows_of_tenant(rt, "acme"))["processed_events"] > 0

        # /metrics: how the system runs, never whose data it holds
        for client in clients:
            metrics = (await client.get("/metrics")).text
            assert "loyalty_messages_dead_lettered_total" in metrics
            assert "acme" not in metrics and "ghost" not in metrics
