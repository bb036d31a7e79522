"""Events of a tenant that did not exist yet are dead-lettered by every consumer of
their topics; once the operator has created the tenant, its admin replays them by
their reason over HTTP, and the account reaches its segment, its offer and its
credit — once, although each source record had been dead-lettered by two or three
services. All services on the real broker and Postgres."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.ingest.config import IngestSettings
from services.runtime.config import Settings
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.e2e.test_unknown_tenants_and_raw_records import (
    all_ready,
    credit_for,
    seats,
    subscribed,
)
from tests.kafka_helpers import decoded, produce_one, read_all, wait_consumed
from tests.tenants import create_tenant

ACCOUNT = "acct-7"


async def test_events_of_a_tenant_created_late_are_replayed_and_reach_their_credit_once(
    settings: Settings,
) -> None:
    from services.ingest.app import create_app as ingest_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app

    await create_tenant(settings, "acme")  # some tenant exists: the services start as usual
    apps = [
        ingest_app(IngestSettings(**settings.model_dump())),
        segmenter_app(SegmenterSettings(**settings.model_dump())),
        offers_app(settings),
        ledger_app(settings),
    ]
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    async with running(*apps) as clients:
        await all_ready(clients)
        ingest, segmenter, offers, ledger = clients
        now = datetime.now(UTC)
        sub = await produce_one(
            bootstrap,
            f"{prefix}events.billing",
            subscribed("newco", ACCOUNT, "n-sub", now - timedelta(minutes=9)),
        )
        seat = await produce_one(
            bootstrap,
            f"{prefix}events.product",
            seats("newco", ACCOUNT, "n-seats", now - timedelta(minutes=8)),
        )
        rts = [runtime_of(app) for app in apps[1:]]
        for rt in rts:
            await wait_consumed(rt, "events.billing", *sub)
        for rt in rts[:2]:
            await wait_consumed(rt, "events.product", *seat)

        key = await create_tenant(settings, "newco")
        admin = {"Authorization": f"Bearer {key}"}
        reason = "unknown tenant 'newco'"
        for _ in range(150):
            listed = await ingest.get("/v1/dead-letters", headers=admin)
            if listed.status_code == 200 and len(listed.json()["dead_letters"]) == 5:
                break
            await asyncio.sleep(0.2)
        entries = listed.json()["dead_letters"]
        assert sorted((e["source_topic"], e["service"], e["reason"]) for e in entries) == sorted(
            [("events.billing", s, reason) for s in ("segmenter", "offers", "ledger")]
            + [("events.product", s, reason) for s in ("segmenter", "offers")]
        )
        assert {
            (e["source_topic"], e["source_partition"], e["source_offset"]) for e in entries
        } == {
            ("events.billing", *sub),
            ("events.product", *seat),
        }

        resp = await ingest.post(
            "/v1/dead-letters/replay",
            json={"reason": reason, "comment": "tenant created"},
            headers=admin,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["replayed"] == 5
        assert sorted(resp.json()["ids"]) == sorted(e["id"] for e in entries)

        credit = await credit_for(settings, ACCOUNT)
        assert (credit.type, credit.tenant, credit.data.amount.amount) == (
            "credit.granted",
            "newco",
            5000,
        )
        account = (await segmenter.get(f"/v1/accounts/{ACCOUNT}", headers=admin)).json()
        assert "expansion_ready" in {s["name"] for s in account["segments"]}
        made = (await offers.get(f"/v1/accounts/{ACCOUNT}/offers", headers=admin)).json()
        assert [o["status"] for o in made["offers"]] == ["issued"]

        # each source record was written once more, not once per dead letter
        billing = await read_all(bootstrap, f"{prefix}events.billing", at_least=2)
        product = await read_all(bootstrap, f"{prefix}events.product", at_least=2)
        assert len(billing) == 2 and len(product) == 2
        replay_marks = [dict(r.headers).get("loyalty_replay_of") for r in billing + product]
        assert sum(m is not None for m in replay_marks) == 2
        credits = decoded(await read_all(bootstrap, f"{prefix}credits.decisions", at_least=1))
        assert [c.type for c in credits if c.subject == ACCOUNT] == ["credit.granted"]
        statement = (await ledger.get(f"/v1/accounts/{ACCOUNT}/credits", headers=admin)).json()
        assert statement["balance"] == {"USD": 5000}

        again = await ingest.post("/v1/dead-letters/replay", json={"reason": reason}, headers=admin)
        assert again.json() == {"replayed": 0, "ids": []}
        assert (await ingest.get("/v1/dead-letters", headers=admin)).json()["dead_letters"] == []
