"""Synthetic SaaS traffic for ``loyalty up --demo``: a few hundred accounts that
subscribe, log in, use features and grow into their seats, sent to ingest over
HTTP like a real product would."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

FEATURES = ("reports", "dashboards", "api", "sso", "automations", "exports")


@dataclass
class DemoAccount:
    account: str
    seats: int
    used: int
    price_per_seat: int  # cents a month
    onboarded: bool = False
    interval: str = "month"
    renews_in: int = 200  # days from the first subscription event


def _event(etype: str, account: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "demo/saas-app",
        "type": etype,
        "subject": account,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


def subscription(a: DemoAccount, today: date | None = None) -> dict[str, Any]:
    today = today or date.today()
    return _event(
        "billing.subscription_updated",
        a.account,
        {
            "plan": "business" if a.seats > 25 else "team",
            "interval": a.interval,
            "seats_purchased": a.seats,
            "mrr": {"amount": a.seats * a.price_per_seat, "currency": "USD"},
            "renewal_date": (today + timedelta(days=a.renews_in)).isoformat(),
            "status": "active",
        },
    )


def make_accounts(n: int, rng: random.Random) -> list[DemoAccount]:
    accounts = []
    for i in range(n):
        seats = rng.choice([5, 10, 20, 25, 40, 80, 100, 150, 250])
        annual = rng.random() < 0.3  # a third pay yearly; some renew within 60 days
        accounts.append(
            DemoAccount(
                f"acct-{i:04d}",
                seats,
                max(1, seats * rng.randint(30, 70) // 100),
                rng.choice([1500, 2500, 4900]),
                interval="year" if annual else "month",
                renews_in=rng.randint(20, 120) if annual else rng.randint(10, 30),
            )
        )
    return accounts


def step(a: DemoAccount, rng: random.Random) -> list[dict[str, Any]]:
    """A few moments of one account's life."""
    user = f"user-{rng.randint(1, max(a.used, 1))}"
    out = [_event("product.login", a.account, {"user_id": user})]
    if rng.random() < 0.6:
        out.append(
            _event(
                "product.feature_used",
                a.account,
                {
                    "user_id": user,
                    "feature": rng.choice(FEATURES),
                    "key_action": rng.random() < 0.6,
                },
            )
        )
    if rng.random() < 0.35 and a.used < a.seats:
        a.used = min(a.seats, a.used + max(1, a.seats // 20))
        out.append(_event("product.seats_changed", a.account, {"seats_used": a.used}))
    if rng.random() < 0.02:
        a.seats += max(5, a.seats // 4)  # they bought more seats
        out.append(subscription(a))
    if not a.onboarded and rng.random() < 0.15:
        a.onboarded = True
        out.append(_event("product.onboarding_completed", a.account, {"user_id": user}))
    if rng.random() < 0.03:
        out.append(
            _event(
                "billing.invoice_paid",
                a.account,
                {
                    "invoice_id": f"inv-{uuid.uuid4().hex[:8]}",
                    "amount": {"amount": a.seats * a.price_per_seat, "currency": "USD"},
                },
            )
        )
    if rng.random() < 0.02:
        out.append(
            _event(
                "support.ticket_opened",
                a.account,
                {
                    "ticket_id": f"t-{uuid.uuid4().hex[:6]}",
                    "priority": rng.choice(["low", "normal", "high"]),
                },
            )
        )
    if rng.random() < 0.02:
        out.append(
            _event(
                "support.nps_submitted",
                a.account,
                {"user_id": user, "score": rng.choice([3, 6, 8, 9, 10])},
            )
        )
    if rng.random() < 0.003:
        out.append(_event("billing.cancellation_requested", a.account, {"reason": "price"}))
    return out


async def run_demo(
    ingest_url: str,
    api_key: str,
    accounts: int = 300,
    rate_per_s: float = 150.0,
    seed: int = 7,
    stop: asyncio.Event | None = None,
) -> None:
    rng = random.Random(seed)
    fleet = make_accounts(accounts, rng)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/cloudevents-batch+json",
    }
    stop = stop or asyncio.Event()
    async with httpx.AsyncClient(base_url=ingest_url, headers=headers, timeout=15) as client:
        await _send(client, [subscription(a) for a in fleet])
        while not stop.is_set():
            batch: list[dict[str, Any]] = []
            while len(batch) < 50:
                batch.extend(step(rng.choice(fleet), rng))
            await _send(client, batch)
            try:
                await asyncio.wait_for(stop.wait(), timeout=len(batch) / rate_per_s)
            except TimeoutError:
                pass


async def _send(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        for attempt in range(20):
            try:
                resp = await client.post("/v1/events", content=json.dumps(chunk))
            except httpx.HTTPError as exc:
                log.warning("demo: ingest unreachable (%s)", exc)
                await asyncio.sleep(1)
                continue
            if resp.status_code == 202:
                break
            if resp.status_code in (401, 503):  # key not folded in yet / broker busy
                await asyncio.sleep(0.5 + attempt * 0.2)
                continue
            log.error("demo: ingest refused a batch: %s %s", resp.status_code, resp.text[:500])
            break


def write_history(path: Path, accounts: int, days: int, seed: int = 7) -> int:
    """A synthetic history for ``loyalty offers simulate`` and backfills: the
    fleet subscribes on day 0, then lives ``days`` days; monthly plans pay each
    month. Deterministic for a seed. Returns the number of events written."""
    rng = random.Random(seed)
    fleet = make_accounts(accounts, rng)
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    ids = itertools.count()

    def at(e: dict[str, Any], t: datetime) -> dict[str, Any]:
        return {**e, "id": f"h{next(ids)}", "time": t.isoformat()}

    for a in fleet:
        rows.append(at(subscription(a, start.date()), start))
    for day in range(days):
        midnight = start.replace(hour=0) + timedelta(days=day)
        for a in fleet:
            if day and day % 30 == 0 and a.interval == "month":
                amount = {"amount": a.seats * a.price_per_seat, "currency": "USD"}
                paid = {"invoice_id": f"inv-{a.account}-{day}", "amount": amount}
                rows.append(at(_event("billing.invoice_paid", a.account, paid), midnight))
            if rng.random() < 0.55:
                t = midnight + timedelta(seconds=rng.randint(3600, 86_000))
                rows += [at(e, t + timedelta(seconds=i)) for i, e in enumerate(step(a, rng))]
    rows.sort(key=lambda r: r["time"])
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return len(rows)
