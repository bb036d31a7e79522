"""Four eyes over HTTP, on the real broker and Postgres, with the default program:
a held grant costing more than ``approvals.second_approver_above`` (1,000.00 USD)
needs two different approvers. The first approval is answered 202 and leaves it
pending; the same holder again gets the same 202; a second holder grants it (200).
A grant below that threshold is granted by one approval, as before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from services.cli import create_tenant_key
from services.runtime.config import Settings
from tests.apps import running
from tests.kafka_helpers import decoded, produce, read_all
from tests.ledger_harness import offer_issued

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
APPROVE = "/v1/approvals/{id}/approve"


async def _when_authorized(client: httpx.AsyncClient, path: str, key: str) -> Any:
    for _ in range(150):  # the tenant's keys arrive on their own topic
        resp = await client.get(path, headers={"Authorization": f"Bearer {key}"})
        if resp.status_code != 401:
            break
        await asyncio.sleep(0.1)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _rooms(approval: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        r["cap"]: (r["period"], r["limit"], r["used"], r["left"], r["needs"], r["binds"])
        for r in approval["headroom"]
    }


async def test_a_large_grant_needs_two_different_approvers(settings: Settings) -> None:
    from services.ledger.app import create_app as ledger_app

    alice = await create_tenant_key(settings, "Acme", scope="approve", holder="alice@acme.example")
    bob = await create_tenant_key(settings, "Acme", scope="approve", holder="bob@acme.example")
    offers = [
        offer_issued("acme", "big-account", "big", T0, value=150_000),  # 1,500.00 USD
        offer_issued("acme", "mid-account", "mid", T0, value=50_000),  # 500.00 USD
    ]
    await produce(settings.kafka_bootstrap, f"{settings.topic_prefix}offers.decisions", offers)
    app = ledger_app(settings)
    responses = app.openapi()["paths"]["/v1/approvals/{approval_id}/approve"]["post"]["responses"]
    assert {"200", "202"} <= set(responses)
    credits_topic = f"{settings.topic_prefix}credits.decisions"
    async with running(app) as (ledger,):
        held = decoded(
            await read_all(settings.kafka_bootstrap, credits_topic, at_least=2, timeout_s=60)
        )
        assert sorted(c.type for c in held) == ["credit.pending_approval"] * 2
        waiting = await _when_authorized(ledger, "/v1/approvals", alice)
        assert {a["approval_id"]: a["approvals_needed"] for a in waiting["approvals"]} == {
            "big": 2,
            "mid": 1,
        }
        await _when_authorized(ledger, "/v1/approvals", bob)
        room = {a["approval_id"]: _rooms(a) for a in waiting["approvals"]}
        assert room["big"] == {  # 10,000.00 USD of ARR: 5 % a year; 5,000.00 a month
            "account cap": ("rolling", 500_000, 0, 500_000, 150_000, False),
            "program cap": ("2026-11", 500_000, 0, 500_000, 150_000, False),
            "liability ceiling": ("-", 1_000_000, 0, 1_000_000, 150_000, False),
        }

        def by(key: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {key}"}

        path = APPROVE.format(id="big")
        first = await ledger.post(path, json={"comment": "fine by me"}, headers=by(alice))
        assert first.status_code == 202, first.text
        body = first.json()
        assert (body["status"], body["approved_by"], body["approvals_needed"]) == (
            "pending",
            ["alice@acme.example"],
            2,
        )
        assert body["answer"]["type"] == "credit.pending_approval"
        again = await ledger.post(path, headers=by(alice))
        assert (again.status_code, again.json()) == (202, body)

        detail = (await ledger.get("/v1/approvals/big", headers=by(bob))).json()
        assert (detail["status"], detail["approved_by"]) == ("pending", ["alice@acme.example"])
        assert [(a["action"], a["actor"], a["outcome"]) for a in detail["audit"]] == [
            ("requested", None, "pending"),
            ("approve", "alice@acme.example", "pending"),
        ]
        statement = (await ledger.get("/v1/accounts/big-account/credits", headers=by(bob))).json()
        assert (statement["balance"], statement["pending_approval"]) == ({}, {"USD": 150_000})

        second = await ledger.post(path, json={"comment": "agreed"}, headers=by(bob))
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "granted"
        assert second.json()["approved_by"] == ["alice@acme.example", "bob@acme.example"]
        assert second.json()["answer"]["data"]["actor"] == "bob@acme.example"

        # the granted 1,500.00 USD now counts against the month and the liability
        mid_room = _rooms((await ledger.get("/v1/approvals/mid", headers=by(alice))).json())
        assert mid_room["program cap"] == ("2026-11", 500_000, 150_000, 350_000, 50_000, False)
        assert mid_room["liability ceiling"][2:4] == (150_000, 850_000)
        assert mid_room["account cap"][2] == 0  # another account
        mid = await ledger.post(APPROVE.format(id="mid"), headers=by(alice))
        assert mid.status_code == 200, mid.text
        assert (mid.json()["status"], mid.json()["approved_by"]) == (
            "granted",
            ["alice@acme.example"],
        )
        decided = (await ledger.get("/v1/approvals/mid", headers=by(alice))).json()
        assert decided["headroom"] == []  # decided: nothing to weigh

        credits = decoded(
            await read_all(settings.kafka_bootstrap, credits_topic, at_least=4, timeout_s=60)
        )
        granted = {c.data.offer_id: c.data.actor for c in credits if c.type == "credit.granted"}
        assert granted == {"big": "bob@acme.example", "mid": "alice@acme.example"}
        statement = (await ledger.get("/v1/accounts/big-account/credits", headers=by(bob))).json()
        assert (statement["balance"], statement["pending_approval"]) == (
            {"USD": 150_000},
            {"USD": 0},
        )
