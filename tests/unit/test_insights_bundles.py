"""Bundle discovery: the counts and reports of ``services.insights.domain.bundles``,
checked against the reference Apriori and on planted patterns."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from efficient_apriori import apriori
from hypothesis import given, settings
from hypothesis import strategies as st

from services.insights.domain.bundles import (
    Adoption,
    SequenceStat,
    count_bundles,
    itemsets,
    percentile_cont,
    ready,
    ready_accounts,
    sequences,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=400)


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


def adoptions_of(baskets: list[set[str]]) -> list[Adoption]:
    return [
        Adoption(f"acct{i}", feature, day(j))
        for i, basket in enumerate(baskets)
        for j, feature in enumerate(sorted(basket))
    ]


baskets_strategy = st.lists(
    st.sets(st.sampled_from("abcdef"), min_size=1, max_size=6), min_size=1, max_size=40
)


@settings(max_examples=150, deadline=None)
@given(
    baskets=baskets_strategy,
    # 0.01 < 1/40 keeps every itemset seen (at 0, Apriori also lists unseen ones)
    min_support=st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5]),
    min_confidence=st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
)
def test_pairs_and_triples_have_the_support_confidence_and_lift_of_apriori(
    baskets: list[set[str]], min_support: float, min_confidence: float
) -> None:
    counts = count_bundles(adoptions_of(baskets), window_days=30, now=NOW)
    found = itemsets(counts, min_support, min_confidence, min_lift=0.0)

    reference_itemsets, reference_rules = apriori(
        [tuple(sorted(b)) for b in baskets],
        min_support=min_support,
        min_confidence=min_confidence,
    )
    assert counts.baskets == len(baskets)
    for size, ours in ((2, counts.pairs), (3, counts.triples)):
        frequent = {k: n for k, n in ours.items() if n / len(baskets) >= min_support}
        assert frequent == reference_itemsets.get(size, {})

    reference = {
        (tuple(sorted(r.lhs)), tuple(sorted(r.rhs))): r
        for r in reference_rules
        if len(r.lhs) + len(r.rhs) in (2, 3)
    }
    rules = {(r.antecedent, r.consequent): (b, r) for b in found for r in b.rules}
    assert rules.keys() == reference.keys()
    for key, (bundle, rule) in rules.items():
        assert bundle.support == reference[key].support
        assert rule.confidence == reference[key].confidence
        assert rule.lift == pytest.approx(reference[key].lift, rel=1e-12)
    # every kept bundle has a qualifying rule, and they come best lift first
    lifts = [b.best_rule.lift for b in found]
    assert lifts == sorted(lifts, reverse=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_planted_pair_is_the_top_bundle(seed: int) -> None:
    rng = random.Random(seed)
    noise = [f"noise{i}" for i in range(8)]
    adoptions = []
    for i in range(2000):
        account = f"acct{i:05}"
        draw = rng.random()
        planted = ["sso", "audit"] if draw < 0.15 else ["sso"] if draw < 0.18 else []
        planted += ["audit"] if 0.18 <= draw < 0.21 else []
        chosen = planted + [f for f in noise if rng.random() < 0.4]
        adoptions += [Adoption(account, f, day(rng.uniform(0, 365))) for f in chosen]

    found = itemsets(
        count_bundles(adoptions, 30, NOW), min_support=0.1, min_confidence=0.2, min_lift=0.0
    )

    assert len(found) > 1  # the noise pairs are there too, only weaker
    assert found[0].items == ("audit", "sso")
    assert found[0].support == pytest.approx(0.15, abs=0.03)
    assert found[0].best_rule.lift > 3 * max(b.best_rule.lift for b in found[1:])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_planted_sequence_is_the_top_sequence_with_its_typical_delay(seed: int) -> None:
    rng = random.Random(seed)
    noise = [f"noise{i}" for i in range(8)]
    adoptions = []
    for i in range(2000):
        account = f"acct{i:05}"
        if rng.random() < 0.4:
            started = rng.uniform(0, 300)
            adoptions.append(Adoption(account, "reports", day(started)))
            if rng.random() < 0.6:
                delay = max(1.0, rng.gauss(14, 3))
                adoptions.append(Adoption(account, "exports", day(started + delay)))
        for f in noise:
            if rng.random() < 0.3:
                adoptions.append(Adoption(account, f, day(rng.uniform(0, 365))))

    found = sequences(count_bundles(adoptions, 30, NOW), min_support=0.001, min_confidence=0.0)

    top = found[0]
    assert (top.antecedent, top.consequent) == ("reports", "exports")
    assert top.confidence == pytest.approx(0.6, abs=0.06)
    assert abs(top.median_delay_days - 14) <= 2
    assert top.p25 < top.median_delay_days < top.p75
    assert top.confidence > 3 * max(s.confidence for s in found[1:])


def test_recent_adopters_do_not_dilute_a_sequence_and_the_window_is_inclusive() -> None:
    now = day(100)
    adoptions = []
    for i in range(10):  # matured: adopted A 60 days before now
        adoptions.append(Adoption(f"old{i}", "A", day(40)))
        if i < 6:
            adoptions.append(Adoption(f"old{i}", "B", day(40 + 10 + i)))
    adoptions.append(Adoption("old_late", "A", day(40)))  # B after the window: not followed
    adoptions.append(Adoption("old_late", "B", day(40 + 30) + timedelta(microseconds=1)))
    adoptions.append(Adoption("edge", "A", day(40)))  # B exactly at the window: followed
    adoptions.append(Adoption("edge", "B", day(40 + 30)))
    adoptions.append(Adoption("tie", "A", day(40)))  # the same instant is not "then"
    adoptions.append(Adoption("tie", "B", day(40)))
    for i in range(5):  # recent adopters of A, who may still go on: not matured
        adoptions.append(Adoption(f"new{i}", "A", day(98)))
    adoptions.append(Adoption("quick", "A", day(95)))  # recent, but already went on
    adoptions.append(Adoption("quick", "B", day(96)))
    adoptions.append(Adoption("quick", "A", day(97)))  # a later use is not an adoption

    counts = count_bundles(adoptions, window_days=30, now=now)

    seq = counts.sequences[("A", "B")]
    assert seq.accounts == 6 + 1 + 1  # old0..old5, edge, quick
    assert seq.matured == 10 + 3 + 1  # old*, old_late, edge, tie; quick
    assert ("B", "A") not in counts.sequences
    assert counts.baskets == 10 + 3 + 5 + 1
    assert counts.items == {"A": 19, "B": 10}
    assert counts.pairs == {("A", "B"): 10}
    delays = sorted([10.0, 11, 12, 13, 14, 15, 30, 1])
    assert (seq.p25, seq.median, seq.p75) == (
        percentile_cont(delays, 0.25),
        statistics.median(delays),
        percentile_cont(delays, 0.75),
    )
    (stat,) = sequences(counts, min_support=0.0, min_confidence=0.0)
    assert stat.confidence == 8 / 14
    assert stat.support == 8 / 19


def test_quartiles_interpolate_linearly_between_closest_ranks() -> None:
    values = [1.0, 2.0, 4.0, 8.0, 9.5]
    assert percentile_cont(values, 0.25) == 2.0
    assert percentile_cont(values, 0.5) == 4.0
    assert percentile_cont([1.0, 2.0, 4.0, 8.0], 0.25) == 1.75
    assert percentile_cont([3.0], 0.75) == 3.0
    rng = random.Random(7)
    for _ in range(100):
        sample = sorted(rng.uniform(0, 60) for _ in range(rng.randint(2, 30)))
        expected = statistics.quantiles(sample, n=4, method="inclusive")
        got = [percentile_cont(sample, f) for f in (0.25, 0.5, 0.75)]
        assert got == pytest.approx(expected, rel=1e-12)


def test_an_account_is_ready_inside_the_typical_delay_and_only_without_b() -> None:
    now = day(100)
    seq = SequenceStat(
        antecedent="reports",
        consequent="exports",
        accounts=50,
        matured=100,
        support=0.1,
        confidence=0.5,
        p25=10.0,
        median_delay_days=14.0,
        p75=18.0,
    )
    adoptions = [
        Adoption("c-inside", "reports", day(88)),  # 12 days in
        Adoption("c-inside", "dashboards", day(10)),
        Adoption("a-at-p25", "reports", day(90)),  # exactly 10 days: inclusive
        Adoption("b-at-p75", "reports", day(82)),  # exactly 18 days: inclusive
        Adoption("d-too-soon", "reports", day(95)),
        Adoption("e-too-late", "reports", day(82) - timedelta(seconds=1)),
        Adoption("f-went-on", "reports", day(88)),
        Adoption("f-went-on", "exports", day(99)),
        Adoption("g-only-b", "exports", day(88)),
        Adoption("h-other", "dashboards", day(88)),
    ]

    assert ready_accounts(adoptions, seq, now) == [
        ("a-at-p25", day(90)),
        ("b-at-p75", day(82)),
        ("c-inside", day(88)),
    ]
    assert ready({"reports": day(88)}, seq, now)
    assert not ready({"reports": day(88), "exports": day(200)}, seq, now)
    assert not ready({}, seq, now)


def test_no_adoptions_give_no_reports() -> None:
    counts = count_bundles([], 30, NOW)
    assert counts.baskets == 0
    assert itemsets(counts, 0.0, 0.0, 0.0) == []
    assert sequences(counts, 0.0, 0.0) == []
    with pytest.raises(ValueError):
        count_bundles([], 0, NOW)
