"""When ``bundle.ready`` goes out (services/insights/handlers.py): once per account
and sequence, and also when a backlog's adoptions arrive after its clock already
reached the last day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from schemas.events import Event, FeatureUsed, FeatureUsedData, Login, LoginData
from services.insights.adapters.memory import MemoryInsightsStore
from services.insights.domain.program import load_insights_program
from services.insights.handlers import process

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
PROGRAM = load_insights_program(
    {"insights": {"bundles": {"min_accounts": 10, "sequence_window": "30d"}}}
)


def used(account: str, feature: str, at: datetime) -> Event:
    return FeatureUsed(
        id=f"{account}-{feature}",
        source="app",
        type="product.feature_used",
        subject=account,
        tenant="acme",
        time=at,
        data=FeatureUsedData(user_id="u", feature=feature),
    )


def adoptions() -> list[Event]:
    """24 accounts go from reports to automations in 10 to 18 days; ``ready``
    adopts reports on day 30 and nothing else."""
    out: list[Event] = []
    for i in range(24):
        start = T0 + timedelta(hours=i)
        out += [
            used(f"a{i}", "reports", start),
            used(f"a{i}", "automations", start + timedelta(days=10 + i % 9)),
        ]
    return [*out, used("ready", "reports", T0 + timedelta(days=30))]


LATER = Login(
    id="login",
    source="app",
    type="product.login",
    subject="a0",
    tenant="acme",
    time=T0 + timedelta(days=44),
    data=LoginData(user_id="u"),
)


def test_a_backlog_read_out_of_step_still_signals() -> None:
    async def run() -> list[list[Event]]:
        store = MemoryInsightsStore()
        # another partition's record moves the clock to the last day first
        first = await process(store, PROGRAM, [LATER])
        second = await process(store, PROGRAM, adoptions())
        again = await process(store, PROGRAM, [used("x", "api", T0 + timedelta(days=44))])
        return [first, second, again]

    first, second, again = asyncio.run(run())
    assert first == []
    assert [(s.subject, s.data.sequence) for s in second] == [("ready", "reports>automations")]
    assert again == []  # once per account and sequence


def test_in_time_order_the_signal_comes_with_the_day_it_is_due() -> None:
    async def run() -> list[Event]:
        store = MemoryInsightsStore()
        out: list[Event] = []
        for e in sorted([*adoptions(), LATER], key=lambda e: e.time):
            out += await process(store, PROGRAM, [e])
        return out

    [signal] = asyncio.run(run())
    assert signal.subject == "ready" and signal.time == LATER.time
    assert signal.data.adopted_at == T0 + timedelta(days=30)
