"""ingest over HTTP against the real broker: auth, validation, limits, acks, 503."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.cli import create_tenant_key
from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedBroker, free_port
from tests.apps import running
from tests.kafka_helpers import read_all

SINGLE = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def event(etype: str = "product.login", data: Any = None, **over: Any) -> dict[str, Any]:
    body = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "app",
        "type": etype,
        "subject": "acct-1",
        "time": "2026-11-20T10:00:00Z",
        "data": data if data is not None else {"user_id": "u1"},
    }
    body.update(over)
    return body


async def ready_client(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("ingest never became ready")


def ingest_settings(settings: Settings, **over: Any) -> IngestSettings:
    return IngestSettings(**{**settings.model_dump(), **over})


async def test_ingest_contract(settings: Settings) -> None:
    key = await create_tenant_key(settings, "Acme Corp")
    app = create_app(ingest_settings(settings, ingest_max_body_bytes=64 * 1024))
    async with running(app) as (client,):
        await ready_client(client)
        auth = {"Authorization": f"Bearer {key}"}

        assert (await client.post("/v1/events", json=event())).status_code == 401
        bad_key = {"Authorization": "Bearer nope"}
        assert (
            await client.post(
                "/v1/events", content=json.dumps(event()), headers={**SINGLE, **bad_key}
            )
        ).status_code == 401

        resp = await client.post(
            "/v1/events", content="x", headers={**auth, "Content-Type": "text/plain"}
        )
        assert resp.status_code == 415

        ok = event()
        resp = await client.post("/v1/events", content=json.dumps(ok), headers={**SINGLE, **auth})
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"accepted": 1, "ids": [ok["id"]]}

        good = event(
            "billing.invoice_paid",
            {"invoice_id": "inv-1", "amount": {"amount": 1000, "currency": "USD"}},
        )
        invalid = [
            good,
            event(
                "billing.invoice_paid",
                {"invoice_id": "inv-2", "amount": {"amount": 10.5, "currency": "usd"}},
            ),
            event("product.teleported"),
            event(tenant="someone-else"),
            event("credit.granted"),
        ]
        resp = await client.post(
            "/v1/events", content=json.dumps(invalid), headers={**BATCH, **auth}
        )
        assert resp.status_code == 422
        errors = resp.json()["errors"]
        fields = {(e["index"], e["field"]) for e in errors}
        assert (1, "data.amount.amount") in fields
        assert (1, "data.amount.currency") in fields
        assert (2, "type") in fields and (3, "tenant") in fields and (4, "type") in fields
        assert all(e["index"] != 0 for e in errors)

        too_many = [event() for _ in range(1001)]
        resp = await client.post(
            "/v1/events", content=json.dumps(too_many), headers={**BATCH, **auth}
        )
        assert resp.status_code == 413
        huge = event(data={"user_id": "u" * 100_000})
        resp = await client.post("/v1/events", content=json.dumps(huge), headers={**SINGLE, **auth})
        assert resp.status_code == 413

        batch = [
            event(
                "billing.invoice_paid",
                {"invoice_id": f"i{i}", "amount": {"amount": 100 * i, "currency": "EUR"}},
                subject=f"acct-{i}",
            )
            for i in range(5)
        ]
        resp = await client.post("/v1/events", content=json.dumps(batch), headers={**BATCH, **auth})
        assert resp.status_code == 202

    product = await read_all(
        settings.kafka_bootstrap, f"{settings.topic_prefix}events.product", at_least=1
    )
    billing = await read_all(
        settings.kafka_bootstrap, f"{settings.topic_prefix}events.billing", at_least=5
    )
    # nothing of the rejected batch was published; the tenant comes from the key
    assert [dict(r.headers)["ce_id"].decode() for r in product] == [ok["id"]]
    assert sorted(dict(r.headers)["ce_id"].decode() for r in billing) == sorted(
        b["id"] for b in batch
    )
    first = product[0]
    assert first.key == b"acme-corp:acct-1"
    assert dict(first.headers)["ce_tenant"] == b"acme-corp"
    assert json.loads(first.value) == {"user_id": "u1"}


async def test_broker_down_means_503_with_retry_after_never_202(
    settings: Settings, tmp_path: Any
) -> None:
    own = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker.log")
    own.start()
    local = ingest_settings(settings, kafka_bootstrap=own.bootstrap, ingest_ack_timeout_s=2)
    key = await create_tenant_key(local, "Acme")
    app = create_app(local)
    try:
        async with running(app) as (client,):
            await ready_client(client)
            auth = {"Authorization": f"Bearer {key}", **SINGLE}
            assert (
                await client.post("/v1/events", content=json.dumps(event()), headers=auth)
            ).status_code == 202
            own.stop()
            resp = await client.post("/v1/events", content=json.dumps(event()), headers=auth)
            assert resp.status_code == 503
            assert resp.headers["Retry-After"].isdigit()
    finally:
        own.stop()


def recent(etype: str = "product.login", data: Any = None, **over: Any) -> dict[str, Any]:
    """An event of a minute ago by this machine's clock (the server's)."""
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return event(etype, data, **{"time": at, **over})


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "USD"}


def subscription_data(mrr: int) -> dict[str, Any]:
    return {
        "plan": "pro",
        "interval": "month",
        "seats_purchased": 5,
        "mrr": money(mrr),
        "renewal_date": "2027-06-01",
        "status": "active",
    }


async def test_hostile_input_is_refused_precisely_and_nothing_of_it_is_produced(
    settings: Settings,
) -> None:
    key = await create_tenant_key(settings, "Acme")
    limit = 1024 * 1024
    app = create_app(ingest_settings(settings, ingest_max_body_bytes=limit))
    auth = {"Authorization": f"Bearer {key}"}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    # (what, content type, body, status, [(index, field)] or a phrase of the title)
    cases: list[tuple[str, dict[str, str], bytes, int, Any]] = [
        ("over the size limit", SINGLE, b" " * (limit + 1), 413, f"limit of {limit} bytes"),
        ("100,000 arrays deep", BATCH, b"[" * 100_000, 400, "deeper than 16 levels"),
        ("100,000 objects deep", SINGLE, b'{"a":' * 100_000, 400, "deeper than 16 levels"),
        (
            "NaN",
            SINGLE,
            json.dumps(recent(data={"user_id": float("nan")})).encode(),
            400,
            "not JSON",
        ),
        ("a lone surrogate", SINGLE, b'{"id": "\\ud800"}', 400, "not JSON"),
        ("a NUL in the id", SINGLE, json.dumps(recent(id="a\x00b")).encode(), 422, [(0, "id")]),
        (
            "a tab in the source",
            SINGLE,
            json.dumps(recent(source="a\tb")).encode(),
            422,
            [(0, "source")],
        ),
        (
            "a DEL in the subject",
            SINGLE,
            json.dumps(recent(subject="acct\x7f")).encode(),
            422,
            [(0, "subject")],
        ),
        (
            "a NUL in data",
            SINGLE,
            json.dumps(recent(data={"user_id": "u\x00"})).encode(),
            422,
            [(0, "data.user_id")],
        ),
        ("an id too long", SINGLE, json.dumps(recent(id="x" * 201)).encode(), 422, [(0, "id")]),
        ("an hour ahead", SINGLE, json.dumps(recent(time=future)).encode(), 422, [(0, "time")]),
        (
            "the year 9999",
            SINGLE,
            json.dumps(recent(time="9999-12-31T00:00:00Z")).encode(),
            422,
            [(0, "time")],
        ),
        (
            "1999",
            SINGLE,
            json.dumps(recent(time="1999-12-31T23:59:59Z")).encode(),
            422,
            [(0, "time")],
        ),
        (
            "negative mrr",
            SINGLE,
            json.dumps(recent("billing.subscription_updated", subscription_data(-100))).encode(),
            422,
            [(0, "data.mrr.amount")],
        ),
        (
            "a bad extension name",
            SINGLE,
            json.dumps(recent(Trace_Id="x")).encode(),
            422,
            [(0, "Trace_Id")],
        ),
        ("a tenant", SINGLE, json.dumps(recent(tenant="other")).encode(), 422, [(0, "tenant")]),
        (
            "a batch with a negative invoice and credit",
            BATCH,
            json.dumps(
                [
                    recent(),
                    recent("billing.invoice_paid", {"invoice_id": "i", "amount": money(-1)}),
                    recent(
                        "billing.credit_applied",
                        {"credit_id": "c", "invoice_id": "i", "amount": money(-5)},
                    ),
                ]
            ).encode(),
            422,
            [(1, "data.amount.amount"), (2, "data.amount.amount")],
        ),
    ]
    async with running(app) as (client,):
        await ready_client(client)
        for what, ctype, body, status, expect in cases:
            resp = await client.post("/v1/events", content=body, headers={**ctype, **auth})
            assert resp.status_code == status, (what, resp.text)
            answer = resp.json()
            assert resp.headers["content-type"] == "application/problem+json", what
            assert answer["status"] == status and answer["title"] and answer["type"], what
            if isinstance(expect, str):
                assert expect in answer["detail"], (what, answer)
            else:
                assert answer["type"] == "tag:loyalty-engine,2025:invalid-events", what
                assert [(e["index"], e["field"]) for e in answer["errors"]] == expect, what
                assert all(e["reason"] for e in answer["errors"])

        # the body limit holds for a chunked body (no Content-Length) too
        async def chunks() -> Any:
            for _ in range(limit // 65536 + 1):
                yield b" " * 65536

        resp = await client.post("/v1/events", content=chunks(), headers={**SINGLE, **auth})
        assert resp.status_code == 413 and resp.json()["max_body_bytes"] == limit
        assert resp.json()["type"] == "tag:loyalty-engine,2025:body-too-large"

        # the binary content mode: a percent-encoded NUL in ce-id, named by its header
        binary = {
            "ce-specversion": "1.0",
            "ce-id": "a%00b",
            "ce-source": "app",
            "ce-type": "product.login",
            "ce-subject": "acct-1",
            "ce-time": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "Content-Type": "application/json",
        }
        resp = await client.post(
            "/v1/events", content=b'{"user_id": "u1"}', headers={**binary, **auth}
        )
        assert resp.status_code == 422, resp.text
        assert {e["field"] for e in resp.json()["errors"]} == {"ce-id", "ce-time"}
        resp = await client.post(
            "/v1/events", content=b"hi", headers={**binary, **auth, "Content-Type": "text/plain"}
        )
        assert resp.status_code == 415 and "data must be JSON" in resp.json()["detail"]

        # and a valid event after all of that is accepted
        ok = recent()
        resp = await client.post("/v1/events", content=json.dumps(ok), headers={**SINGLE, **auth})
        assert resp.status_code == 202, resp.text

    prefix = settings.topic_prefix
    product = await read_all(settings.kafka_bootstrap, f"{prefix}events.product", at_least=1)
    assert [dict(r.headers)["ce_id"].decode() for r in product] == [ok["id"]]
    billing = await read_all(settings.kafka_bootstrap, f"{prefix}events.billing", timeout_s=3)
    assert billing == []  # nothing of the rejected batches
