"""Events -> insights -> ``bundle.ready`` on ``insights.signals`` -> an offer, on the
real broker and Postgres; and a replay of the same topics into a fresh insights
database gives identical reports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from schemas import Money
from schemas.events import (
    Event,
    FeatureUsed,
    FeatureUsedData,
    InvoicePaid,
    InvoicePaidData,
    Login,
    LoginData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.cli import create_tenant_key
from services.offers.app import load as load_offers
from services.offers.domain.engine import in_holdout
from services.runtime.config import Settings
from services.runtime.program_file import read_program
from tests.apps import running
from tests.conftest import SettingsFactory
from tests.kafka_helpers import decoded, produce, read_all

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
TENANT = "acme"


def used(account: str, feature: str, at: datetime) -> Event:
    return FeatureUsed(
        id=f"use-{account}-{feature}-{at:%j%H%M}",
        source="app",
        type="product.feature_used",
        subject=account,
        tenant=TENANT,
        time=at,
        data=FeatureUsedData(user_id="u1", feature=feature, key_action=True),
    )


def subscribed(account: str, at: datetime, seats: int, status: str = "active") -> Event:
    return SubscriptionUpdated(
        id=f"sub-{account}-{at:%j}",
        source="billing",
        type="billing.subscription_updated",
        subject=account,
        tenant=TENANT,
        time=at,
        data=SubscriptionUpdatedData(
            plan="team",
            interval="month",
            seats_purchased=seats,
            mrr=Money(amount=seats * 2000, currency="USD"),
            renewal_date=(at + timedelta(days=30)).date(),
            status=status,  # type: ignore[arg-type]
        ),
    )


def history(ready: str) -> tuple[list[Event], list[Event]]:
    """(product events, billing events): 24 accounts adopt reports, then
    automations 10 to 18 days later; ``ready`` adopts reports on day 30 only;
    a login on day 44 moves the stream past the typical delay."""
    product: list[Event] = []
    billing: list[Event] = []
    for i in range(24):
        a = f"acct-{i}"
        start = T0 + timedelta(hours=i)
        product += [
            used(a, "reports", start),
            used(a, "automations", start + timedelta(days=10 + i % 9)),
        ]
        billing.append(subscribed(a, start, 5 + i))
        if i % 4 == 0:
            billing.append(subscribed(a, start + timedelta(days=20), 10 + i))  # an up-sell
        billing.append(
            InvoicePaid(
                id=f"inv-{a}",
                source="billing",
                type="billing.invoice_paid",
                subject=a,
                tenant=TENANT,
                time=start + timedelta(days=1),
                data=InvoicePaidData(
                    invoice_id=f"inv-{a}", amount=Money(amount=999, currency="USD")
                ),
            )
        )
    day30 = T0 + timedelta(days=30)
    product.append(used(ready, "reports", day30))
    billing.append(subscribed(ready, day30, 8))
    product.append(
        Login(
            id="late-login",
            source="app",
            type="product.login",
            subject="acct-0",
            tenant=TENANT,
            time=day30 + timedelta(days=14, hours=2),
            data=LoginData(user_id="u1"),
        )
    )
    return product, billing


def program_file(tmp_path: Path) -> Path:
    raw = read_program(None)
    raw["insights"]["bundles"].update({"min_accounts": 10, "sequence_window": "30d"})
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def _reports(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    paths = ("lift", "nrr", "upsell-rate", "segments", "bundles", "bundles/ready")
    out = {}
    for p in paths:
        resp = await client.get(f"/v1/insights/{p}", headers=auth)
        assert resp.status_code == 200, resp.text
        out[p] = resp.json()
    return out


async def _authorized(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for _ in range(300):  # the tenant key arrives on its own topic, after the group join
        if (await client.get("/v1/insights/lift", headers=auth)).status_code != 401:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the tenant key never arrived")


async def test_bundle_ready_reaches_an_offer_and_a_replay_reports_the_same(
    settings: Settings, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from services.insights.app import create_app as insights_app
    from services.offers.app import create_app as offers_app

    settings = Settings(**{**settings.model_dump(), "program": program_file(tmp_path)})
    offers_program = load_offers(settings)
    ready = next(
        a for a in (f"new-{i}" for i in range(100)) if not in_holdout(offers_program, TENANT, a)
    )
    product, billing = history(ready)
    key = await create_tenant_key(settings, TENANT)
    auth = {"Authorization": f"Bearer {key}"}
    prefix = settings.topic_prefix
    await produce(settings.kafka_bootstrap, f"{prefix}events.product", product)
    await produce(settings.kafka_bootstrap, f"{prefix}events.billing", billing)
    async with running(insights_app(settings), offers_app(settings)) as (insights, _):
        signals = decoded(
            await read_all(
                settings.kafka_bootstrap, f"{prefix}insights.signals", at_least=1, timeout_s=90
            )
        )
        assert [(s.type, s.subject, s.data.sequence) for s in signals] == [
            ("bundle.ready", ready, "reports>automations")
        ]
        (signal,) = signals
        assert 13 <= signal.data.typical_delay_days <= 15
        assert signal.data.adopted_at == T0 + timedelta(days=30)
        assert signal.time == T0 + timedelta(days=44, hours=2)  # the stream time it was seen
        decisions = decoded(
            await read_all(
                settings.kafka_bootstrap, f"{prefix}offers.decisions", at_least=1, timeout_s=60
            )
        )
        offer = [d for d in decisions if d.subject == ready]
        assert [(d.type, d.data.rule) for d in offer] == [
            ("offer.issued", "bundle_automations_trial")
        ]
        assert offer[0].data.explanation.trigger.startswith("bundle.ready")
        await _authorized(insights, auth)
        first = await _reports(insights, auth)
        ready_rows = first["bundles/ready"]["ready"]
        assert [(r["account"], r["sequence"]) for r in ready_rows] == [
            (ready, "reports>automations")
        ]
        [seq] = [s for s in first["bundles"]["sequences"] if s["antecedent"] == "reports"]
        assert (seq["consequent"], seq["accounts"], seq["strong"]) == ("automations", 24, True)
        assert first["upsell-rate"]["members"]["transactions"] == 0  # no segmenter: no members
        assert first["upsell-rate"]["non_members"]["upsells"] == 6
        csv = await insights.get("/v1/insights/bundles?format=csv", headers=auth)
        assert csv.headers["content-type"].startswith("text/csv")
        assert "reports>automations" in csv.text
        # the decisions so far are on the topic; the offer is an exposure
        for _ in range(100):
            lift = (await insights.get("/v1/insights/lift", headers=auth)).json()
            if lift["rules"]:
                break
            await asyncio.sleep(0.2)
        rules = {r["rule"]: r for r in lift["rules"]}
        assert rules["bundle_automations_trial"]["maturing"] == {"treated": 1, "held_out": 0}
        first = await _reports(insights, auth)

    fresh = await make_settings()
    replay = Settings(**{**settings.model_dump(), "database_url": fresh.database_url})
    async with running(insights_app(replay)) as (again,):
        await _authorized(again, auth)
        for _ in range(300):
            second = await _reports(again, auth)
            if second == first:
                break
            await asyncio.sleep(0.2)
        assert second == first
