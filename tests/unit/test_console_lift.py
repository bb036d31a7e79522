"""The offers page's lift table from an insights lift report: each outcome in its
own unit, intervals scaled per outcome, a rule short of exposures in one line."""

from __future__ import annotations

import re
from typing import Any

from services.console.lift_view import lift_blocks


def _outcome(kind: str, treated: float, held: float, diff: float, low: float, high: float) -> Any:
    est = {"diff": diff, "low": low, "high": high, "method": "welch", "excludes_zero": low > 0}
    return {"kind": kind, "treated": treated, "held_out": held, "raw": est, "cuped": None}


def _rule(name: str, status: str, mrr_high: float) -> dict[str, Any]:
    return {
        "rule": name,
        "segment": None,
        "treated": 361,
        "held_out": 37,
        "maturing": {"treated": 4, "held_out": 1},
        "status": status,
        "outcomes": {
            "retained": _outcome("proportion", 0.7535, 0.7027, 0.0508, 0.012, 0.2166),
            "mrr_change": _outcome("mean", -9737.95, -8505.4, -1232.54, -15422.9, mrr_high),
            "seats_added": _outcome("mean", -2.91, -5.43, 2.52, -3.27, 8.3),
        },
        "cost": {
            "currency": "USD",
            "granted": 50_000,
            "breakage": 10_000,
            "pending": 0,
            "rejected_offers": 300,
            "granted_offers": 61,
            "pending_offers": 0,
            "booked": 40_000,
        },
        "net_incremental_value": {
            "estimate": -444_948.6,
            "low": -5_567_664.7,
            "high": 4_677_767.4,
            "incremental_mrr": -404_948.6,
            "cost": 40_000,
            "currency": "USD",
        },
    }


def test_each_outcome_is_shown_in_its_own_unit() -> None:
    (block,) = lift_blocks({"rules": [_rule("annual_conversion", "ok", 12_957.8)]})
    assert (block.rule, block.enough, block.maturing) == ("annual_conversion", True, 5)
    rows = {r.label: r for r in block.rows}
    assert (rows["retained"].treated, rows["retained"].held_out) == ("75.3%", "70.3%")
    assert rows["retained"].diff == "+5.1 pts [+1.2, +21.7]"
    assert rows["retained"].excludes_zero
    assert rows["MRR change a month"].treated == "-97.38 USD"
    assert rows["MRR change a month"].diff == "-12.33 USD [-154.23, +129.58]"
    assert rows["seats added"].diff == "+2.5 [-3.3, +8.3]"
    assert block.net == "-4,449.49 USD [-55,676.65, +46,777.67] a month"
    assert block.cost == "400.00 USD booked; 61 granted, 300 refused by the ledger"


def test_intervals_share_an_axis_per_outcome_not_across_outcomes() -> None:
    narrow, wide = lift_blocks(
        {"rules": [_rule("a", "ok", 12_957.8), _rule("b", "ok", 1_000_000.0)]}
    )

    def ends(svg: Any) -> tuple[float, float]:
        found = re.search(r'class="ci"', str(svg))
        assert found
        x = re.findall(r'<line x1="([\d.]+)" y1="8" x2="([\d.]+)"', str(svg))
        return float(x[0][0]), float(x[0][1])

    by = {b.rule: {r.label: r for r in b.rows} for b in (narrow, wide)}
    # the MRR axis is set by b's wide interval: a's MRR interval is short on it ...
    a_lo, a_hi = ends(by["a"]["MRR change a month"].svg)
    b_lo, b_hi = ends(by["b"]["MRR change a month"].svg)
    assert a_hi - a_lo < (b_hi - b_lo) / 10
    # ... while retention, the same in both, fills its own axis the same way in both
    assert ends(by["a"]["retained"].svg) == ends(by["b"]["retained"].svg)
    assert ends(by["a"]["retained"].svg)[1] > 150  # its upper end near the axis's end


def test_a_rule_short_of_exposures_is_one_line() -> None:
    (block,) = lift_blocks({"rules": [_rule("x", "not enough data", 1.0)]})
    assert (block.enough, block.rows) == (False, [])
    assert lift_blocks(None) == [] and lift_blocks({"rules": []}) == []
