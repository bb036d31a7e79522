"""The Kafka binary-mode CloudEvents codec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import Money, SubscriptionUpdated, SubscriptionUpdatedData
from services.runtime.codec import DecodeError, decode, encode


def subscription(account: str = "a-1", amount: int = 50000) -> SubscriptionUpdated:
    return SubscriptionUpdated(
        id="e-1",
        source="billing",
        type="billing.subscription_updated",
        subject=account,
        tenant="acme",
        time=datetime(2026, 11, 20, 10, tzinfo=UTC),
        data=SubscriptionUpdatedData(
            plan="pro",
            interval="month",
            seats_purchased=10,
            mrr=Money(amount=amount, currency="USD"),
            renewal_date=datetime(2027, 1, 1).date(),
            status="active",
        ),
    )


@given(
    account=st.from_regex(r"[A-Za-z0-9_\-]{1,30}", fullmatch=True),
    amount=st.integers(min_value=-(2**53), max_value=2**53),
)
def test_round_trip(account: str, amount: int) -> None:
    event = subscription(account, amount)
    msg = encode(event)
    assert msg.key == f"acme:{account}".encode()
    assert dict(msg.headers)["ce_type"] == b"billing.subscription_updated"
    assert decode(msg.value, msg.headers) == event


def test_missing_attributes_are_named() -> None:
    msg = encode(subscription())
    headers = [(k, v) for k, v in msg.headers if k not in ("ce_id", "ce_time")]
    with pytest.raises(DecodeError, match="ce_id, ce_time"):
        decode(msg.value, headers)


def test_bad_json_and_bad_data_are_reasons_not_crashes() -> None:
    msg = encode(subscription())
    with pytest.raises(DecodeError, match="not JSON"):
        decode(b"{oops", msg.headers)
    with pytest.raises(DecodeError, match=r"data\.seats_purchased"):
        decode(msg.value.replace(b'"seats_purchased":10', b'"seats_purchased":-1'), msg.headers)
    with pytest.raises(DecodeError, match="empty value"):
        decode(None, msg.headers)


def test_extensions_and_dataschema_travel_as_ce_headers_and_come_back() -> None:
    event = subscription().model_copy(
        update={
            "extensions": {"traceparent": "00-abc-01", "tracestate": "congo=t61"},
            "dataschema": "https://example.com/subscription.json",
            "datacontenttype": "application/json; charset=utf-8",
        }
    )
    msg = encode(event)
    headers = dict(msg.headers)
    assert headers["ce_traceparent"] == b"00-abc-01"
    assert headers["ce_tracestate"] == b"congo=t61"
    assert headers["ce_dataschema"] == b"https://example.com/subscription.json"
    assert headers["content-type"] == b"application/json; charset=utf-8"
    assert "ce_extensions" not in headers and "ce_datacontenttype" not in headers
    assert decode(msg.value, msg.headers) == event


def test_an_unknown_ce_header_from_a_producer_is_an_extension() -> None:
    msg = encode(subscription())
    back = decode(msg.value, [*msg.headers, ("ce_partitionkey", b"a-1")])
    assert back.extensions == {"partitionkey": "a-1"}
    assert decode(msg.value, msg.headers).extensions == {}


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (("ce_Bad-Name", b"x"), "Bad-Name"),
        (("ce_traceparent", b"a\x00b"), "extensions.traceparent"),
        (("ce_extensions", b"{}"), "not a CloudEvents attribute"),
        (("content-type", b"text/plain"), "datacontenttype"),
    ],
)
def test_bad_extension_headers_are_reasons(header: tuple[str, bytes], words: str) -> None:
    msg = encode(subscription())
    with pytest.raises(DecodeError, match=words):
        decode(msg.value, [*(h for h in msg.headers if h[0] != header[0]), header])
