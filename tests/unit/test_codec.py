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
