"""Event builders for segmenter tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas import Money
from schemas.events import (
    CancellationRequested,
    CancellationRequestedData,
    FeatureUsed,
    FeatureUsedData,
    InvoicePaid,
    InvoicePaidData,
    Login,
    LoginData,
    OnboardingCompleted,
    OnboardingCompletedData,
    SeatsChanged,
    SeatsChangedData,
    SubscriptionUpdated,
    SubscriptionUpdatedData,
)

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)  # a Monday
_ids = itertools.count()


def _common(account: str, t: datetime, tenant: str) -> dict[str, Any]:
    return {
        "id": f"e{next(_ids)}",
        "source": "test",
        "subject": account,
        "tenant": tenant,
        "time": t,
    }


def at(days: float, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def login(account: str, t: datetime, tenant: str = "t", user: str = "u1") -> Login:
    return Login(type="product.login", data=LoginData(user_id=user), **_common(account, t, tenant))


def key_action(
    account: str, t: datetime, tenant: str = "t", feature: str = "reports", key: bool = True
) -> FeatureUsed:
    return FeatureUsed(
        type="product.feature_used",
        data=FeatureUsedData(user_id="u1", feature=feature, key_action=key),
        **_common(account, t, tenant),
    )


def subscribed(
    account: str,
    t: datetime,
    seats: int = 10,
    mrr: int = 50000,
    tenant: str = "t",
    status: str = "active",
    renewal: date | None = None,
) -> SubscriptionUpdated:
    return SubscriptionUpdated(
        type="billing.subscription_updated",
        data=SubscriptionUpdatedData(
            plan="pro",
            interval="month",
            seats_purchased=seats,
            mrr=Money(amount=mrr, currency="USD"),
            renewal_date=renewal or (t + timedelta(days=365)).date(),
            status=status,
        ),  # type: ignore[arg-type]
        **_common(account, t, tenant),
    )


def seats(account: str, t: datetime, used: int, tenant: str = "t") -> SeatsChanged:
    return SeatsChanged(
        type="product.seats_changed",
        data=SeatsChangedData(seats_used=used),
        **_common(account, t, tenant),
    )


def paid(account: str, t: datetime, amount: int, tenant: str = "t") -> InvoicePaid:
    return InvoicePaid(
        type="billing.invoice_paid",
        data=InvoicePaidData(
            invoice_id=f"i{next(_ids)}", amount=Money(amount=amount, currency="USD")
        ),
        **_common(account, t, tenant),
    )


def onboarded(account: str, t: datetime, tenant: str = "t") -> OnboardingCompleted:
    return OnboardingCompleted(
        type="product.onboarding_completed",
        data=OnboardingCompletedData(user_id="u1"),
        **_common(account, t, tenant),
    )


def cancel(account: str, t: datetime, tenant: str = "t") -> CancellationRequested:
    return CancellationRequested(
        type="billing.cancellation_requested",
        data=CancellationRequestedData(reason="price"),
        **_common(account, t, tenant),
    )
