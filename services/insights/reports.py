"""The insights reports as JSON-ready dicts and CSV rows, from a store: what the
HTTP API serves and ``loyalty insights report`` prints. Each report says the
stream time it is as of; the definitions are in ``docs/insights.md``."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import datetime
from typing import Any

from services.insights.domain import bundles, growth, lift, revenue, stats
from services.insights.domain.program import InsightsProgram
from services.insights.handlers import strong_sequences
from services.insights.ports import InsightsStore

Rows = list[dict[str, Any]]


def _diff(d: stats.Difference | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "diff": d.diff,
        "low": d.low,
        "high": d.high,
        "method": d.method,
        "excludes_zero": d.excludes_zero(),
    }


def _lift(item: lift.Lift) -> dict[str, Any]:
    return {
        "rule": item.rule,
        "segment": item.segment,
        "treated": item.treated,
        "held_out": item.held_out,
        "maturing": {"treated": item.maturing_treated, "held_out": item.maturing_held_out},
        "status": "ok" if item.enough_data else "not enough data",
        "outcomes": {
            o.outcome: {
                "kind": o.kind,
                "treated": o.treated,
                "held_out": o.held_out,
                "raw": _diff(o.raw),
                "cuped": _diff(o.cuped),
                "mde": o.mde if math.isfinite(o.mde) else None,  # None: a group is empty
            }
            for o in item.outcomes
        },
        "cost": (None if item.cost is None else {**asdict(item.cost), "booked": item.cost.booked}),
        "net_incremental_value": None if item.net_value is None else asdict(item.net_value),
    }


async def lift_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    items = (
        lift.lift_report(
            await store.exposures(tenant),
            await store.subscriptions(tenant),
            await store.credits(tenant),
            now,
            program,
        )
        if now is not None
        else []
    )
    rules = [{**_lift(i), "by_segment": [_lift(s) for s in i.by_segment]} for i in items]
    body = {
        "as_of": now,
        "horizon_days": program.horizon.total_seconds() / 86400,
        "confidence": program.confidence,
        "min_exposures": program.min_exposures,
        "rules": rules,
    }
    rows: Rows = []
    for i in items:
        for part in [i, *i.by_segment]:
            for o in part.outcomes:
                rows.append(
                    {
                        "rule": part.rule,
                        "segment": part.segment or "",
                        "treated": part.treated,
                        "held_out": part.held_out,
                        "maturing_treated": part.maturing_treated,
                        "maturing_held_out": part.maturing_held_out,
                        "status": "ok" if part.enough_data else "not enough data",
                        "outcome": o.outcome,
                        "treated_mean": o.treated,
                        "held_out_mean": o.held_out,
                        "diff": o.raw.diff if o.raw else "",
                        "low": o.raw.low if o.raw else "",
                        "high": o.raw.high if o.raw else "",
                        "cuped_diff": o.cuped.diff if o.cuped else "",
                        "cuped_low": o.cuped.low if o.cuped else "",
                        "cuped_high": o.cuped.high if o.cuped else "",
                        "mde": o.mde if math.isfinite(o.mde) else "",
                        "cost_booked": part.cost.booked if part.cost else 0,
                        "net_value": part.net_value.estimate if part.net_value else "",
                        "net_low": part.net_value.low if part.net_value else "",
                        "net_high": part.net_value.high if part.net_value else "",
                    }
                )
    return body, rows


def _retention(r: revenue.Retention) -> dict[str, Any]:
    return {**asdict(r), "nrr": r.nrr}


def _period(p: revenue.Period) -> dict[str, Any]:
    return {
        "start": p.start,
        "end": p.end,
        "complete": p.complete,
        "groups": {g: _retention(r) for g, r in p.groups.items()},
    }


async def nrr_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    if now is None:
        return {"as_of": None, "months": [], "trailing_12m": None}, []
    r = revenue.nrr_report(
        await store.subscriptions(tenant),
        await store.segment_changes(tenant, sorted(program.membership_segments)),
        await store.exposures(tenant),
        now,
        program,
    )
    body = {
        "as_of": now,
        "months": [_period(p) for p in r.months],
        "trailing_12m": _period(r.trailing_12m) if r.trailing_12m else None,
    }
    rows: Rows = []
    for label, p in [
        *((f"{m.start:%Y-%m}", m) for m in r.months),
        ("trailing_12m", r.trailing_12m),
    ]:
        if p is None:
            continue
        for g, ret in p.groups.items():
            rows.append({"period": label, "complete": p.complete, "group": g, **_retention(ret)})
    return body, rows


def _rate(c: revenue.UpsellCount, program: InsightsProgram) -> dict[str, Any]:
    return {
        "transactions": c.transactions,
        "upsells": c.upsells,
        "rate": c.rate,
        "band": revenue.band(c.rate, program),
    }


async def upsell_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    r = revenue.upsell_report(
        await store.subscriptions(tenant),
        await store.invoices(tenant),
        await store.segment_changes(tenant),
        program,
    )
    low, high = program.upsell_bands
    by_month_segment = [
        {"month": m, "segment": s, **_rate(c, program)}
        for (m, s), c in sorted(r.by_month_segment.items())
    ]
    body = {
        "as_of": now,
        "bands": {"weak_below": low, "exceptional_above": high},
        "members": _rate(r.overall, program),
        "non_members": _rate(r.non_members, program),
        "by_month": {m: _rate(c, program) for m, c in sorted(r.by_month.items())},
        "by_segment": {s: _rate(c, program) for s, c in sorted(r.by_segment.items())},
        "by_month_segment": by_month_segment,
    }
    rows: Rows = [
        {"month": "all", "segment": "", **_rate(r.overall, program)},
        {"month": "all", "segment": "(non-members)", **_rate(r.non_members, program)},
    ]
    rows += [
        {"month": m, "segment": "", **_rate(c, program)} for m, c in sorted(r.by_month.items())
    ]
    rows += [
        {"month": "all", "segment": s, **_rate(c, program)} for s, c in sorted(r.by_segment.items())
    ]
    rows += by_month_segment
    return body, rows


async def segments_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    grown = growth.growth(await store.segment_days(tenant))
    value = (
        revenue.member_value(
            await store.subscriptions(tenant),
            await store.invoices(tenant),
            await store.segment_changes(tenant, sorted(program.membership_segments)),
            now,
            program,
        )
        if now is not None
        else []
    )
    body = {
        "as_of": now,
        "segments": [
            {
                "segment": g.segment,
                "size": g.size,
                "days": [asdict(s) for s in g.days],
                "months": [asdict(s) for s in g.months],
            }
            for g in grown
        ],
        "member_value": [
            {
                **asdict(v),
                "paid_per_member": v.paid_per_member,
                "paid_per_non_member": v.paid_per_non_member,
                "mrr_per_member": v.mrr_per_member,
                "mrr_per_non_member": v.mrr_per_non_member,
            }
            for v in value
        ],
    }
    rows: Rows = [
        {
            "segment": g.segment,
            "period": s.period,
            **{k: v for k, v in asdict(s).items() if k != "period"},
        }
        for g in grown
        for s in g.days
    ]
    return body, rows


async def bundles_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    if now is None:
        empty = {"baskets": 0, "window_days": program.window_days, "bundles": [], "sequences": []}
        return {"as_of": None, **empty}, []
    counts = await store.bundle_counts(tenant, program.window_days, now)
    sets = bundles.itemsets(counts, program.min_support, program.min_confidence, program.min_lift)
    seqs = bundles.sequences(counts, program.sequence_min_support, program.sequence_min_confidence)
    body = {
        "as_of": now,
        "baskets": counts.baskets,
        "window_days": program.window_days,
        "bundles": [asdict(b) for b in sets],
        "sequences": [
            {**asdict(s), "strong": s.accounts >= program.min_sequence_accounts} for s in seqs
        ],
    }
    rows: Rows = [
        {
            "kind": "bundle",
            "items": "+".join(b.items),
            "accounts": b.accounts,
            "support": b.support,
            "confidence": b.best_rule.confidence,
            "lift": b.best_rule.lift,
            "median_delay_days": "",
        }
        for b in sets
    ] + [
        {
            "kind": "sequence",
            "items": f"{s.antecedent}>{s.consequent}",
            "accounts": s.accounts,
            "support": s.support,
            "confidence": s.confidence,
            "lift": "",
            "median_delay_days": s.median_delay_days,
        }
        for s in seqs
    ]
    return body, rows


async def ready_report(
    store: InsightsStore, program: InsightsProgram, tenant: str
) -> tuple[dict[str, Any], Rows]:
    now = await store.clock(tenant)
    if now is None:
        return {"as_of": None, "ready": []}, []
    rows: Rows = []
    for seq in await strong_sequences(store, program, tenant, now):
        for account, at in await store.ready_accounts(tenant, seq, now):
            rows.append(
                {
                    "account": account,
                    "sequence": f"{seq.antecedent}>{seq.consequent}",
                    "adopted": seq.antecedent,
                    "expected": seq.consequent,
                    "adopted_at": at,
                    "days_since": (now - at).total_seconds() / 86400,
                    "typical_delay_days": seq.median_delay_days,
                }
            )
    return {"as_of": now, "ready": rows}, rows


def as_of(body: dict[str, Any]) -> datetime | None:
    value = body.get("as_of")
    return value if isinstance(value, datetime) else None
