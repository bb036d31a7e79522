"""The committed JSON Schemas match the models; the catalog holds the contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import CATALOG, Money
from schemas.generate import JSON_DIR, render

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
        {"amount": 100, "currency": "usd"},
        {"amount": 100, "currency": "USD", "extra": 1},
        {"amount": "100", "currency": "USD"},
    ],
)
def test_money_is_integer_minor_units_and_an_iso_currency(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate(bad, strict=True)


def test_models_are_frozen() -> None:
    m = Money(amount=1, currency="USD")
    with pytest.raises(ValidationError):
        m.amount = 2  # type: ignore[misc]
