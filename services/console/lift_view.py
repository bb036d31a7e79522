"""The offers page's lift table (pure: the insights ``/v1/insights/lift`` body in,
rows for people out).

Each outcome is shown in its own unit — a proportion as a percentage and its
difference in percentage points, the MRR change as money a month in the tenant's
currency, seats as seats — and its interval is drawn on an axis shared by the
rules for that outcome only (a retention difference of 0.05 and an MRR difference
of 12,000 cents do not share a scale). A rule without enough exposures is one
line saying how many it has of how many it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from services.console.charts import interval
from services.console.formats import money

LABELS = {
    "retained": "retained",
    "mrr_change": "MRR change a month",
    "converted_to_annual": "converted to annual",
    "seats_added": "seats added",
}


@dataclass
class OutcomeRow:
    label: str
    treated: str
    held_out: str
    diff: str  # the difference and its interval, or why there is none
    method: str
    excludes_zero: bool
    svg: Markup | None


@dataclass
class RuleBlock:
    rule: str
    status: str
    treated: int
    held_out: int
    maturing: int
    cost: str  # what the ledger booked for the treated, and what it refused
    net: str  # net incremental value a month, with its interval
    enough: bool
    rows: list[OutcomeRow] = field(default_factory=list)


def _money(minor: float, currency: str) -> str:
    """Signed: ``+12.30 USD``, ``-0.50``."""
    return ("+" if minor >= 0 else "") + money(minor, currency)


def _level(kind: str, value: float | None, currency: str) -> str:
    if value is None:
        return "-"
    if kind == "proportion":
        return f"{value:.1%}"
    if currency:  # the MRR change, minor units a month
        return money(value, currency)
    return f"{value:,.1f}"


def _difference(kind: str, est: Mapping[str, float], currency: str) -> str:
    d, lo, hi = est["diff"], est["low"], est["high"]
    if kind == "proportion":
        return f"{d * 100:+.1f} pts [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    if currency:
        return f"{_money(d, currency)} [{_money(lo, '')}, {_money(hi, '')}]"
    return f"{d:+,.1f} [{lo:+,.1f}, {hi:+,.1f}]"


def lift_blocks(body: Mapping[str, Any] | None) -> list[RuleBlock]:
    """The rules of a lift report, each with a row per outcome."""
    rules: list[Mapping[str, Any]] = list((body or {}).get("rules", []))
    scales: dict[str, float] = {}
    for rule in rules:
        for name, outcome in rule.get("outcomes", {}).items():
            est = outcome.get("cuped") or outcome.get("raw")
            if est:
                top = max(abs(est["low"]), abs(est["high"]))
                scales[name] = max(scales.get(name, 0.0), top)
    out = []
    for rule in rules:
        cost = rule.get("cost") or {}
        currency = cost.get("currency") or ""
        maturing = rule.get("maturing") or {}
        net = rule.get("net_incremental_value")
        block = RuleBlock(
            rule=rule["rule"],
            status=rule["status"],
            treated=rule["treated"],
            held_out=rule["held_out"],
            maturing=int(maturing.get("treated", 0)) + int(maturing.get("held_out", 0)),
            cost=_cost(cost),
            net=(
                f"{_money(net['estimate'], net['currency'])}"
                f" [{_money(net['low'], '')}, {_money(net['high'], '')}] a month"
                if net
                else "-"
            ),
            enough=rule["status"] == "ok",
        )
        if block.enough:
            for name, outcome in rule.get("outcomes", {}).items():
                kind = outcome["kind"]
                unit = currency if name == "mrr_change" else ""
                est = outcome.get("cuped") or outcome.get("raw")
                block.rows.append(
                    OutcomeRow(
                        label=LABELS.get(name, name.replace("_", " ")),
                        treated=_level(kind, outcome.get("treated"), unit),
                        held_out=_level(kind, outcome.get("held_out"), unit),
                        diff=_difference(kind, est, unit) if est else "no estimate",
                        method=est["method"] if est else "",
                        excludes_zero=bool(est and est["excludes_zero"]),
                        svg=(
                            interval(est["low"], est["diff"], est["high"], scale=scales[name])
                            if est
                            else None
                        ),
                    )
                )
        out.append(block)
    return out


def _cost(cost: Mapping[str, Any]) -> str:
    if not cost:
        return "-"
    currency = cost.get("currency") or ""
    parts = [f"{cost.get('booked', 0) / 100:,.2f} {currency} booked".strip()]
    granted, rejected = cost.get("granted_offers", 0), cost.get("rejected_offers", 0)
    parts.append(f"{granted:,} granted, {rejected:,} refused by the ledger")
    if cost.get("pending_offers"):
        parts.append(f"{cost['pending_offers']:,} pending approval")
    return "; ".join(parts)
