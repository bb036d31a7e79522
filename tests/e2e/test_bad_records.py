"""One bad record breaks neither time nor the runtime: account A's event from the
year 9999 and its event with a NUL in its id sit ahead of account B's events on
the same partition; all four services on the real broker and Postgres.

The bad records are produced straight onto the input topics with the codec, as a
producer on Kafka would (ingest cannot guard that path), so that the consumers'
shared decode and apply path is what is tested."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.partitioner import murmur2

from schemas import Event, Money
from schemas.events import InvoicePaid, InvoicePaidData, Login, LoginData
from services.cli import create_tenant_key
from services.ingest.config import IngestSettings
from services.ledger.app import TOPICS as LEDGER_TOPICS
from services.offers.app import TOPICS as OFFERS_TOPICS
from services.runtime.config import Settings
from services.segmenter.app import TOPICS as SEGMENTER_TOPICS
from services.segmenter.config import SegmenterSettings
from tests.apps import running, runtime_of
from tests.e2e.test_pipeline import BATCH, the_two_events
from tests.kafka_helpers import decoded, produce, read_all

B = "acct-42"  # the account of the_two_events()
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
NUL_ID = "nul\x00id"


def partition_of(tenant: str, account: str, partitions: int) -> int:
    """The partition of an account's records: aiokafka's default partitioner
    (murmur2 of the key ``{tenant}:{account}``), which ingest and producers use."""
    return (murmur2(f"{tenant}:{account}".encode()) & 0x7FFFFFFF) % partitions


def login(account: str, event_id: str, at: datetime) -> Login:
    return Login(
        id=event_id,
        source="app",
        type="product.login",
        subject=account,
        tenant="acme",
        time=at,
        data=LoginData(user_id="u1"),
    )


def invoice_paid(account: str, event_id: str, at: datetime) -> InvoicePaid:
    return InvoicePaid(
        id=event_id,
        source="billing",
        type="billing.invoice_paid",
        subject=account,
        tenant="acme",
        time=at,
        data=InvoicePaidData(invoice_id=f"inv-{account}", amount=usd(100)),
    )


def usd(amount: int) -> Money:
    return Money(amount=amount, currency="USD")


def by_service(records: Sequence[Any]) -> dict[tuple[str, str], str]:
    """Dead letters as (service, event id) -> reason."""
    out = {}
    for r in records:
        h = dict(r.headers)
        out[(h["dlq_service"].decode(), h["ce_id"].decode())] = h["dlq_reason"].decode()
    return out


async def test_a_future_event_and_a_nul_id_break_neither_time_nor_the_partition(
    settings: Settings,
) -> None:
    from services.ingest.app import create_app as ingest_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app

    a = next(
        f"acct-{i}"
        for i in range(1000)
        if f"acct-{i}" != B
        and partition_of("acme", f"acct-{i}", settings.partitions)
        == partition_of("acme", B, settings.partitions)
    )
    key = await create_tenant_key(settings, "Acme")
    apps = [
        ingest_app(IngestSettings(**settings.model_dump())),
        segmenter_app(SegmenterSettings(**settings.model_dump())),
        offers_app(settings),
        ledger_app(settings),
    ]
    prefix = settings.topic_prefix
    product, billing = f"{prefix}events.product", f"{prefix}events.billing"
    async with running(*apps) as clients:
        for client in clients:
            for _ in range(300):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("a service never became ready")
        now = datetime.now(UTC)
        # account A, ahead of B on their common partition of both input topics
        bad: list[tuple[str, Event]] = [
            (billing, invoice_paid(a, "from-9999-billing", FAR_FUTURE)),
            (product, login(a, "from-9999-product", FAR_FUTURE)),
            (billing, invoice_paid(a, NUL_ID, now)),
            (product, login(a, NUL_ID, now)),
        ]
        for topic, event in bad:
            await produce(settings.kafka_bootstrap, topic, [event])

        # account B, after them: exactly the pipeline's seat-use credit
        auth = {"Authorization": f"Bearer {key}", **BATCH}
        resp = await clients[0].post(
            "/v1/events", content=json.dumps(the_two_events()), headers=auth
        )
        assert resp.status_code == 202, resp.text
        credits_topic = f"{prefix}credits.decisions"
        credits = decoded(
            await read_all(
                settings.kafka_bootstrap, credits_topic, at_least=1, timeout_s=60, settle_s=0
            )
        )
        assert [(c.type, c.subject, c.data.amount.amount) for c in credits] == [
            ("credit.granted", B, 5000)
        ]
        # and one more of B's billing events: stream time moves on, to now and no further
        paid = {
            "specversion": "1.0",
            "id": "paid-b",
            "source": "billing",
            "subject": B,
            "type": "billing.invoice_paid",
            "time": datetime.now(UTC).isoformat(),
            "data": {"invoice_id": "inv-b", "amount": {"amount": 100, "currency": "USD"}},
        }
        resp = await clients[0].post("/v1/events", content=json.dumps([paid]), headers=auth)
        assert resp.status_code == 202, resp.text

        # every consumer has passed every input record (nothing stalls a partition)
        seg, offers, ledger = (runtime_of(app) for app in apps[1:])
        expected = [
            (seg, SEGMENTER_TOPICS, 7),  # 2 + 2 bad, sub-1, seats-1, paid-b
            (offers, [t for t in OFFERS_TOPICS if t.startswith("events.")], 7),
            (ledger, [t for t in LEDGER_TOPICS if t.startswith("events.")], 4),
        ]
        for rt, topics, n in expected:
            for _ in range(300):
                if await rt.worker.consumed(topics) >= n:
                    break
                await asyncio.sleep(0.1)
            assert await rt.worker.consumed(topics) == n, rt.spec.name
            assert rt.worker.rewinds == 0, rt.spec.name  # no endless retry on the way

        # each consumer of a topic dead-lettered A's two bad records, with the reason
        product_dlq = by_service(
            await read_all(settings.kafka_bootstrap, f"{product}.dlq", at_least=4)
        )
        billing_dlq = by_service(
            await read_all(settings.kafka_bootstrap, f"{billing}.dlq", at_least=6)
        )
        assert set(product_dlq) == {
            (s, i) for s in ("segmenter", "offers") for i in ("from-9999-product", NUL_ID)
        }
        assert set(billing_dlq) == {
            (s, i) for s in ("segmenter", "offers", "ledger") for i in ("from-9999-billing", NUL_ID)
        }
        for (_, event_id), reason in [*product_dlq.items(), *billing_dlq.items()]:
            if event_id == NUL_ID:
                assert reason.startswith("data error: CharacterNotInRepertoireError"), reason
            else:
                assert reason.startswith("event time 9999-12-31T00:00:00+00:00 is "), reason
                assert reason.endswith("(max clock skew 0:05:00)"), reason

        # nothing moved the tenant's time: B's segments as of today, its offer and its
        # credit open, no expiry booked anywhere
        reader = {"Authorization": f"Bearer {key}"}
        segments = (await clients[1].get(f"/v1/accounts/{B}", headers=reader)).json()
        assert segments["as_of"] == datetime.now(UTC).date().isoformat()
        assert "expansion_ready" in {s["name"] for s in segments["segments"]}
        assert (await clients[1].get(f"/v1/accounts/{a}", headers=reader)).status_code == 404
        made = (await clients[2].get(f"/v1/accounts/{B}/offers", headers=reader)).json()
        assert [o["status"] for o in made["offers"]] == ["issued"], made
        decisions = decoded(
            await read_all(settings.kafka_bootstrap, f"{prefix}offers.decisions", at_least=1)
        )
        assert [d.type for d in decisions] == ["offer.issued"]
        statement = (await clients[3].get(f"/v1/accounts/{B}/credits", headers=reader)).json()
        assert statement["balance"] == {"USD": 5000}
        assert [c["expiries"] for c in statement["credits"]] == [[]]
        report = (await clients[3].get("/v1/reports/credits", headers=reader)).json()
        assert [(r["granted"], r["expired"], r["outstanding"]) for r in report["credits"]] == [
            (5000, 0, 5000)
        ]
        credits = await read_all(settings.kafka_bootstrap, credits_topic, at_least=1)
        assert len(credits) == 1
