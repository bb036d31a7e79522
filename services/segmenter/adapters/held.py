"""Event-time mode over several partitions: a history folded in time order.

A tenant's history posted through ingest is spread over the partitions of three
topics, and the segmenter reads them at their own paces: folding each event as it
comes would let the fastest partition move the tenant's watermark and make the
others' events "late". So a sender that posts its history in time order asks
ingest (``POST /v1/events?ordered=true``) to bracket each batch with
``clock.watermark`` records on every input partition — a promise that nothing
older follows there.

Once a partition carries a watermark for a tenant, the tenant's events on it are
held here (in the batch's transaction, so effectively once) instead of folded.
The tenant's stream time may then go as far as the *minimum* of its partitions'
watermarks, once every partition the watermark was written to has one: the held
events up to it are released in (time, account, topic, partition, offset) order —
the order ``loyalty segments backfill`` folds a file in — and folded. Partitions
that never carried a watermark pass their events straight through, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import ClockWatermark
from services.runtime.admission import record_arrival
from services.runtime.batch import Inbound, headers_from_json, headers_json
from services.runtime.codec import decode
from services.runtime.topics import TopicNames

PartitionKey = tuple[str, str, int]
"""(tenant, logical topic, partition)."""


async def hold_in_order(
    conn: AsyncConnection, names: TopicNames, events: Sequence[Inbound], marks: Sequence[Inbound]
) -> list[Inbound]:
    """What to fold now, in order: ``events`` of partitions without a watermark (as
    they came), then the held events that every partition's watermark has passed,
    in time order. ``marks`` are the batch's time records (ticks are ignored)."""
    newest: dict[PartitionKey, tuple[datetime, int]] = {}
    for item in marks:
        m = item.event
        if isinstance(m, ClockWatermark):
            key = (m.tenant, item.topic, item.partition)
            at, expected = newest.get(key, (m.data.watermark, m.data.partitions))
            newest[key] = (max(at, m.data.watermark), max(expected, m.data.partitions))
    if newest:
        keys = sorted(newest)
        await conn.execute(
            text(
                "INSERT INTO partition_marks (tenant, topic, partition, watermark, expected)"
                " SELECT * FROM unnest(CAST(:t AS text[]), CAST(:tp AS text[]),"
                " CAST(:p AS int[]), CAST(:w AS timestamptz[]), CAST(:e AS int[]))"
                " ON CONFLICT (tenant, topic, partition) DO UPDATE SET"
                " watermark = GREATEST(partition_marks.watermark, EXCLUDED.watermark),"
                " expected = GREATEST(partition_marks.expected, EXCLUDED.expected)"
            ),
            {
                "t": [k[0] for k in keys],
                "tp": [k[1] for k in keys],
                "p": [k[2] for k in keys],
                "w": [newest[k][0] for k in keys],
                "e": [newest[k][1] for k in keys],
            },
        )
    tenants = sorted({i.event.tenant for i in events} | {k[0] for k in newest})
    if not tenants:
        return list(events)
    rows = await conn.execute(
        text("SELECT tenant, topic, partition FROM partition_marks WHERE tenant = ANY(:t)"),
        {"t": tenants},
    )
    marked = {(t, tp, p) for t, tp, p in rows.all()}
    if not marked:
        return list(events)
    through: list[Inbound] = []
    held: list[Inbound] = []
    for item in events:
        key = (item.event.tenant, item.topic, item.partition)
        (held if key in marked else through).append(item)
    if held:
        await _hold(conn, held)
    return through + await _release(conn, names, sorted({k[0] for k in marked}))


async def _hold(conn: AsyncConnection, items: Sequence[Inbound]) -> None:
    records = [i.record for i in items]
    await conn.execute(
        text(
            'INSERT INTO held_events (tenant, at, account, topic, partition, "offset", stamp,'
            " key, value, headers) SELECT * FROM unnest(CAST(:t AS text[]),"
            " CAST(:at AS timestamptz[]), CAST(:a AS text[]), CAST(:tp AS text[]),"
            " CAST(:p AS int[]), CAST(:o AS bigint[]), CAST(:s AS bigint[]),"
            " CAST(:k AS bytea[]), CAST(:v AS bytea[]), CAST(:h AS text[]))"
            " ON CONFLICT DO NOTHING"
        ),
        {
            "t": [i.event.tenant for i in items],
            "at": [i.event.time for i in items],
            "a": [i.event.subject for i in items],
            "tp": [i.topic for i in items],
            "p": [i.partition for i in items],
            "o": [i.offset for i in items],
            "s": [r.timestamp if r is not None else None for r in records],
            "k": [r.key if r is not None else None for r in records],
            "v": [r.value if r is not None else b"" for r in records],
            "h": [headers_json(r.headers if r is not None else ()) for r in records],
        },
    )


async def _release(conn: AsyncConnection, names: TopicNames, tenants: list[str]) -> list[Inbound]:
    """Takes out the held events that the tenants' lowest watermark has passed, once
    every partition a watermark was written to has one."""
    rows = await conn.execute(
        text(
            "SELECT tenant, min(watermark) FROM partition_marks WHERE tenant = ANY(:t)"
            " GROUP BY tenant HAVING count(*) >= max(expected)"
        ),
        {"t": tenants},
    )
    ready: dict[str, datetime] = {t: s for t, s in rows.all()}
    if not ready:
        return []
    keys = sorted(ready)
    released = await conn.execute(
        text(
            "DELETE FROM held_events h USING unnest(CAST(:t AS text[]),"
            " CAST(:s AS timestamptz[])) AS d(tenant, upto)"
            " WHERE h.tenant = d.tenant AND h.at <= d.upto"
            ' RETURNING h.at, h.account, h.topic, h.partition, h."offset", h.stamp, h.key,'
            " h.value, h.headers"
        ),
        {"t": keys, "s": [ready[k] for k in keys]},
    )
    out: list[Inbound] = []
    for _at, _account, topic, partition, offset, stamp, key, value, headers in sorted(
        released.all(), key=lambda r: (r[0], r[1], r[2], r[3], r[4])
    ):
        hdrs = tuple(headers_from_json(headers))
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic=names.physical(topic),
            partition=partition,
            offset=offset,
            timestamp=stamp if stamp is not None else -1,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key) if key is not None else -1,
            serialized_value_size=len(value),
            headers=hdrs,
        )
        arrival = record_arrival(stamp)
        event = decode(value, hdrs)  # it was valid when held
        out.append(Inbound(event, topic, partition, offset, record, arrival))
    return out
