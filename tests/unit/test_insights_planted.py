"""Planted effects are recovered: a synthetic history (``loyalty demo history``)
with a known retention lift for treated accounts, a known sequence and a known
pair, run through the segmenter, offers and insights logic in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.demo import Plant, write_history
from services.insights.adapters.memory import MemoryInsightsStore
from services.insights.domain import bundles
from services.insights.domain.program import load_insights_program
from services.insights.handlers import process
from services.insights_report import from_history
from services.offers.domain.program import load_offers_program
from services.runtime.program_file import read_program
from services.segmenter.backfill import read_history


def half_held_out() -> Any:
    """The default program with half of the accounts held out, so that both groups
    of a rule are large (a 10 % holdout needs ten times the history)."""
    raw = read_program(None)
    raw["offers"]["holdout"]["percent"] = 50
    return raw


def cancel_pause(raw: Any, tmp_path: Path, points: float, seed: int, cohort: int) -> Any:
    path = tmp_path / f"history-{seed}.jsonl"
    plant = Plant(
        tenant="demo",
        offers=load_offers_program(raw),
        retention_points=points,
        cohort=cohort,
    )
    write_history(path, accounts=20, days=160, seed=seed, plant=plant)
    bodies = asyncio.run(from_history(raw, path, "demo"))
    rule = next(r for r in bodies["lift"]["rules"] if r["rule"] == "cancel_pause")
    return rule


def test_a_planted_retention_lift_is_recovered(tmp_path: Path) -> None:
    rule = cancel_pause(half_held_out(), tmp_path, points=8, seed=11, cohort=2400)
    assert rule["status"] == "ok" and min(rule["treated"], rule["held_out"]) > 800
    for estimate in ("raw", "cuped"):
        d = rule["outcomes"]["retained"][estimate]
        assert d["low"] <= 0.08 <= d["high"], d
        assert d["excludes_zero"] and d["low"] > 0, d
    # churners take their MRR with them: the treated keep more of it
    assert rule["outcomes"]["mrr_change"]["raw"]["diff"] > 0


def test_without_an_effect_the_interval_holds_zero_in_nine_of_ten_seeds(tmp_path: Path) -> None:
    raw = half_held_out()
    contains = [
        cancel_pause(raw, tmp_path, points=0, seed=seed, cohort=500)["outcomes"]["retained"]["raw"]
        for seed in range(10)
    ]
    assert sum(d["low"] <= 0 <= d["high"] for d in contains) >= 9, contains


@pytest.fixture(scope="module")
def adoption_store(tmp_path_factory: pytest.TempPathFactory) -> MemoryInsightsStore:
    path = tmp_path_factory.mktemp("bundles") / "history.jsonl"
    plant = Plant(tenant="demo", sequence=("reports", "automations", 14, 0.4), pair=("sso", "api"))
    write_history(path, accounts=800, days=150, seed=5, plant=plant)
    program = load_insights_program(read_program(None))
    store = MemoryInsightsStore()
    features = [e for e in read_history(path, "demo") if e.type == "product.feature_used"]
    asyncio.run(process(store, program, features))
    return store


def test_the_planted_pair_is_the_top_bundle(adoption_store: MemoryInsightsStore) -> None:
    program = load_insights_program(read_program(None))
    now = adoption_store.tenants["demo"].clock
    assert now is not None
    counts = asyncio.run(adoption_store.bundle_counts("demo", program.window_days, now))
    found = bundles.itemsets(counts, program.min_support, program.min_confidence, program.min_lift)
    pairs = [b for b in found if len(b.items) == 2]
    assert pairs[0].items == ("api", "sso")
    # every other pair, at any support, lifts far less
    everything = bundles.itemsets(counts, 0.001, 0.0, 0.0)
    others = [b for b in everything if len(b.items) == 2 and b.items != ("api", "sso")]
    assert pairs[0].best_rule.lift > 1.5 * max(b.best_rule.lift for b in others)
    # a triple can only rank above it by containing it
    above = found[: found.index(pairs[0])]
    assert all({"api", "sso"} <= set(b.items) for b in above)


def test_the_planted_sequence_is_found_with_its_delay(adoption_store: MemoryInsightsStore) -> None:
    program = load_insights_program(read_program(None))
    now = adoption_store.tenants["demo"].clock
    assert now is not None
    counts = asyncio.run(adoption_store.bundle_counts("demo", program.window_days, now))
    seqs = bundles.sequences(counts, program.sequence_min_support, program.sequence_min_confidence)
    ordered = [s for s in seqs if {s.antecedent, s.consequent} != {"api", "sso"}]
    top = ordered[0]
    assert (top.antecedent, top.consequent) == ("reports", "automations")
    assert 12 <= top.median_delay_days <= 16
    assert top.confidence > ordered[1].confidence + 0.1  # background adoption makes others
