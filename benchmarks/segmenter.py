"""``loyalty bench segmenter``: the segmenter's throughput next to the raw rate at
which the same topic can be consumed and JSON-decoded, in the same run.

It loads N synthetic events for M accounts onto fresh topics (a random prefix),
reads them once with a plain consumer that only decodes the JSON (the raw rate),
then runs a segmenter on them and times it from its first committed batch to its
last (group join excluded). Uses the configured Kafka and Postgres, or starts the
embedded ones in a temporary directory.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from benchmarks.stack import (
    bench_settings,
    load_topic,
    raw_rate,
    throwaway_runtime,
    time_consumption,
    with_stack,
)
from schemas import Event, Money
from schemas.events import (
    FeatureUsed,
    FeatureUsedData,
    Login,
    LoginData,
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)
from services.runtime.connections import kafka_connection
from services.runtime.topics import TopicNames, ensure_topics


@dataclass
class BenchResult:
    events: int
    accounts: int
    raw_per_s: float
    segmenter_per_s: float
    batches: int
    mean_batch_ms: float
    transitions: int

    @property
    def ratio(self) -> float:
        return self.segmenter_per_s / self.raw_per_s if self.raw_per_s else 0.0

    def json(self) -> dict[str, Any]:
        return {
            "bench": "segmenter",
            "events": self.events,
            "accounts": self.accounts,
            "raw_per_s": self.raw_per_s,
            "segmenter_per_s": self.segmenter_per_s,
            "ratio": self.ratio,
            "batches": self.batches,
            "mean_batch_ms": self.mean_batch_ms,
            "transitions": self.transitions,
        }

    def lines(self) -> list[str]:
        return [
            f"events        {self.events:,} for {self.accounts:,} accounts",
            f"raw consume + JSON decode   {self.raw_per_s:>10,.0f} events/s",
            f"segmenter (fold + commit)   {self.segmenter_per_s:>10,.0f} events/s",
            f"ratio                       {self.ratio:>10.1%}",
            f"batches {self.batches}, mean {self.mean_batch_ms:.1f} ms a batch,"
            f" {self.transitions:,} segment transitions",
        ]


def synthetic(n: int, accounts: int, tenant: str, seed: int = 11) -> list[Event]:
    """Live-looking traffic: event times within the last 30 minutes, per account in order."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(minutes=30)
    step = timedelta(minutes=30) / max(n, 1)
    out: list[Event] = []
    for i in range(n):
        acct = f"acct-{rng.randrange(accounts):06d}"
        t = start + step * i
        common = {
            "id": uuid.uuid4().hex,
            "source": "bench",
            "subject": acct,
            "tenant": tenant,
            "time": t,
        }
        roll = rng.random()
        if roll < 0.02:
            seats = rng.choice([10, 25, 60, 150])
            out.append(
                SubscriptionUpdated(
                    type="billing.subscription_updated",
                    **common,
                    data=SubscriptionUpdatedData(
                        plan="pro",
                        interval="month",
                        seats_purchased=seats,
                        mrr=Money(amount=seats * 2500, currency="USD"),
                        renewal_date=(now + timedelta(days=90)).date(),
                        status="active",
                    ),
                )
            )
        elif roll < 0.10:
            out.append(
                SeatsChanged(
                    type="product.seats_changed",
                    **common,
                    data=SeatsChangedData(seats_used=rng.randint(1, 150)),
                )
            )
        elif roll < 0.45:
            out.append(
                Login(
                    type="product.login", **common, data=LoginData(user_id=f"u{rng.randint(1, 50)}")
                )
            )
        else:
            out.append(
                FeatureUsed(
                    type="product.feature_used",
                    **common,
                    data=FeatureUsedData(
                        user_id=f"u{rng.randint(1, 50)}",
                        feature=rng.choice(["reports", "api", "sso"]),
                        key_action=rng.random() < 0.4,
                    ),
                )
            )
    return out


async def run_bench(bootstrap: str, database_url: str, events: int, accounts: int) -> BenchResult:
    from services.segmenter.app import TOPICS, load, spec, wall_clock
    from services.segmenter.config import SegmenterSettings

    settings = bench_settings(SegmenterSettings, bootstrap, database_url)
    kafka = kafka_connection(settings)
    names = TopicNames(settings.topic_prefix)
    await ensure_topics(kafka, names, settings.partitions)
    data = synthetic(events, accounts, tenant="bench")
    await load_topic(kafka, names, data)
    topics = [names.physical(t) for t in ("events.product", "events.billing")]
    raw = await raw_rate(kafka, topics, events)

    async with throwaway_runtime(spec(load(settings), wall_clock), settings) as rt:
        timed = await time_consumption(rt, TOPICS, events)
        hist = next(iter(rt.metrics.batch_seconds.collect())).samples
        count = next(s.value for s in hist if s.name.endswith("_count"))
        total = next(s.value for s in hist if s.name.endswith("_sum"))
        async with rt.engine.connect() as conn:
            transitions = int(
                (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            )
        transitions += int(
            sum(
                sample.value
                for metric in rt.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == "loyalty_messages_published_total"
            )
        )
    return BenchResult(
        events,
        accounts,
        raw,
        timed.rate,
        int(count),
        1000 * total / count if count else 0.0,
        transitions,
    )


def bench_with_embedded(events: int, accounts: int) -> BenchResult:
    return with_stack(lambda bootstrap, db: run_bench(bootstrap, db, events, accounts))
