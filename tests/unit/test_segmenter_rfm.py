"""RFM scoring against plain reference computations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.segmenter.domain.rfm import CELLS, breakpoints, cell, score


def reference_scores(values: list[int]) -> list[int]:
    """Written independently: rank each value, in sorted order, against the
    nearest-rank quintile cut-offs; ties share the lowest group they reach."""
    n = len(values)
    if n < 5:
        return [3] * n
    ordered = sorted(values)
    cuts = [ordered[math.ceil(n * k / 5) - 1] for k in range(1, 5)]
    out = []
    for v in values:
        s = 1
        for c in cuts:
            if v > c:
                s += 1
        out.append(s)
    return out


@given(st.lists(st.integers(-5, 50), max_size=200))
def test_scores_match_the_reference(values: list[int]) -> None:
    bps = breakpoints(values)
    assert [score(v, bps) for v in values] == reference_scores(values)


@given(st.lists(st.integers(-(10**6), 10**6), min_size=5, max_size=300, unique=True))
def test_distinct_values_fill_exact_quintiles(values: list[int]) -> None:
    n = len(values)
    bps = breakpoints(values)
    scores = [score(v, bps) for v in values]
    for s in range(1, 6):
        assert scores.count(s) == math.ceil(s * n / 5) - math.ceil((s - 1) * n / 5)


@given(
    st.lists(st.integers(0, 20), min_size=5, max_size=100), st.integers(0, 20), st.integers(0, 20)
)
def test_monotone_and_ties_score_alike(values: list[int], a: int, b: int) -> None:
    bps = breakpoints(values)
    if a <= b:
        assert score(a, bps) <= score(b, bps)
    assert score(a, bps) == score(a, bps)


def test_small_tenants_score_three() -> None:
    assert breakpoints([1, 2, 3, 4]) is None and score(99, None) == 3


@pytest.mark.parametrize("r", range(1, 6))
@pytest.mark.parametrize("f", range(1, 6))
def test_every_cell_has_one_named_group(r: int, f: int) -> None:
    assert cell(r, f) in {name for name, _ in CELLS}


def test_named_groups_follow_the_usual_map() -> None:
    assert cell(5, 5) == "champions" and cell(1, 1) == "lost"
    assert cell(1, 5) == "cant_lose_them" and cell(2, 4) == "at_risk"
    assert cell(5, 1) == "new_customers" and cell(2, 2) == "hibernating"
