"""How the console writes figures for people (the templates' filters, and the
pages that build their text in Python): money in minor units, times, shares."""

from __future__ import annotations

from datetime import datetime


def money(amount: float | None, currency: str = "") -> str:
    """Minor units as ``1,350.00 USD``."""
    if amount is None:
        return "-"
    return f"{amount / 100:,.2f} {currency}".strip()


def when(value: str | None) -> str:
    """An RFC 3339 time as ``2026-11-02 09:00 UTC`` (a date stays a date)."""
    if not value:
        return "-"
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return value
    if len(value) <= 10:
        return value
    return t.strftime("%Y-%m-%d %H:%M") + (f" {t.tzname()}" if t.tzinfo else "")


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def points(value: float | None, digits: int = 1) -> str:
    """A value already in percent (e.g. the up-sell rate, upsells / transactions x 100)."""
    return "-" if value is None else f"{value:.{digits}f}%"


def num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
