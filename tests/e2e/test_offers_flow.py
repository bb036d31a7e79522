"""Segmenter -> offers -> ledger on the real broker and Postgres: the renewal and
seat-expansion paths, a held-out account, explanations, and the offer lifecycle
over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Money
from schemas.events import (
    Event,
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.cli import create_tenant_key
from services.offers.app import load as load_offers
from services.offers.domain.engine import in_holdout
from services.runtime.config import Settings
from services.segmenter.config import SegmenterSettings
from tests.apps import running
from tests.kafka_helpers import decoded, produce, read_all

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def subscribed(account: str, seats: int, mrr: int, interval: str, renews_in: int) -> Event:
    return SubscriptionUpdated(
        id=f"sub-{account}",
        source="billing",
        type="billing.subscription_updated",
        subject=account,
        tenant="acme",
        time=T0,
        data=SubscriptionUpdatedData(
            plan="business",
            interval=interval,  # type: ignore[arg-type]
            seats_purchased=seats,
            mrr=Money(amount=mrr, currency="USD"),
            renewal_date=(T0 + timedelta(days=renews_in)).date(),
            status="active",
        ),
    )


def seats_used(account: str, used: int) -> Event:
    return SeatsChanged(
        id=f"seats-{account}",
        source="app",
        type="product.seats_changed",
        subject=account,
        tenant="acme",
        time=T0 + timedelta(minutes=5),
        data=SeatsChangedData(seats_used=used),
    )


async def test_renewal_and_seat_expansion_offers_reach_billing_except_held_out(
    settings: Settings,
) -> None:
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app

    program = load_offers(settings)
    held = next(f"acct-{i}" for i in range(1000) if in_holdout(program, "acme", f"acct-{i}"))
    seats_account = next(
        f"acct-{i}" for i in range(1000) if not in_holdout(program, "acme", f"acct-{i}")
    )
    assert not in_holdout(program, "acme", "renewing")
    events = [
        # an annual gold-tier plan 59 days before renewal: 3 % of 12 x 1000.00 USD
        subscribed("renewing", 50, 100_000, "year", 59),
        subscribed(seats_account, 10, 50_000, "month", 200),
        subscribed(held, 10, 50_000, "month", 200),
        seats_used(seats_account, 9),
        seats_used(held, 9),
    ]
    key = await create_tenant_key(settings, "Acme", scope="read", holder="growth@acme.example")
    cfo = await create_tenant_key(settings, "Acme", scope="approve", holder="cfo@acme.example")
    backend = await create_tenant_key(settings, "Acme", scope="ingest", holder="acme-backend")
    seg = SegmenterSettings(**{**settings.model_dump(), "segmenter_clock": "event"})
    await produce(settings.kafka_bootstrap, f"{settings.topic_prefix}events.product", events)
    offers = offers_app(settings)
    apps = [segmenter_app(seg), offers, ledger_app(settings)]
    decisions_topic = f"{settings.topic_prefix}offers.decisions"
    credits_topic = f"{settings.topic_prefix}credits.decisions"
    async with running(*apps) as clients:
        decisions = decoded(
            await read_all(settings.kafka_bootstrap, decisions_topic, at_least=3, timeout_s=90)
        )
        by_account = {d.subject: d for d in decisions}
        assert sorted((d.type, d.data.rule) for d in decisions) == [
            ("offer.held_out", "seat_expansion_credit"),
            ("offer.issued", "renewal_credit"),
            ("offer.issued", "seat_expansion_credit"),
        ]
        renewal = by_account["renewing"].data
        assert renewal.reward.value == Money(amount=36_000, currency="USD")
        assert renewal.explanation.trigger == "entered segment renewal_window"
        assert renewal.explanation.facts["value_basis"] == {
            "renewal_value": 1_200_000,
            "percent": 3.0,
            "segment": "tier_gold",
        }
        assert by_account[seats_account].data.reward.value == Money(amount=5000, currency="USD")
        assert by_account[held].data.holdout is True

        credits = decoded(
            await read_all(settings.kafka_bootstrap, credits_topic, at_least=2, timeout_s=60)
        )
        # 360.00 USD is above the default program's 300.00 approval threshold: it waits
        assert sorted((c.type, c.subject, c.data.amount.amount) for c in credits) == sorted(
            [
                ("credit.granted", seats_account, 5000),
                ("credit.pending_approval", "renewing", 36_000),
            ]
        )
        pending = next(c for c in credits if c.type == "credit.pending_approval")
        assert pending.data.approval_id == renewal.offer_id
        assert pending.data.reason == "costs 360.00 USD, above 300.00 USD"

        auth = {"Authorization": f"Bearer {key}"}
        ledger = clients[2]
        waiting = await _get_when_authorized(ledger, "/v1/approvals", auth)
        assert [a["approval_id"] for a in waiting["approvals"]] == [renewal.offer_id]
        approve = {"comment": "renewal at risk"}
        path = f"/v1/approvals/{renewal.offer_id}/approve"
        refused = await ledger.post(path, json=approve, headers=auth)  # a read key
        assert refused.status_code == 403 and "'approve' scope" in refused.text
        named = await ledger.post(path, json={"actor": "me"}, headers=auth)
        assert named.status_code == 403  # scope first; the body could not name the actor
        ok = await ledger.post(path, json=approve, headers={"Authorization": f"Bearer {cfo}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "granted"  # caps re-checked: all had room
        credits = decoded(
            await read_all(settings.kafka_bootstrap, credits_topic, at_least=3, timeout_s=60)
        )
        granted = [c for c in credits if c.type == "credit.granted"]
        assert {c.data.credit_id for c in granted} == {
            renewal.offer_id,
            by_account[seats_account].data.offer_id,
        }
        approved = next(c for c in granted if c.subject == "renewing")
        assert approved.data.actor == "cfo@acme.example"
        assert approved.data.amount == Money(amount=36_000, currency="USD")
        detail = (await ledger.get(f"/v1/approvals/{renewal.offer_id}", headers=auth)).json()
        assert [(a["action"], a["outcome"]) for a in detail["audit"]] == [
            ("requested", "pending"),
            ("approve", "granted"),
        ]

        client = clients[1]
        body = await _get_when_authorized(client, f"/v1/accounts/{seats_account}/offers", auth)
        (offer,) = body["offers"]
        assert offer["status"] == "issued"
        assert offer["explanation"]["facts"]["membership"] == "new"
        oid = offer["offer_id"]
        answer = {"comment": "customer said yes on the call"}
        product = {"Authorization": f"Bearer {backend}"}
        read_only = await client.post(f"/v1/offers/{oid}/accept", json=answer, headers=auth)
        assert read_only.status_code == 403 and "'ingest' scope" in read_only.text
        first = await client.post(f"/v1/offers/{oid}/accept", json=answer, headers=product)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "accepted"
        assert first.json()["actor"] == "acme-backend"  # the key's holder
        again = await client.post(f"/v1/offers/{oid}/accept", headers=product)
        assert again.status_code == 200 and again.json()["comment"] == answer["comment"]
        conflict = await client.post(f"/v1/offers/{oid}/decline", headers=product)
        assert conflict.status_code == 409 and "accepted" in conflict.json()["detail"]
        held_id = by_account[held].data.offer_id
        no = await client.post(f"/v1/offers/{held_id}/accept", headers=product)
        assert no.status_code == 409
        assert (await client.post("/v1/offers/nope/accept", headers=product)).status_code == 404
        bad = await client.post(f"/v1/offers/{oid}/accept", json={"actor": "x"}, headers=product)
        assert bad.status_code == 422  # nobody names themselves in the body

        summary = (await client.get("/v1/offers/summary", headers=auth)).json()
        assert summary["decisions"] == 3 and summary["held_out"] == 1
        assert summary["rules"]["seat_expansion_credit"]["offers"] == {
            "accepted": 1,
            "held_out": 1,
        }

        after = decoded(
            await read_all(settings.kafka_bootstrap, decisions_topic, at_least=4, timeout_s=30)
        )
        accepted = [d for d in after if d.type == "offer.accepted"]
        assert [(d.data.offer_id, d.data.actor) for d in accepted] == [(oid, "acme-backend")]


async def _get_when_authorized(client: Any, path: str, auth: dict[str, str]) -> Any:
    for _ in range(100):  # the tenant key arrives on its own topic
        resp = await client.get(path, headers=auth)
        if resp.status_code != 401:
            break
        await asyncio.sleep(0.1)
    assert resp.status_code == 200, resp.text
    return resp.json()
