"""The runtime's admission rules as pure functions: the clock-skew check, the
arrival time of a record, negative money and the unknown tenant's reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import Money
from services.runtime.admission import (
    clock_skew_violation,
    negative_money_violation,
    record_arrival,
    unknown_tenant,
)
from services.runtime.config import Settings

ARRIVAL = datetime(2026, 12, 1, 8, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def test_an_event_from_the_year_9999_is_refused_with_a_precise_reason() -> None:
    reason = clock_skew_violation(datetime(9999, 12, 31, tzinfo=UTC), ARRIVAL, SKEW)
    assert reason == (
        "event time 9999-12-31T00:00:00+00:00 is 2912107 days, 16:00:00 ahead of its"
        " arrival 2026-12-01T08:00:00+00:00 (max clock skew 0:05:00)"
    )


def test_up_to_the_skew_ahead_is_admitted_and_one_microsecond_more_is_not() -> None:
    assert clock_skew_violation(ARRIVAL + SKEW, ARRIVAL, SKEW) is None
    reason = clock_skew_violation(ARRIVAL + SKEW + timedelta(microseconds=1), ARRIVAL, SKEW)
    assert reason is not None and "is 0:05:00 ahead" in reason  # whole seconds in the text


def test_the_past_is_never_refused_here_however_old() -> None:
    assert clock_skew_violation(datetime(1, 1, 1, tzinfo=UTC), ARRIVAL, SKEW) is None
    assert clock_skew_violation(ARRIVAL - timedelta(days=400), ARRIVAL, SKEW) is None


def test_offsets_compare_as_instants_not_wall_times() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 10:06 at +02:00 is 08:06 UTC: six minutes ahead of the arrival
    assert clock_skew_violation(datetime(2026, 12, 1, 10, 6, tzinfo=plus_two), ARRIVAL, SKEW)
    # 08:06 at +02:00 reads six minutes ahead but is 06:06 UTC: in the past
    assert clock_skew_violation(datetime(2026, 12, 1, 8, 6, tzinfo=plus_two), ARRIVAL, SKEW) is None


def test_a_zero_skew_admits_only_the_past_and_the_present() -> None:
    assert clock_skew_violation(ARRIVAL, ARRIVAL, timedelta(0)) is None
    assert clock_skew_violation(ARRIVAL + timedelta(seconds=1), ARRIVAL, timedelta(0)) is not None


@given(ahead_s=st.integers(min_value=-(10**9), max_value=10**9))
def test_refused_exactly_when_more_than_the_skew_ahead(ahead_s: int) -> None:
    event_time = ARRIVAL + timedelta(seconds=ahead_s)
    refused = clock_skew_violation(event_time, ARRIVAL, SKEW) is not None
    assert refused == (ahead_s > SKEW.total_seconds())


def test_record_arrival_is_the_kafka_timestamp_or_none() -> None:
    assert record_arrival(1_796_112_000_000) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert record_arrival(None) is None
    assert record_arrival(-1) is None  # old message formats
    assert record_arrival(0) is None
    assert record_arrival(2**63 - 1) is None  # any int64 a producer may stamp


def test_the_settings_take_durations_like_program_files(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOYALTY_MAX_CLOCK_SKEW", "LOYALTY_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().max_clock_skew == timedelta(minutes=5)
    assert Settings().max_attempts == 5
    monkeypatch.setenv("LOYALTY_MAX_CLOCK_SKEW", "90s")
    monkeypatch.setenv("LOYALTY_MAX_ATTEMPTS", "2")
    assert Settings().max_clock_skew == timedelta(seconds=90)
    assert Settings().max_attempts == 2
    # what a copy of the settings passes on (model_dump) is accepted as it is
    assert Settings(**Settings().model_dump()).max_clock_skew == timedelta(seconds=90)
    monkeypatch.setenv("LOYALTY_MAX_CLOCK_SKEW", "5 minutes")
    with pytest.raises(ValidationError, match="not a duration like 90s"):
        Settings()
    monkeypatch.setenv("LOYALTY_MAX_CLOCK_SKEW", "5m")
    monkeypatch.setenv("LOYALTY_MAX_ATTEMPTS", "0")
    with pytest.raises(ValidationError, match="max_attempts"):
        Settings()


def _subscription(mrr: int) -> Any:
    from schemas import EVENT_ADAPTER

    return EVENT_ADAPTER.validate_python(
        {
            "id": "e1",
            "source": "billing",
            "type": "billing.subscription_updated",
            "subject": "acct-1",
            "tenant": "acme",
            "time": ARRIVAL,
            "data": {
                "plan": "business",
                "interval": "month",
                "seats_purchased": 10,
                "mrr": {"amount": mrr, "currency": "USD"},
                "renewal_date": "2027-06-01",
                "status": "active",
            },
        }
    )


def test_a_negative_mrr_from_a_producer_is_refused_with_its_path() -> None:
    assert negative_money_violation(_subscription(50_000)) is None
    assert negative_money_violation(_subscription(0)) is None
    assert (
        negative_money_violation(_subscription(-1))
        == "data.mrr.amount: must not be negative; got -1"
    )


def test_money_nested_in_a_system_event_is_not_judged_as_a_producers() -> None:
    from schemas.events import CreditRejected, CreditRejectedData

    rejected = CreditRejected(
        id="r1",
        source="ledger",
        type="credit.rejected",
        subject="acct-1",
        tenant="acme",
        time=ARRIVAL,
        data=CreditRejectedData(
            offer_id="o1",
            amount=Money(amount=100, currency="USD"),
            reason="cap",
            headroom=Money(amount=-5, currency="USD"),
        ),
    )
    assert negative_money_violation(rejected) is None


def test_an_unknown_tenant_is_named_in_the_reason() -> None:
    assert unknown_tenant("ghost") == "unknown tenant 'ghost'"
