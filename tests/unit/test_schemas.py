"""The committed JSON Schemas match the models; the catalog holds the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import CATALOG, EVENT_ADAPTER, Event, Money
from schemas.events import InvoicePaid, InvoicePaidData
from schemas.generate import JSON_DIR, render
from services.ingest.domain import Arrival, EventError, parse_body, validate, validate_binary
from services.runtime.codec import DecodeError, decode, encode

CONTRACT_TYPES = {
    "billing.subscription_updated",
    "billing.invoice_paid",
    "billing.cancellation_requested",
    "billing.credit_applied",
    "product.login",
    "product.feature_used",
    "product.onboarding_completed",
    "product.seats_changed",
    "support.ticket_opened",
    "support.nps_submitted",
}


def test_committed_json_schemas_match_the_models() -> None:
    expected = render()
    committed = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run `make schemas`"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} drifted from its model: run `make schemas`"


def test_catalog_holds_every_contract_type() -> None:
    assert set(CATALOG) >= CONTRACT_TYPES
    assert {"segment.entered", "segment.exited", "offer.issued", "credit.granted"} <= set(CATALOG)


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": 1.5, "currency": "USD"},
        {"amount": 100.0, "currency": "USD"},
        {"amount": "100", "currency": "USD"},
        {"amount": True, "currency": "USD"},
        {"amount": 100, "currency": "usd"},
        {"amount": 100, "currency": "USD", "extra": 1},
    ],
)
def test_money_is_integer_minor_units_and_an_iso_currency(bad: dict[str, object]) -> None:
    # lax mode, as the services validate: strictness is the model's, not the caller's
    with pytest.raises(ValidationError):
        Money.model_validate(bad)
    with pytest.raises(ValidationError):
        Money.model_validate_json(json.dumps(bad))


# An amount as a sender might slip it: a JSON string, a float, a boolean.
NOT_MINOR_UNITS = ["100", 100.0, True]


def invoice_paid(amount: object) -> dict[str, object]:
    """A billing.invoice_paid CloudEvent (JSON format, as posted), paying ``amount``."""
    return {
        "specversion": "1.0",
        "id": "paid-1",
        "source": "billing",
        "type": "billing.invoice_paid",
        "subject": "acct-1",
        "time": "2026-11-20T10:00:00+00:00",
        "data": {"invoice_id": "inv-1", "amount": {"amount": amount, "currency": "USD"}},
    }


def kafka_record(amount: object) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of a binary-mode record whose data pays ``amount``."""
    valid = InvoicePaid(
        id="paid-1",
        source="billing",
        type="billing.invoice_paid",
        subject="acct-1",
        tenant="acme",
        time=datetime(2026, 11, 20, 10, tzinfo=UTC),
        data=InvoicePaidData(invoice_id="inv-1", amount=Money(amount=100, currency="USD")),
    )
    data = invoice_paid(amount)["data"]
    return json.dumps(data).encode(), encode(valid).headers


@pytest.mark.parametrize("amount", NOT_MINOR_UNITS, ids=repr)
def test_a_consumer_dead_letters_an_amount_that_is_not_an_integer(amount: object) -> None:
    """The one decode path of every consumer (``services.runtime.codec.decode``)."""
    value, headers = kafka_record(amount)
    assert json.dumps(amount).encode() in value  # it travels as sent: "100", 100.0, true
    with pytest.raises(DecodeError, match=r"data\.amount\.amount: Input should be a valid int"):
        decode(value, headers)


def posted(amount: object, mode: str) -> tuple[list[Event], list[EventError]]:
    """What ingest makes of a POST paying ``amount``, as its route does: the body
    parsed by :func:`parse_body`, then validated in the request's content mode."""
    event = invoice_paid(amount)
    arrival = Arrival(now=datetime(2026, 11, 20, 10, 1, tzinfo=UTC))
    if mode == "structured":
        return validate(parse_body(json.dumps(event).encode()), "acme", False, arrival)
    if mode == "batch":
        return validate(parse_body(json.dumps([event]).encode()), "acme", True, arrival)
    headers = [(f"ce-{k}", str(v)) for k, v in event.items() if k != "data"]
    data = parse_body(json.dumps(event["data"]).encode())
    return validate_binary(headers, "application/json", data, "acme", arrival)


HTTP_MODES = ["structured", "batch", "binary"]


@pytest.mark.parametrize("mode", HTTP_MODES)
@pytest.mark.parametrize("amount", NOT_MINOR_UNITS, ids=repr)
def test_ingest_refuses_an_amount_that_is_not_an_integer(amount: object, mode: str) -> None:
    events, errors = posted(amount, mode)
    assert events == []
    assert [(e.index, e.field) for e in errors] == [(0, "data.amount.amount")]
    assert all("valid int" in e.reason for e in errors)


@pytest.mark.parametrize("amount", NOT_MINOR_UNITS, ids=repr)
def test_json_bodies_validated_in_one_pass_refuse_an_amount_that_is_not_an_integer(
    amount: object,
) -> None:
    """``EVENT_ADAPTER.validate_json`` (the backfill's bodies): JSON mode is strict too."""
    with pytest.raises(ValidationError, match=r"data\.amount\.amount"):
        EVENT_ADAPTER.validate_json(json.dumps({**invoice_paid(amount), "tenant": "acme"}))


def test_an_integer_amount_is_accepted_on_every_path() -> None:
    value, headers = kafka_record(100)
    accepted: list[Event] = [decode(value, headers)]
    for mode in HTTP_MODES:
        events, errors = posted(100, mode)
        assert errors == []
        accepted += events
    accepted.append(
        EVENT_ADAPTER.validate_json(json.dumps({**invoice_paid(100), "tenant": "acme"}))
    )
    assert len(accepted) == 1 + len(HTTP_MODES) + 1
    for event in accepted:
        assert isinstance(event, InvoicePaid)
        assert event.data.amount == Money(amount=100, currency="USD")
        assert type(event.data.amount.amount) is int


def test_models_are_frozen() -> None:
    m = Money(amount=1, currency="USD")
    with pytest.raises(ValidationError):
        m.amount = 2  # type: ignore[misc]
