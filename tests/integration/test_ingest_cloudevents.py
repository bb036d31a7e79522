"""Events made by the official CloudEvents SDK, in each HTTP content mode —
structured, binary, batch — accepted by ingest against the real broker, on the
right topic, their extension attributes carried as ``ce_*`` headers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from services.cli import create_tenant_key
from services.ingest.app import create_app
from services.runtime.config import Settings
from tests.apps import running
from tests.integration.test_ingest_http import ingest_settings, ready_client
from tests.kafka_helpers import decoded, read_all

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def sdk_event(etype: str, data: dict[str, Any], **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": str(uuid.uuid4()),
            "source": "https://app.example.com",
            "type": etype,
            "subject": "acct-1",
            "time": datetime.now(UTC) - timedelta(minutes=1),
            **attributes,
        },
        data=data,
    )


async def test_sdk_events_in_every_content_mode_land_with_their_extensions(
    settings: Settings,
) -> None:
    key = await create_tenant_key(settings, "Acme")
    auth = {"Authorization": f"Bearer {key}"}

    structured = sdk_event(
        "product.login",
        {"user_id": "u1"},
        traceparent=TRACEPARENT,
        tracestate="congo=t61rcWkgMzE",
        dataschema="https://schemas.example.com/login.json",
        sampled=True,  # a JSON boolean in the structured mode
    )
    # binary: the SDK percent-encodes header values (a space, a non-ASCII letter)
    binary = sdk_event(
        "billing.invoice_paid",
        {"invoice_id": "inv-1", "amount": {"amount": 1200, "currency": "EUR"}},
        traceparent=TRACEPARENT,
        partitionkey="acct 1/café",
        # header values are strings: the SDK would send a Python bool as "True"
        sampled="true",
        attempt=3,
        datacontenttype="application/json",
    )
    batch = [
        sdk_event("product.feature_used", {"user_id": "u1", "feature": "reports"}, region="eu1"),
        sdk_event("support.ticket_opened", {"ticket_id": "t-1", "priority": "high"}),
    ]

    app = create_app(ingest_settings(settings))
    async with running(app) as (client,):
        await ready_client(client)

        msg = to_structured_event(structured)
        assert msg.headers["content-type"] == "application/cloudevents+json"
        resp = await client.post("/v1/events", content=msg.body, headers={**msg.headers, **auth})
        assert resp.status_code == 202, resp.text

        msg = to_binary_event(binary)
        assert msg.headers["ce-partitionkey"] == "acct%201/caf%C3%A9"
        resp = await client.post("/v1/events", content=msg.body, headers={**msg.headers, **auth})
        assert resp.status_code == 202, resp.text

        # the SDK has no batch format: the batch is an array of structured events
        body = json.dumps([json.loads(to_structured_event(e).body) for e in batch])
        resp = await client.post(
            "/v1/events",
            content=body,
            headers={"Content-Type": "application/cloudevents-batch+json", **auth},
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["ids"] == [e.get_id() for e in batch]

    prefix = settings.topic_prefix
    product = await read_all(settings.kafka_bootstrap, f"{prefix}events.product", at_least=2)
    billing = await read_all(settings.kafka_bootstrap, f"{prefix}events.billing", at_least=1)
    support = await read_all(settings.kafka_bootstrap, f"{prefix}events.support", at_least=1)
    headers = {dict(r.headers)["ce_id"].decode(): dict(r.headers) for r in product}
    assert sorted(headers) == sorted([structured.get_id(), batch[0].get_id()])

    h = headers[structured.get_id()]
    assert h["ce_traceparent"] == TRACEPARENT.encode()
    assert h["ce_tracestate"] == b"congo=t61rcWkgMzE"
    assert h["ce_dataschema"] == b"https://schemas.example.com/login.json"
    assert h["ce_tenant"] == b"acme"
    assert h["content-type"] == b"application/json"
    assert h["ce_sampled"] == b"true"
    assert headers[batch[0].get_id()]["ce_region"] == b"eu1"

    [paid] = billing
    h = dict(paid.headers)
    assert h["ce_id"] == binary.get_id().encode()
    assert h["ce_partitionkey"] == "acct 1/café".encode()
    assert (h["ce_sampled"], h["ce_attempt"]) == (b"true", b"3")
    assert json.loads(paid.value) == binary.get_data()
    assert paid.key == b"acme:acct-1"

    # and the one codec reads them back into the event's extensions
    [event] = decoded(billing)
    assert event.extensions == {
        "traceparent": TRACEPARENT,
        "partitionkey": "acct 1/café",
        "sampled": "true",
        "attempt": "3",
    }
    assert event.time == binary.get_time()
    [ticket] = decoded(support)
    assert (ticket.id, ticket.extensions) == (batch[1].get_id(), {})
