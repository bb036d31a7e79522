"""The pure part of the dead-letter mechanism: entries from records, safe text,
replay headers, filters and paging."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.dead_letters import Topic
from services.runtime import dlq
from services.runtime.topics import TopicNames

NAMES = TopicNames("env1.")


def record(
    offset: int,
    *,
    topic: str = "env1.events.billing.dlq",
    partition: int = 2,
    reason: str = "unknown tenant 'ghost'",
    tenant: bytes | None = b"ghost",
    service: str = "ledger",
    source_offset: int = 40,
    value: bytes | None = b'{"invoice_id":"i-1"}',
) -> dlq.DeadLetter:
    headers = [
        ("content-type", b"application/json"),
        ("ce_id", f"ev-{offset}".encode()),
        ("ce_type", b"billing.invoice_paid"),
        *([("ce_tenant", tenant)] if tenant is not None else []),
        ("dlq_reason", reason.encode()),
        ("dlq_service", service.encode()),
        ("dlq_source_topic", b"env1.events.billing"),
        ("dlq_source_partition", str(partition).encode()),
        ("dlq_source_offset", str(source_offset).encode()),
    ]
    return dlq.parse_record(
        NAMES, topic, partition, offset, 1_700_000_000_000, b"k", value, headers
    )


def test_an_entry_says_where_it_came_from_in_logical_names() -> None:
    e = record(7)
    assert e.id == "events.billing.dlq:2:7"
    assert (e.topic, e.source_topic, e.source_partition, e.source_offset) == (
        "events.billing.dlq",
        "events.billing",
        2,
        40,
    )
    assert (e.service, e.reason, e.event_id, e.type, e.tenant, e.status) == (
        "ledger",
        "unknown tenant 'ghost'",
        "ev-7",
        "billing.invoice_paid",
        "ghost",
        "open",
    )
    assert e.dead_lettered_at is not None and e.dead_lettered_at.year == 2023
    assert dlq.parse_id(e.id) == ("events.billing.dlq", 2, 7)


def test_invalid_utf8_is_shown_escaped_and_the_preview_is_bounded() -> None:
    e = record(1, value=b"\xff\xfeok" + b"x" * 1000, tenant=b"\xff")
    assert e.preview.startswith("\\xff\\xfeok")
    assert len(e.preview) == dlq.PREVIEW_CHARS
    assert e.tenant is None  # an undecodable tenant is no tenant: only the operator sees it
    assert not e.visible_to("ghost") and e.visible_to(None)
    assert dlq.Detail(e, []).value.startswith("\\xff\\xfeok")
    assert dlq.as_text(None) == ""


def test_a_replay_carries_the_original_headers_and_the_mark_not_the_dlq_ones() -> None:
    e = record(3)
    replayed = dlq.replay_headers(e)
    assert [k for k, _ in replayed] == [
        "content-type",
        "ce_id",
        "ce_type",
        "ce_tenant",
        dlq.REPLAY_HEADER,
    ]
    # a replay dead-lettered again and replayed once more: still one mark, the newest
    again = replace(e, headers=(*e.headers, (dlq.REPLAY_HEADER, b"older:0:1")))
    marks = [v for k, v in dlq.replay_headers(again) if k == dlq.REPLAY_HEADER]
    assert marks == [e.id.encode()]


def test_filters_by_tenant_reason_status_and_topic() -> None:
    entries = [
        record(0),
        record(1, reason="data error: x", tenant=b"acme"),
        replace(record(2), status="replayed"),
        record(0, topic="env1.events.product.dlq"),
    ]
    ids = lambda q: [e.id for e in dlq.select(entries, q).dead_letters]  # noqa: E731
    assert ids(dlq.Query()) == ["events.billing.dlq:2:0", "events.billing.dlq:2:1",
                                "events.product.dlq:2:0"]  # fmt: skip
    assert ids(dlq.Query(tenant="acme")) == ["events.billing.dlq:2:1"]
    assert ids(dlq.Query(reason="DATA")) == ["events.billing.dlq:2:1"]
    assert ids(dlq.Query(status="replayed")) == ["events.billing.dlq:2:2"]
    assert len(ids(dlq.Query(status="all"))) == 4
    assert ids(dlq.Query(topic="events.product")) == ["events.product.dlq:2:0"]
    assert ids(dlq.Query(topic="events.product.dlq")) == ["events.product.dlq:2:0"]
    with pytest.raises(dlq.UnknownTopic):
        dlq.select(entries, dlq.Query(topic="tenants"))


@given(n=st.integers(0, 30), limit=st.integers(1, 7))
def test_paging_visits_every_entry_once_in_order(n: int, limit: int) -> None:
    entries = [record(i) for i in reversed(range(n))]
    seen: list[str] = []
    after = None
    while True:
        page = dlq.select(entries, dlq.Query(limit=limit, after=after))
        seen += [e.id for e in page.dead_letters]
        if page.next is None:
            break
        after = page.next
    assert seen == [f"events.billing.dlq:2:{i}" for i in range(n)]


def test_siblings_share_the_source_record() -> None:
    a, b = record(1, service="ledger"), record(2, service="offers")
    assert a.source == b.source
    assert record(3, source_offset=41).source != a.source


def test_malformed_ids_are_not_found() -> None:
    for bad in ("events.billing:1:2", "events.billing.dlq:x:2", "a.dlq:1", ""):
        with pytest.raises(dlq.NotFound):
            dlq.parse_id(bad)


def test_the_http_topics_are_the_runtime_s() -> None:
    assert set(get_args(Topic)) == {
        *dlq.SOURCE_TOPICS,
        *(t + ".dlq" for t in dlq.SOURCE_TOPICS),
    }


def test_a_dead_letter_older_than_the_dedupe_retention_is_not_replayed() -> None:
    e = record(1)  # dead-lettered at 2023-11-14T22:13:20Z
    assert e.dead_lettered_at is not None
    month = timedelta(days=30)
    assert not dlq.too_old(e, e.dead_lettered_at + timedelta(days=28), month)
    assert dlq.too_old(e, e.dead_lettered_at + timedelta(days=29, hours=1), month)
    assert not dlq.too_old(e, e.dead_lettered_at + timedelta(days=999), None)


def test_the_api_topic_enum_is_the_topic_contract() -> None:
    from typing import get_args

    from schemas.topics import ACCOUNT_TOPICS, DLQ_SUFFIX
    from services.ingest.dead_letters import Topic

    assert set(get_args(Topic)) == {*ACCOUNT_TOPICS, *(t + DLQ_SUFFIX for t in ACCOUNT_TOPICS)}


def test_copies_of_one_services_dead_letter_fold_into_the_first() -> None:
    first = record(3, service="ledger", source_offset=40)
    copy = record(5, service="ledger", source_offset=40)  # rewound, dead-lettered again
    other_service = record(4, service="offers", source_offset=40)  # a sibling, not a copy
    other_record = record(6, service="ledger", source_offset=41)
    folded = dlq.fold_copies([copy, other_record, first, other_service])
    assert [e.id for e in folded] == [
        "events.billing.dlq:2:3",
        "events.billing.dlq:2:4",
        "events.billing.dlq:2:6",
    ]


def test_a_read_adds_new_records_and_forgets_what_the_broker_no_longer_holds() -> None:
    kept: dict[tuple[str, int], list[dlq.DeadLetter]] = {}
    dlq.merge_read(kept, [record(0), record(1), record(2)], {"events.billing.dlq:2": 0})
    dlq.merge_read(kept, [record(3)], {"events.billing.dlq:2": 0})  # only what is new
    assert [e.offset for e in kept[("events.billing.dlq", 2)]] == [0, 1, 2, 3]
    dlq.merge_read(kept, [], {"events.billing.dlq:2": 2})  # retention removed 0 and 1
    assert [e.offset for e in kept[("events.billing.dlq", 2)]] == [2, 3]
    # the partition answers from an offset already kept: its topic was made anew
    dlq.merge_read(kept, [record(0, reason="new")], {"events.billing.dlq:2": 0})
    assert [(e.offset, e.reason) for e in kept[("events.billing.dlq", 2)]] == [(0, "new")]
    other = record(7, partition=4)
    dlq.merge_read(kept, [other], {"events.billing.dlq:4": 0})
    assert kept[("events.billing.dlq", 4)] == [other]
    assert len(kept[("events.billing.dlq", 2)]) == 1  # each partition on its own
