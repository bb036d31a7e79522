"""``loyalty insights report``: the insights reports as tables a person reads -
from a running insights service (``--url``), or from a history file run through
the segmenter, offers and insights logic in memory (``--history``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from schemas.events import Event
from services.insights import reports

NAMES = ("lift", "nrr", "upsell", "segments", "bundles", "ready")
REPORTS = (
    reports.lift_report,
    reports.nrr_report,
    reports.upsell_report,
    reports.segments_report,
    reports.bundles_report,
    reports.ready_report,
)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _money(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x / 100:+,.2f}" if signed else f"{x / 100:,.2f}"


def _interval(d: Mapping[str, Any] | None, kind: str) -> str:
    if not d:
        return "-"
    if kind == "proportion":
        return f"{_pct(d['diff'], True)} [{_pct(d['low'], True)}, {_pct(d['high'], True)}]"
    return f"{_money(d['diff'], True)} [{_money(d['low'], True)}, {_money(d['high'], True)}]"


def _lift_lines(body: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Lift against the holdout: matured exposures ({body['horizon_days']:g}-day horizon),"
        f" treated minus held out, {100 * body['confidence']:g} % intervals"
        " (retained and annual in points, Newcombe/Wilson; MRR a month per account, Welch;"
        " CUPED with the pre-exposure value as covariate)",
        "",
        f"{'rule':<26} {'treated':>7} {'held':>5}  {'retained (pts)':<24} {'CUPED':<24}"
        f" {'MRR change / account':<30} {'net incremental value':<36} cost booked",
    ]
    short: list[str] = []
    for r in body["rules"]:
        o = r["outcomes"]
        if r["status"] != "ok" or not o:
            mde = o.get("retained", {}).get("mde") if o else None
            short.append(
                f"  {r['rule']:<26} {r['treated']:>5} treated / {r['held_out']:>4} held out"
                f" (min {body['min_exposures']} each); detects {_pct(mde)} pts of retention at best"
                f"; maturing {r['maturing']['treated']} / {r['maturing']['held_out']}"
            )
            continue
        ret, mrr = o["retained"], o["mrr_change"]
        net = r["net_incremental_value"]
        net_text = (
            f"{_money(net['estimate'], True)} [{_money(net['low'], True)},"
            f" {_money(net['high'], True)}] {net['currency']}"
            if net
            else "-"
        )
        cost = r["cost"]
        lines.append(
            f"{r['rule']:<26} {r['treated']:>7} {r['held_out']:>5}  "
            f"{_interval(ret['raw'], 'proportion'):<24} {_interval(ret['cuped'], 'proportion'):<24}"
            f" {_interval(mrr['raw'], 'mean'):<30} {net_text:<36}"
            f" {_money(cost['booked']) if cost else '-'}"
        )
        if r["maturing"]["treated"] or r["maturing"]["held_out"]:
            lines.append(
                f"{'':<26} maturing: {r['maturing']['treated']} treated,"
                f" {r['maturing']['held_out']} held out"
            )
    if short:
        lines += ["", "not enough data yet:", *short]
    return lines


def _nrr_lines(body: Mapping[str, Any]) -> list[str]:
    groups = ("all", "members", "non_members", "treated", "held_out")
    head = f"{'period':<14}" + "".join(f"{g:>13}" for g in groups)
    lines = ["Net revenue retention (start + expansion - contraction - churn) / start", "", head]
    periods = [(p["start"], p) for p in body["months"]]
    if body.get("trailing_12m"):
        periods.append(("trailing 12m", body["trailing_12m"]))
    for label, p in periods[-13:]:
        name = str(label)[:7] if label != "trailing 12m" else label
        if not p["complete"]:
            name += "*"
        lines.append(
            f"{name:<14}" + "".join(f"{_pct(p['groups'][g]['nrr']) + ' %':>13}" for g in groups)
        )
    lines.append("(* in progress)")
    return lines


def _upsell_lines(body: Mapping[str, Any]) -> list[str]:
    m = body["members"]
    bands = body["bands"]
    rate = "-" if m["rate"] is None else f"{m['rate']:.1f} %"
    lines = [
        f"Up-sell rate of loyalty members: {rate} ({m['band'] or 'no transactions'};"
        f" healthy {bands['weak_below']:g}-{bands['exceptional_above']:g} %):"
        f" {m['upsells']} up-sells of {m['transactions']} transactions",
        "",
    ]
    for month, c in list(body["by_month"].items())[-6:]:
        r = "-" if c["rate"] is None else f"{c['rate']:5.1f} %"
        lines.append(
            f"  {month}  {r}  {c['band'] or '':<12} {c['upsells']:>5} / {c['transactions']}"
        )
    return lines


def _segment_lines(body: Mapping[str, Any]) -> list[str]:
    lines = [f"{'segment':<22} {'size':>7} {'entered':>8} {'exited':>7}  (its latest month)"]
    for s in body["segments"]:
        last = s["months"][-1] if s["months"] else {"entered": 0, "exited": 0}
        lines.append(f"{s['segment']:<22} {s['size']:>7} {last['entered']:>8} {last['exited']:>7}")
    if body["member_value"]:
        v = body["member_value"][-1]
        lines += [
            "",
            f"members in {v['month']}: {v['members']} paying {_money(v['paid_per_member'])} each"
            f" (MRR {_money(v['mrr_per_member'])}); non-members: {v['non_members']} paying"
            f" {_money(v['paid_per_non_member'])} (MRR {_money(v['mrr_per_non_member'])})",
        ]
    return lines


def _bundle_lines(body: Mapping[str, Any], ready: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Bundles among {body['baskets']} adopting accounts (support / confidence / lift)",
    ]
    for b in body["bundles"][:8]:
        rule = b["rules"][0]
        lines.append(
            f"  {' + '.join(b['items']):<36} {b['support']:6.1%} {rule['confidence']:6.1%}"
            f" {rule['lift']:5.2f}  ({' + '.join(rule['antecedent'])} -> "
            f"{' + '.join(rule['consequent'])})"
        )
    lines += [
        "",
        f"Sequences within {body.get('window_days', '?')} days (confidence, median delay)",
    ]
    for s in body["sequences"][:8]:
        lines.append(
            f"  {s['antecedent'] + ' -> ' + s['consequent']:<36} {s['confidence']:6.1%}"
            f"  {s['median_delay_days']:5.1f} days  ({s['accounts']} accounts)"
        )
    counts: dict[str, int] = {}
    for r in ready["ready"]:
        counts[r["sequence"]] = counts.get(r["sequence"], 0) + 1
    lines += ["", "ready now: " + (", ".join(f"{k} {n}" for k, n in counts.items()) or "none")]
    return lines


def render(bodies: Mapping[str, Mapping[str, Any]], tenant: str) -> str:
    """The six reports (``NAMES``) as text."""
    lines = [f"insights for tenant {tenant}, as of {bodies['lift'].get('as_of')} (stream time)", ""]
    lines += [*_lift_lines(bodies["lift"]), ""]
    lines += [*_nrr_lines(bodies["nrr"]), ""]
    lines += [*_upsell_lines(bodies["upsell"]), ""]
    lines += [*_segment_lines(bodies["segments"]), ""]
    lines += _bundle_lines(bodies["bundles"], bodies["ready"])
    return "\n".join(lines)


def one_line(bodies: Mapping[str, Mapping[str, Any]]) -> str:
    """The short line ``loyalty up`` prints every minute."""
    ok = [r for r in bodies["lift"]["rules"] if r["status"] == "ok"]
    best = max(
        ok,
        key=lambda r: (r["net_incremental_value"] or {}).get("estimate", float("-inf")),
        default=None,
    )
    lift = "lift: no rule with enough matured exposures yet"
    if best is not None:
        ret = best["outcomes"]["retained"]["raw"]
        net = best["net_incremental_value"]
        lift = (
            f"{len(ok)} rules measured, best net value {best['rule']}: retained"
            f" {_interval(ret, 'proportion')} pts, net {_money(net['estimate'], True)}"
            f" {net['currency']} a month"
        )
    trailing = bodies["nrr"].get("trailing_12m") or {}
    nrr, period = None, "trailing 12m"
    if trailing.get("complete"):
        nrr = trailing["groups"]["all"]["nrr"]
    else:  # a younger history: the last complete month
        done = [m for m in bodies["nrr"].get("months") or [] if m["complete"]]
        if done:
            nrr, period = done[-1]["groups"]["all"]["nrr"], str(done[-1]["start"])[:7]
    up = bodies["upsell"]["members"]
    rate = "-" if up["rate"] is None else f"{up['rate']:.1f} % ({up['band']})"
    return f"insights: {lift}; NRR {_pct(nrr)} % ({period}); member up-sell rate {rate}"


def simulated_credits(decisions: Sequence[Event]) -> list[Event]:
    """A ``credit.granted`` at its reward's cost for every ``offer.issued``: the
    stand-in for the ledger where there is none (a simulation, a benchmark)."""
    from schemas.events import CreditGranted, CreditGrantedData, OfferIssued

    return [
        CreditGranted(
            id=f"sim-credit-{d.data.offer_id}",
            source="loyalty/simulation",
            type="credit.granted",
            subject=d.subject,
            time=d.time,
            tenant=d.tenant,
            data=CreditGrantedData(
                credit_id=f"sim-{d.data.offer_id}",
                offer_id=d.data.offer_id,
                amount=d.data.reward.value or d.data.reward.cost,
                kind=d.data.reward.kind,
                cost=d.data.reward.cost,
            ),
        )
        for d in decisions
        if isinstance(d, OfferIssued)
    ]


async def from_history(raw: Any, path: Path, tenant: str) -> dict[str, dict[str, Any]]:
    """The reports of a history run in memory through the segmenter, offers and
    insights logic. There is no ledger in memory: every issued offer counts as
    granted at its reward's cost, as if no cap or approval held it back."""
    from services.insights.adapters.memory import MemoryInsightsStore
    from services.insights.domain.program import load_insights_program
    from services.insights.handlers import process
    from services.segmenter.backfill import read_history
    from services.simulate import load_both, simulate

    segmenter, offers = load_both(raw)
    program = replace(load_insights_program(raw), signals=False)
    inputs: list[Event] = []
    decisions: list[Event] = []
    await simulate(
        segmenter,
        offers,
        read_history(path, tenant),
        batch=5000,
        inputs_seen=inputs,
        decisions=decisions,
    )
    credits = simulated_credits(decisions)
    store = MemoryInsightsStore()
    feed = [*inputs, *decisions, *credits]
    for start in range(0, len(feed), 5000):
        await process(store, program, feed[start : start + 5000])
    bodies: dict[str, dict[str, Any]] = {}
    for name, report in zip(NAMES, REPORTS, strict=True):
        bodies[name] = (await report(store, program, tenant))[0]
    return bodies


async def from_service(url: str, key: str) -> dict[str, dict[str, Any]]:
    """The reports of a running insights service."""
    paths = ("lift", "nrr", "upsell-rate", "segments", "bundles", "bundles/ready")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        bodies = {}
        for name, path in zip(NAMES, paths, strict=True):
            resp = await client.get(f"/v1/insights/{path}")
            resp.raise_for_status()
            bodies[name] = resp.json()
    return bodies
