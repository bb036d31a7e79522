"""Validation of incoming events: per index, field and reason; all or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.domain import MAX_BATCH, BatchTooLarge, NotAnEventList, topic_for, validate


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
    events, errors = validate(ev(), "acme", batch=False)
    assert errors == [] and events[0].tenant == "acme"
    assert topic_for(events[0]) == "events.product"


def test_one_bad_event_rejects_the_whole_batch_with_precise_errors() -> None:
    events, errors = validate(
        [ev(), ev(data={"seats_used": -1}), ev(time="yesterday")], "acme", batch=True
    )
    assert events == []
    assert [(e.index, e.field) for e in errors] == [(1, "data.seats_used"), (2, "time")]


def test_times_need_a_zone() -> None:
    _, errors = validate(ev(time="2026-11-20T10:00:00"), "acme", batch=False)
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
    _, errors = validate(body, "acme", batch=False)
    assert [e.field for e in errors] == [field]


def test_shape_and_size_limits() -> None:
    with pytest.raises(NotAnEventList):
        validate(ev(), "acme", batch=True)
    with pytest.raises(NotAnEventList):
        validate([ev()], "acme", batch=False)
    with pytest.raises(BatchTooLarge):
        validate([ev()] * (MAX_BATCH + 1), "acme", batch=True)
    events, errors = validate([ev(id=str(i)) for i in range(MAX_BATCH)], "acme", batch=True)
    assert len(events) == MAX_BATCH and not errors
