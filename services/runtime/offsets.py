"""The consumed offsets a service keeps in Postgres (``consumer_offsets``), written
in the same transaction as a batch's effects: where each partition resumes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def lock_offsets(
    conn: AsyncConnection, records: Sequence[ConsumerRecord[bytes, bytes]]
) -> dict[tuple[str, int], int]:
    """Locks (creating if needed) the stored offsets of the records' partitions, in a
    fixed order, and returns them: a batch from an instance that lost a partition
    meanwhile sees the new owner's offsets and drops what is already applied. Only
    the batch's own partitions are locked, so instances owning other partitions of
    the same topics never wait for each other here."""
    tps = sorted({(r.topic, r.partition) for r in records})
    params = {"t": [t for t, _ in tps], "p": [p for _, p in tps]}
    await conn.execute(
        text(
            "INSERT INTO consumer_offsets (topic, partition, next_offset)"
            " SELECT t, p, 0 FROM unnest(CAST(:t AS text[]), CAST(:p AS int[])) AS x(t, p)"
            " ON CONFLICT DO NOTHING"
        ),
        params,
    )
    rows = await conn.execute(
        text(
            "SELECT topic, partition, next_offset FROM consumer_offsets"
            " WHERE (topic, partition) IN (SELECT * FROM unnest(CAST(:t AS text[]),"
            " CAST(:p AS int[]))) ORDER BY topic, partition FOR UPDATE"
        ),
        params,
    )
    return {(t, p): int(o) for t, p, o in rows.all()}


async def store_offsets(
    conn: AsyncConnection, records: Sequence[ConsumerRecord[bytes, bytes]]
) -> None:
    """Stores, per partition, the offset after the batch's last record there."""
    nxt: dict[tuple[str, int], int] = defaultdict(int)
    for r in records:
        nxt[(r.topic, r.partition)] = max(nxt[(r.topic, r.partition)], r.offset + 1)
    await conn.execute(
        text(
            "UPDATE consumer_offsets SET next_offset = GREATEST(next_offset, :o),"
            " updated_at = now() WHERE topic = :t AND partition = :p"
        ),
        [{"t": t, "p": p, "o": o} for (t, p), o in sorted(nxt.items())],
    )


async def load_offsets(
    engine: AsyncEngine, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The stored offsets of ``tps`` (a partition never consumed has none)."""
    wanted = list(tps)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT topic, partition, next_offset FROM consumer_offsets"
                " WHERE topic = ANY(:topics)"
            ),
            {"topics": sorted({tp.topic for tp in wanted})},
        )
        stored = {TopicPartition(t, p): int(o) for t, p, o in rows.all()}
    return {tp: stored[tp] for tp in wanted if tp in stored}


async def consumed(engine: AsyncEngine, physical_topics: Iterable[str]) -> int:
    """How many records of the topics have been applied (the sum of the stored
    offsets): progress for benchmarks and tests."""
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                    " WHERE topic = ANY(:t)"
                ),
                {"t": list(physical_topics)},
            )
        ).scalar_one()
    return int(total)
