"""Hostile input refused by ingest's pure validation, each with the field and reason."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.domain import (
    MAX_DEPTH,
    Arrival,
    MalformedBody,
    parse_body,
    validate,
)

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
AT = Arrival(now=NOW, max_clock_skew=timedelta(minutes=5))


def ev(etype: str = "product.login", data: Any = None, **over: Any) -> dict[str, Any]:
    body = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "app",
        "type": etype,
        "subject": "acct-1",
        "time": "2026-11-20T10:00:00Z",
        "data": data if data is not None else {"user_id": "u1"},
    }
    return {**body, **over}


def errors_of(body: Any, batch: bool = False) -> list[tuple[int, str, str]]:
    events, errors = validate(body, "acme", batch, AT)
    assert events == [] or not errors
    return [(e.index, e.field, e.reason) for e in errors]


# ------------------------------------------------------------------ body


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_a_body_nested_100000_levels_is_refused_quickly_without_recursion(opener: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedBody, match=f"deeper than {MAX_DEPTH} levels"):
        parse_body(opener * 100_000)
    assert time.perf_counter() - started < 0.5


def test_depth_limit_is_exact() -> None:
    assert parse_body(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(MalformedBody, match="deeper than"):
        parse_body(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    wide = json.dumps([ev(id=str(i)) for i in range(1000)]).encode()
    assert len(parse_body(wide)) == 1000


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{oops", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'"\\ud800"', "not JSON"),  # a lone surrogate cannot be encoded as UTF-8
        (b'{"id": "a\x00b"}', "control character"),  # raw controls are not JSON
        (b"\xff\xfe", "not JSON"),
        (b"{} {}", "trailing characters"),
    ],
)
def test_what_is_not_json_is_a_reason(body: bytes, words: str) -> None:
    with pytest.raises(MalformedBody, match=words):
        parse_body(body)


# ------------------------------------------------------------------ control characters


@pytest.mark.parametrize("attribute", ["id", "source", "subject"])
@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\x1f", "\x7f"])
def test_control_characters_in_attributes_are_refused_with_the_position(
    attribute: str, char: str
) -> None:
    errors = errors_of(ev(**{attribute: f"ab{char}c"}))
    assert errors == [
        (0, attribute, f"a control character (U+{ord(char):04X}) at position 2 is not allowed")
    ]


def test_a_control_character_in_a_type_is_named_and_a_huge_type_is_not_echoed() -> None:
    assert errors_of(ev(etype="product.login\x00")) == [
        (0, "type", "a control character (U+0000) at position 13 is not allowed")
    ]
    errors = errors_of(ev(etype="product.login" + "x" * 100_000))
    assert [(i, f) for i, f, _ in errors] == [(0, "type")]
    assert "unknown event type" in errors[0][2] and len(errors[0][2]) < 1_000


@pytest.mark.parametrize(
    ("etype", "data", "field"),
    [
        ("product.login", {"user_id": "u\x001"}, "data.user_id"),
        ("product.feature_used", {"user_id": "u", "feature": "f\t"}, "data.feature"),
        (
            "billing.invoice_paid",
            {"invoice_id": "i\r", "amount": {"amount": 1, "currency": "USD"}},
            "data.invoice_id",
        ),
        ("support.ticket_opened", {"ticket_id": "\x7f", "priority": "low"}, "data.ticket_id"),
        # prose may break lines, but never hold a NUL
        ("billing.cancellation_requested", {"reason": "too\x00expensive"}, "data.reason"),
    ],
)
def test_control_characters_in_data_identifiers_are_refused(
    etype: str, data: dict[str, Any], field: str
) -> None:
    errors = errors_of(ev(etype, data))
    assert [f for _, f, _ in errors] == [field]
    assert "a control character" in errors[0][2]


def test_prose_may_hold_tabs_and_line_breaks() -> None:
    reason = "too expensive:\n\t- seats\r\n\t- support"
    events, errors = validate(
        ev("billing.cancellation_requested", {"reason": reason}), "acme", False, AT
    )
    assert errors == [] and events[0].data.reason == reason  # type: ignore[attr-defined]


def test_a_lone_surrogate_is_refused_where_it_is() -> None:
    errors = errors_of(ev(id="a\udc00"))
    assert [(f, "lone surrogate (U+DC00) at position 1" in r) for _, f, r in errors] == [
        ("id", True)
    ]


@given(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
        lambda s: any(c < " " or c == "\x7f" for c in s)
    )
)
def test_any_id_holding_a_control_character_is_refused(event_id: str) -> None:
    assert ("id" in {f for _, f, _ in errors_of(ev(id=event_id))}) is True


@given(
    st.text(
        st.characters(min_codepoint=0x20, exclude_characters="\x7f", codec="utf-8"),
        min_size=1,
        max_size=200,
    )
)
def test_any_printable_id_is_accepted(event_id: str) -> None:
    events, errors = validate(ev(id=event_id), "acme", False, AT)
    assert errors == [] and events[0].id == event_id


# ------------------------------------------------------------------ lengths and numbers


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"id": "x" * 201}, "id"),
        ({"source": "x" * 501}, "source"),
        ({"subject": "x" * 201}, "subject"),
        ({"data": {"user_id": "x" * 201}}, "data.user_id"),
    ],
)
def test_strings_have_a_maximum_length(over: dict[str, Any], field: str) -> None:
    errors = errors_of(ev(**over))
    assert [f for _, f, _ in errors] == [field]
    assert "at most" in errors[0][2]


def test_integers_stay_within_the_range_json_carries_exactly() -> None:
    errors = errors_of(ev("product.seats_changed", {"seats_used": 2**53}))
    assert errors == [
        (0, "data.seats_used", "integer outside ±(2^53-1), the range JSON carries exactly")
    ]
    events, _ = validate(ev("product.seats_changed", {"seats_used": 2**53 - 1}), "a", False, AT)
    assert len(events) == 1


# ------------------------------------------------------------------ time window


@pytest.mark.parametrize(
    ("at", "ok"),
    [
        (NOW + timedelta(minutes=5), True),
        (NOW + timedelta(minutes=5, seconds=1), False),
        (datetime(9999, 12, 31, tzinfo=UTC), False),
        (datetime(2000, 1, 1, tzinfo=UTC), True),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), False),
        (datetime(1970, 1, 1, tzinfo=UTC), False),
    ],
)
def test_event_times_must_lie_between_2000_and_the_clock_skew(at: datetime, ok: bool) -> None:
    errors = errors_of(ev(time=at.isoformat()))
    if ok:
        assert errors == []
        return
    assert [f for _, f, _ in errors] == ["time"]
    reason = errors[0][2]
    if at > NOW:
        assert "ahead of the server's clock at arrival" in reason
        assert "at most 0:05:00 ahead is accepted" in reason
    else:
        assert reason.endswith("is before 2000-01-01")


def test_a_zone_other_than_utc_counts_by_the_instant() -> None:
    # 17:04+05:00 is 12:04Z: within the skew
    assert errors_of(ev(time="2026-11-20T17:04:00+05:00")) == []
    assert [f for _, f, _ in errors_of(ev(time="2026-11-20T17:06:00+05:00"))] == ["time"]


# ------------------------------------------------------------------ money


@pytest.mark.parametrize(
    ("etype", "data", "field"),
    [
        (
            "billing.subscription_updated",
            {
                "plan": "pro",
                "interval": "month",
                "seats_purchased": 5,
                "mrr": {"amount": -1, "currency": "USD"},
                "renewal_date": "2027-01-01",
                "status": "active",
            },
            "data.mrr.amount",
        ),
        (
            "billing.invoice_paid",
            {"invoice_id": "i1", "amount": {"amount": -5000, "currency": "USD"}},
            "data.amount.amount",
        ),
        (
            "billing.credit_applied",
            {"credit_id": "c1", "invoice_id": "i1", "amount": {"amount": -1, "currency": "EUR"}},
            "data.amount.amount",
        ),
    ],
)
def test_negative_money_is_refused_naming_the_field(
    etype: str, data: dict[str, Any], field: str
) -> None:
    errors = errors_of(ev(etype, data))
    assert [(f, r.startswith("must not be negative")) for _, f, r in errors] == [(field, True)]
    zero = json.loads(json.dumps(data).replace("-5000", "0").replace("-1,", "0,"))
    assert errors_of(ev(etype, zero)) == []


# ------------------------------------------------------------------ a batch


def test_a_batch_names_each_bad_event_and_accepts_nothing() -> None:
    batch = [
        ev(id="ok"),
        ev(id="nul\x00id"),
        ev(id="future", time="2099-01-01T00:00:00Z"),
        ev(
            "billing.invoice_paid",
            {"invoice_id": "i", "amount": {"amount": -1, "currency": "USD"}},
            id="neg",
        ),
        ev(id="ok-2"),
    ]
    events, errors = validate(batch, "acme", True, AT)
    assert events == []
    assert [(e.index, e.field) for e in errors] == [
        (1, "id"),
        (2, "time"),
        (3, "data.amount.amount"),
    ]
