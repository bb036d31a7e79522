"""The readout statistics: published values, scipy references, and calibration by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from services.insights.domain.stats import (
    Difference,
    Interval,
    cuped_difference,
    cuped_theta,
    mde_mean,
    mde_proportion,
    mean_sd,
    newcombe_difference,
    welch_difference,
    wilson,
)

Z95 = 1.959963984540054  # norm.ppf(0.975)

# --- Wilson -----------------------------------------------------------------------------------


def test_wilson_81_of_263_by_hand() -> None:
    n, p = 263, 81 / 263
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    got = wilson(81, 263)
    assert got.low == pytest.approx(centre - half, abs=1e-12)
    assert got.high == pytest.approx(centre + half, abs=1e-12)
    assert (round(got.low, 4), round(got.high, 4)) == (0.2553, 0.3662)


def test_wilson_is_not_wald() -> None:
    # The Wald interval for 1/20 goes below 0; Wilson stays inside and is asymmetric.
    got = wilson(1, 20)
    assert 0.0 < got.low < 0.05 < got.high
    assert got.high - 0.05 > 0.05 - got.low
    assert (round(got.low, 4), round(got.high, 4)) == (0.0089, 0.2361)


def test_wilson_edges() -> None:
    assert wilson(0, 10).low == 0.0
    assert wilson(10, 10).high == 1.0
    assert wilson(0, 1) == Interval(0.0, pytest.approx(Z95**2 / (1 + Z95**2)))
    wide, narrow = wilson(30, 100, 0.99), wilson(30, 100, 0.80)
    assert wide.low < narrow.low < 0.3 < narrow.high < wide.high
    for bad in [(0, 0), (1, 0), (-1, 10), (11, 10)]:
        with pytest.raises(ValueError):
            wilson(*bad)
    for conf in (0.0, 1.0, 95.0):
        with pytest.raises(ValueError):
            wilson(3, 10, conf)


# --- Newcombe ---------------------------------------------------------------------------------

# Newcombe (1998), Stat. Med. 17:873-890, Table II, method 10 (hybrid score).
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_TABLE_II)
def test_newcombe_published_values(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    got = newcombe_difference(*counts)
    assert (round(got.low, 4), round(got.high, 4)) == expected
    x_t, n_t, x_c, n_c = counts
    assert got.treated == x_t / n_t and got.control == x_c / n_c
    assert got.diff == pytest.approx(x_t / n_t - x_c / n_c)
    assert got.method == "newcombe-wilson"


def test_newcombe_is_built_from_the_two_wilson_intervals() -> None:
    wt, wc = wilson(56, 70, 0.9), wilson(48, 80, 0.9)
    pt, pc = 56 / 70, 48 / 80
    got = newcombe_difference(56, 70, 48, 80, 0.9)
    assert got.low == pytest.approx(pt - pc - math.hypot(pt - wt.low, wc.high - pc))
    assert got.high == pytest.approx(pt - pc + math.hypot(wt.high - pt, pc - wc.low))


def test_newcombe_swapping_groups_mirrors_the_interval() -> None:
    a, b = newcombe_difference(56, 70, 48, 80), newcombe_difference(48, 80, 56, 70)
    assert (a.low, a.high) == pytest.approx((-b.high, -b.low))


def test_newcombe_empty_group_raises() -> None:
    with pytest.raises(ValueError):
        newcombe_difference(0, 0, 3, 10)
    with pytest.raises(ValueError):
        newcombe_difference(3, 10, 0, 0)


def test_difference_predicates() -> None:
    d = Difference(0.5, 0.4, 0.1, 0.02, 0.18, "welch")
    assert d.excludes_zero() and d.contains(0.1) and d.contains(0.02) and not d.contains(0.19)
    assert not Difference(0.5, 0.5, 0.0, -0.1, 0.1, "welch").excludes_zero()
    assert Difference(0.3, 0.5, -0.2, -0.3, -0.1, "welch").excludes_zero()
    assert not Difference(0.5, 0.5, 0.0, 0.0, 0.1, "welch").excludes_zero()  # 0 on the edge


# --- Welch ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_t", "n_c", "sd_t", "sd_c", "conf"),
    [
        (2, 2, 1.0, 1.0, 0.95),
        (3, 7, 0.5, 4.0, 0.9),
        (900, 100, 1.0, 3.0, 0.95),
        (50, 40, 2.0, 2.0, 0.99),
    ],
)
def test_welch_matches_scipy(n_t: int, n_c: int, sd_t: float, sd_c: float, conf: float) -> None:
    rng = np.random.default_rng(n_t * 1000 + n_c)
    t, c = rng.normal(1.0, sd_t, n_t), rng.normal(0.7, sd_c, n_c)
    ref = st.ttest_ind(t, c, equal_var=False).confidence_interval(conf)
    got = welch_difference(t.tolist(), c.tolist(), conf)
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), rel=1e-9, abs=1e-12)
    assert got.diff == pytest.approx(t.mean() - c.mean())
    assert got.treated == pytest.approx(t.mean()) and got.control == pytest.approx(c.mean())
    assert got.method == "welch"


def test_welch_accepts_numpy_arrays_and_ints() -> None:
    a = welch_difference(np.array([1.0, 2.0, 4.0]), np.array([0, 1, 1, 3]))  # type: ignore[arg-type]
    b = welch_difference([1.0, 2.0, 4.0], [0, 1, 1, 3])
    assert a == b


def test_welch_zero_variance() -> None:
    both = welch_difference([2.0, 2.0, 2.0], [1.5] * 5)
    assert (both.diff, both.low, both.high) == (0.5, 0.5, 0.5)
    # Constant values that do not sum exactly in floating point are still zero variance.
    tenths = welch_difference([0.1] * 7, [0.3] * 3)
    assert tenths.low == tenths.high == tenths.diff
    # One constant group: the interval comes from the other one alone (df = n - 1).
    one = welch_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0])
    half = st.t.ppf(0.975, 3) * math.sqrt(np.var([1, 2, 3, 4], ddof=1) / 4)
    assert (one.low, one.high) == pytest.approx((2.5 - half, 2.5 + half))


def test_welch_tiny_groups_raise() -> None:
    for t, c in [([1.0], [1.0, 2.0]), ([1.0, 2.0], [3.0]), ([], [])]:
        with pytest.raises(ValueError):
            welch_difference(t, c)
    with pytest.raises(ValueError):
        welch_difference([1.0, 2.0], [1.0, math.nan])
    with pytest.raises(ValueError):
        welch_difference([1.0, math.inf], [1.0, 2.0])
    with pytest.raises(ValueError):
        welch_difference([1.0, 2.0], [1.0, 2.0], confidence=1.0)


def test_large_inputs_are_accurate() -> None:
    # 100k values with a big offset: a one-pass sum-of-squares would lose the variance.
    rng = np.random.default_rng(7)
    t, c = 1e9 + rng.normal(0.0, 1.0, 100_000), 1e9 + rng.normal(0.0, 1.0, 100_000)
    ref = st.ttest_ind(t, c, equal_var=False).confidence_interval()
    got = welch_difference(t.tolist(), c.tolist())
    # The width depends only on the sds; the centre on means of ~1e9, known to ~1 ulp (1.2e-7).
    assert got.high - got.low == pytest.approx(ref.high - ref.low, rel=1e-9)
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), abs=1e-6)
    assert mean_sd(t.tolist())[1] == pytest.approx(np.std(t, ddof=1), rel=1e-9)


# --- mean_sd ----------------------------------------------------------------------------------


def test_mean_sd() -> None:
    mean, sd = mean_sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert mean == 5.0 and sd == pytest.approx(math.sqrt(32 / 7))
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert mean_sd([0.1, 0.1, 0.1]) == (0.1, 0.0)
    with pytest.raises(ValueError):
        mean_sd([])


# --- CUPED ------------------------------------------------------------------------------------


def test_cuped_theta_is_the_ols_slope() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, 500)
    y = 1.7 * x + rng.normal(0.0, 1.0, 500)
    assert cuped_theta(y.tolist(), x.tolist()) == pytest.approx(st.linregress(x, y).slope)
    assert cuped_theta([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
    assert cuped_theta([1.0], [2.0]) == 0.0
    assert cuped_theta([], []) == 0.0
    with pytest.raises(ValueError):
        cuped_theta([1.0, 2.0], [1.0])


def _cuped_data(
    rng: np.random.Generator, n_t: int, n_c: int, effect: float
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Pre-period x and outcome y = x + noise (corr ~0.9), effect added to the treated y."""
    x_t, x_c = rng.normal(5.0, 2.0, n_t), rng.normal(5.0, 2.0, n_c)
    y_t = x_t + rng.normal(0.0, 1.0, n_t) + effect
    y_c = x_c + rng.normal(0.0, 1.0, n_c)
    return y_t.tolist(), x_t.tolist(), y_c.tolist(), x_c.tolist()


def test_cuped_is_narrower_and_unbiased() -> None:
    effect, diffs = 0.3, []
    for seed in range(200):
        y_t, x_t, y_c, x_c = _cuped_data(np.random.default_rng(seed), 400, 400, effect)
        cuped, raw = cuped_difference(y_t, x_t, y_c, x_c), welch_difference(y_t, y_c)
        assert cuped.method == "cuped-welch"
        # var(y) = 5 and var(y | x) = 1: the CUPED interval is about sqrt(5) times narrower.
        assert (cuped.high - cuped.low) < 0.6 * (raw.high - raw.low)
        assert cuped.diff == pytest.approx(cuped.treated - cuped.control)
        diffs.append(cuped.diff)
    # sd of one estimate ~ sqrt(2/400) = 0.071; of the mean of 200 ~ 0.005.
    assert np.mean(diffs) == pytest.approx(effect, abs=0.015)


def test_cuped_without_covariate_information_is_welch() -> None:
    y_t, y_c = [1.0, 2.0, 4.0, 3.0], [0.0, 1.0, 2.0]
    cuped = cuped_difference(y_t, [7.0] * 4, y_c, [7.0] * 3)
    raw = welch_difference(y_t, y_c)
    assert (cuped.diff, cuped.low, cuped.high) == pytest.approx((raw.diff, raw.low, raw.high))


def test_cuped_perfect_covariate_and_bad_shapes() -> None:
    # y = x + 1 in treated, y = x in control: the adjustment removes all variance but the effect.
    x_t, x_c = [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5]
    got = cuped_difference([x + 1.0 for x in x_t], x_t, x_c, x_c)
    assert got.diff == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ValueError):
        cuped_difference([1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        cuped_difference([1.0], [1.0], [1.0, 2.0], [1.0, 2.0])


# --- Calibration ------------------------------------------------------------------------------

SEEDS = 400


def _binary(rng: np.random.Generator, n: int, p: float) -> list[float]:
    return (rng.random(n) < p).astype(float).tolist()


def test_null_coverage_newcombe_10pct_holdout() -> None:
    rng = np.random.default_rng(11)
    n_t, n_c, seeds = 900, 100, 2000
    x_t, x_c = rng.binomial(n_t, 0.6, seeds), rng.binomial(n_c, 0.6, seeds)
    hits = [
        newcombe_difference(int(a), n_t, int(b), n_c).contains(0.0)
        for a, b in zip(x_t, x_c, strict=True)
    ]
    assert 0.93 <= np.mean(hits) <= 0.97


def test_null_coverage_welch_and_cuped() -> None:
    rng = np.random.default_rng(12)
    binary, normal, cuped = [], [], []
    for _ in range(SEEDS):
        binary.append(welch_difference(_binary(rng, 900, 0.6), _binary(rng, 100, 0.6)).contains(0))
        # Unequal variances on top of unequal sizes: the case Welch exists for.
        t, c = rng.normal(3.0, 1.0, 900).tolist(), rng.normal(3.0, 3.0, 100).tolist()
        normal.append(welch_difference(t, c).contains(0.0))
        cuped.append(cuped_difference(*_cuped_data(rng, 900, 100, 0.0)).contains(0.0))
    for hits in (binary, normal, cuped):
        assert 0.92 <= np.mean(hits) <= 0.98


def test_planted_effect_is_covered_and_detected() -> None:
    rng = np.random.default_rng(13)
    n, p, effect = 2000, 0.6, 0.08
    x_t, x_c = rng.binomial(n, p + effect, SEEDS), rng.binomial(n, p, SEEDS)
    newcombe = [newcombe_difference(int(a), n, int(b), n) for a, b in zip(x_t, x_c, strict=True)]
    welch = [
        welch_difference(_binary(rng, n, p + effect), _binary(rng, n, p)) for _ in range(SEEDS)
    ]
    for results in (newcombe, welch):
        assert np.mean([d.contains(effect) for d in results]) >= 0.92
        assert np.mean([d.excludes_zero() and d.diff > 0 for d in results]) >= 0.98


# --- MDE --------------------------------------------------------------------------------------


def test_mde_hand_values() -> None:
    z = Z95 + 0.8416212335729143
    assert mde_proportion(0.5, 1000, 1000) == pytest.approx(z * math.sqrt(0.25 * 0.002))
    assert mde_proportion(0.5, 1000, 1000) == pytest.approx(0.0626, abs=5e-5)
    assert mde_mean(2.0, 3.0, 400, 100) == pytest.approx(z * math.sqrt(4 / 400 + 9 / 100))
    z99_90 = st.norm.ppf(0.995) + st.norm.ppf(0.9)
    assert mde_proportion(0.1, 900, 100, 0.99, 0.9) == pytest.approx(
        z99_90 * math.sqrt(0.09 * (1 / 900 + 1 / 100))
    )
    assert mde_proportion(0.5, 0, 100) == math.inf and mde_mean(1.0, 1.0, 10, 0) == math.inf
    assert mde_proportion(0.0, 10, 10) == 0.0
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError):
            mde_proportion(bad, 10, 10)
    with pytest.raises(ValueError):
        mde_mean(-1.0, 1.0, 10, 10)
    with pytest.raises(ValueError):
        mde_proportion(0.5, 10, 10, power=1.0)


def test_mde_proportion_gives_the_promised_power() -> None:
    rng = np.random.default_rng(21)
    p, n_t, n_c, seeds = 0.3, 3000, 1000, 2000
    d = mde_proportion(p, n_t, n_c)
    x_t, x_c = rng.binomial(n_t, p + d, seeds), rng.binomial(n_c, p, seeds)
    power = np.mean(
        [
            newcombe_difference(int(a), n_t, int(b), n_c).low > 0
            for a, b in zip(x_t, x_c, strict=True)
        ]
    )
    assert 0.75 <= power <= 0.85


def test_mde_mean_gives_the_promised_power() -> None:
    rng = np.random.default_rng(22)
    n_t, n_c, sd_t, sd_c = 300, 100, 1.0, 2.0
    d = mde_mean(sd_t, sd_c, n_t, n_c)
    power = np.mean(
        [
            welch_difference(
                rng.normal(d, sd_t, n_t).tolist(), rng.normal(0.0, sd_c, n_c).tolist()
            ).low
            > 0
            for _ in range(SEEDS)
        ]
    )
    assert 0.72 <= power <= 0.88
