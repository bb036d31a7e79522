"""Clock ticks and watermarks as records: one per partition, ids that a replay or a
second ticker reproduces, and handlers that tell them from account events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.events import ClockTick, ClockWatermark
from services.runtime.batch import Inbound
from services.runtime.codec import decode, encode
from services.runtime.ticks import TICKED_TOPICS, round_ticks, split_ticks, watermark_records
from tests.unit.segmenter_events import login

AT = datetime(2026, 12, 1, 9, tzinfo=UTC)
PARTS = dict.fromkeys(TICKED_TOPICS, 6)


def test_a_round_ticks_every_partition_once_and_says_its_size() -> None:
    ticks = round_ticks("acme", AT, PARTS)
    assert sorted((t, p) for t, p, _ in ticks) == sorted(
        (t, p) for t in TICKED_TOPICS for p in range(6)
    )
    assert {tick.data.round_size for _, _, tick in ticks} == {18}
    assert all(tick.time == tick.data.round == AT for _, _, tick in ticks)
    assert all(tick.data.topic == t and tick.data.partition == p for t, p, tick in ticks)
    assert len({tick.id for _, _, tick in ticks}) == 18


def test_tick_ids_repeat_for_the_same_round_and_differ_otherwise() -> None:
    same = [tick.id for _, _, tick in round_ticks("acme", AT, PARTS)]
    assert same == [tick.id for _, _, tick in round_ticks("acme", AT, PARTS)]
    later = {tick.id for _, _, tick in round_ticks("acme", AT + timedelta(minutes=1), PARTS)}
    other = {tick.id for _, _, tick in round_ticks("globex", AT, PARTS)}
    marks = {m.id for _, _, m in watermark_records("acme", AT, PARTS)}
    assert not (set(same) & later) and not (set(same) & other) and not (set(same) & marks)


def test_ticks_and_watermarks_survive_the_codec_and_are_split_from_events() -> None:
    (_, _, tick), *_ = round_ticks("acme", AT, PARTS)
    (_, _, mark), *_ = watermark_records("acme", AT, PARTS)
    event = login("a1", AT, tenant="acme")
    items = [
        Inbound(decode(encode(e).value, encode(e).headers), "events.product", 0, n)
        for n, e in enumerate([tick, event, mark])
    ]
    assert isinstance(items[0].event, ClockTick) and items[0].event == tick
    assert isinstance(items[2].event, ClockWatermark) and items[2].event == mark
    events, clocks = split_ticks(items)
    assert [i.offset for i in events] == [1]
    assert [i.offset for i in clocks] == [0, 2]
