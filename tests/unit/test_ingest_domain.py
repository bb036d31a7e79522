"""Validation of incoming events: per index, field and reason; all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.ingest.domain import (
    MAX_BATCH,
    Arrival,
    BatchTooLarge,
    NotAnEventList,
    topic_for,
    validate,
    validate_binary,
)

AT = Arrival(now=datetime(2026, 11, 20, 12, tzinfo=UTC))


def ev(**over: Any) -> dict[str, Any]:
    base = {
        "specversion": "1.0",
        "id": "1",
        "source": "s",
        "type": "product.seats_changed",
        "subject": "a",
        "time": "2026-11-20T10:00:00Z",
        "data": {"seats_used": 3},
    }
    return {**base, **over}


def test_valid_event_gets_the_tenant_from_the_key_and_routes_by_family() -> None:
    events, errors = validate(ev(), "acme", batch=False, arrival=AT)
    assert errors == [] and events[0].tenant == "acme"
    assert topic_for(events[0]) == "events.product"


def test_one_bad_event_rejects_the_whole_batch_with_precise_errors() -> None:
    events, errors = validate(
        [ev(), ev(data={"seats_used": -1}), ev(time="yesterday")], "acme", batch=True, arrival=AT
    )
    assert events == []
    assert [(e.index, e.field) for e in errors] == [(1, "data.seats_used"), (2, "time")]


def test_times_need_a_zone() -> None:
    _, errors = validate(ev(time="2026-11-20T10:00:00"), "acme", batch=False, arrival=AT)
    assert [(e.field, "timezone" in e.reason) for e in errors] == [("time", True)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (ev(tenant="other"), "tenant"),
        (ev(type="offer.issued"), "type"),
        (ev(type="nope.nope"), "type"),
        (ev(extra_attr=1), "extra_attr"),
        (ev(subject=""), "subject"),
    ],
)
def test_rejections_name_the_field(body: dict[str, Any], field: str) -> None:
    _, errors = validate(body, "acme", batch=False, arrival=AT)
    assert [e.field for e in errors] == [field]


def test_shape_and_size_limits() -> None:
    with pytest.raises(NotAnEventList):
        validate(ev(), "acme", batch=True, arrival=AT)
    with pytest.raises(NotAnEventList):
        validate([ev()], "acme", batch=False, arrival=AT)
    with pytest.raises(BatchTooLarge):
        validate([ev()] * (MAX_BATCH + 1), "acme", batch=True, arrival=AT)
    events, errors = validate(
        [ev(id=str(i)) for i in range(MAX_BATCH)], "acme", batch=True, arrival=AT
    )
    assert len(events) == MAX_BATCH and not errors


def test_extension_attributes_are_kept_as_strings_and_optional_attributes_accepted() -> None:
    body = ev(
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="congo=t61rcWkgMzE",
        sampled=True,
        priority=3,
        dataschema="https://example.com/schemas/seats.json",
        datacontenttype="application/json; charset=utf-8",
    )
    events, errors = validate(body, "acme", batch=False, arrival=AT)
    assert errors == []
    event = events[0]
    assert event.extensions == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "congo=t61rcWkgMzE",
        "sampled": "true",
        "priority": "3",
    }
    assert event.dataschema == "https://example.com/schemas/seats.json"
    # the structured form puts them back beside the spec's attributes
    dumped = event.model_dump(mode="json")
    assert dumped["traceparent"] == body["traceparent"] and "extensions" not in dumped


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"TraceParent": "x"}, "TraceParent", "lowercase a-z and 0-9"),
        ({"trace_parent": "x"}, "trace_parent", "lowercase a-z and 0-9"),
        ({"a" * 21: "x"}, "a" * 21, "at most 20 characters"),
        ({"traceparent": {"nested": 1}}, "traceparent", "a string, an integer or a boolean"),
        ({"traceparent": 1.5}, "traceparent", "a string, an integer or a boolean"),
        ({"traceparent": None}, "traceparent", "a string, an integer or a boolean"),
        ({"big": 2**31}, "big", "32-bit"),
        ({"traceparent": "a\nb"}, "traceparent", "(U+000A) at position 1"),
        ({"traceparent": "x" * 2049}, "traceparent", "at most 2048"),
        ({"extensions": {"a": "b"}}, "extensions", "at the top level"),
        ({"data_base64": "AAAA"}, "data_base64", "data must be JSON"),
        ({"datacontenttype": "application/xml"}, "datacontenttype", "data must be JSON"),
        ({"dataschema": "not a uri"}, "dataschema", "an absolute URI"),
    ],
)
def test_bad_extensions_and_optional_attributes_name_the_attribute(
    over: dict[str, Any], field: str, words: str
) -> None:
    events, errors = validate(ev(**over), "acme", batch=False, arrival=AT)
    assert events == []
    assert [e.field for e in errors] == [field], errors
    assert words in errors[0].reason


def test_binary_mode_reads_percent_encoded_headers_and_names_them_in_errors() -> None:
    headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "evt%201"),
        ("ce-source", "app"),
        ("ce-type", "product.login"),
        ("ce-subject", "acct-1"),
        ("ce-time", "2026-11-20T10:00:00Z"),
        ("ce-traceparent", "00-abc-01"),
        ("content-type", "application/json"),
        ("authorization", "Bearer x"),
    ]
    events, errors = validate_binary(
        headers, "application/json", {"user_id": "u1"}, "acme", arrival=AT
    )
    assert errors == []
    assert (events[0].id, events[0].extensions) == ("evt 1", {"traceparent": "00-abc-01"})

    bad = [(k, "a%00b" if k == "ce-id" else v) for k, v in headers if k != "ce-source"]
    _, errors = validate_binary(bad, "application/json", {"user_id": 7}, "acme", arrival=AT)
    assert {(e.field, e.reason.split(" (")[0]) for e in errors} == {
        ("ce-id", "a control character"),
        ("ce-source", "Field required"),
        ("data.user_id", "Input should be a valid string"),
    }
    _, errors = validate_binary(
        [*headers, ("ce-tenant", "other")], "application/json", {"user_id": "u"}, "acme", AT
    )
    assert [e.field for e in errors] == ["ce-tenant"]
