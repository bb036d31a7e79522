"""Folds the topics into the insights facts, and publishes ``bundle.ready``.

:func:`process` is the whole consuming logic over a storage protocol, so that the
runtime handler (Postgres) and ``loyalty insights report --history`` (memory) run
the same code. Facts are kept per tenant; each tenant's stream clock is the
latest event time read (clock ticks move it only by rounds read on every input
partition, as in the offers service, so that a partition's backlog is not
overtaken by another partition's tick).

**Readiness.** Once per stream day of a tenant, after the first batch whose
records take its clock past midnight, and again whenever the tenant's adoptions
grew by a tenth since the last check (a backlog read at its own pace moves the
clock to its last day long before its adoptions are all in), the strong sequences
(``bundles.sequences`` above the program's minimums, with at least
``min_accounts`` accounts that went from A to B) are computed from the
adoptions so far, and every account inside a sequence's typical delay
(``bundles.ready_accounts``) that was never signalled for that sequence gets
one ``bundle.ready`` on ``insights.signals``, stamped with that batch's stream
time. Checked once a day, an account whose window is shorter than a day may be
passed over. The reports are identical after any replay; which day an account's signal goes out
depends on how far the other partitions had been read by then, as with any
tenant-wide statistic read live."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.events import BundleReady, BundleReadyData, ClockTick, ClockWatermark, Event
from services.insights.adapters.postgres import PostgresInsightsStore
from services.insights.domain import bundles
from services.insights.domain.bundles import Adoption
from services.insights.domain.facts import Fact, facts_of
from services.insights.domain.program import InsightsProgram
from services.insights.ports import InsightsStore
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.ticks import complete_rounds, split_ticks

SOURCE = "loyalty/insights"
SIGNALS = "insights.signals"
_IDS = uuid.UUID("5b0e6c84-2f5d-4c8e-9a53-0d6f1e7b2a91")


def _day(t: datetime) -> datetime:
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


async def process(
    store: InsightsStore,
    program: InsightsProgram,
    batch: Sequence[Event],
    rounds: Mapping[str, datetime] | None = None,
) -> list[Event]:
    """Keeps the batch's facts and moves the clocks; returns the signals to publish.
    Without ``rounds`` (memory), every tick moves its tenant's clock."""
    marks: dict[str, datetime] = dict(rounds or {})
    facts: dict[str, list[Fact]] = defaultdict(list)
    for e in batch:
        if isinstance(e, ClockTick) and rounds is not None:
            continue
        marks[e.tenant] = max(marks.get(e.tenant, e.time), e.time)
        if not isinstance(e, ClockTick | ClockWatermark):
            facts[e.tenant] += facts_of(e)
    for tenant in sorted(facts):
        await store.add(tenant, facts[tenant])
    signals: list[Event] = []
    for tenant, now in sorted((await store.advance(marks)).items()):
        if not program.signals:
            continue
        checked, seen = await store.readiness_checked(tenant)
        adopted = any(isinstance(f, Adoption) for f in facts.get(tenant, ()))
        count = await store.adoption_count(tenant) if adopted else seen
        if checked is None or _day(now) > checked or count >= seen + max(1, seen // 10):
            signals += await readiness(store, program, tenant, now)
            await store.mark_readiness(tenant, _day(now), count)
    return signals


async def strong_sequences(
    store: InsightsStore, program: InsightsProgram, tenant: str, now: datetime
) -> list[bundles.SequenceStat]:
    counts = await store.bundle_counts(tenant, program.window_days, now)
    return [
        s
        for s in bundles.sequences(
            counts, program.sequence_min_support, program.sequence_min_confidence
        )
        if s.accounts >= program.min_sequence_accounts
    ]


async def readiness(
    store: InsightsStore, program: InsightsProgram, tenant: str, now: datetime
) -> list[Event]:
    """The ``bundle.ready`` events due at ``now`` (each claimed once)."""
    ready: list[tuple[str, datetime, bundles.SequenceStat]] = []
    for seq in await strong_sequences(store, program, tenant, now):
        ready += [(a, at, seq) for a, at in await store.ready_accounts(tenant, seq, now)]
    name = {id(s): f"{s.antecedent}>{s.consequent}" for _, _, s in ready}
    new = await store.claim_signals(tenant, [(a, name[id(s)]) for a, _, s in ready], now)
    out: list[Event] = []
    for account, adopted_at, seq in ready:
        sequence = name[id(seq)]
        if (account, sequence) not in new:
            continue
        out.append(
            BundleReady(
                id=str(uuid.uuid5(_IDS, f"{tenant}/{account}/{sequence}")),
                source=SOURCE,
                type="bundle.ready",
                subject=account,
                time=now,
                tenant=tenant,
                data=BundleReadyData(
                    sequence=sequence,
                    adopted=seq.antecedent,
                    expected=seq.consequent,
                    adopted_at=adopted_at,
                    typical_delay_days=round(seq.median_delay_days, 2),
                    support=round(seq.support, 4),
                    confidence=round(seq.confidence, 4),
                ),
            )
        )
    return out


@dataclass
class InsightsHandler:
    """The runtime handler: :func:`process` in the batch's transaction; the signals
    go out through the outbox."""

    program: InsightsProgram

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        _, clocks = split_ticks(batch)
        rounds = await complete_rounds(uow.conn, clocks)
        store = PostgresInsightsStore(uow.conn)
        for event in await process(store, self.program, [i.event for i in batch], rounds):
            uow.publish(SIGNALS, event)
