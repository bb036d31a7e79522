"""The statistics of a holdout readout (pure: no I/O, no clock, no randomness).

A readout compares a *treated* group with a held-out *control* group; a
"difference" is always treated minus control, with a two-sided confidence
interval for it.

* :func:`wilson` — the Wilson score interval for one proportion. Unlike the
  Wald interval it keeps close to its nominal coverage for small groups and for
  rates near 0 or 1, and it never leaves [0, 1].
* :func:`newcombe_difference` — Newcombe's hybrid score interval (method 10 of
  Newcombe 1998) for a difference of two independent proportions, built from the
  two Wilson intervals. It inherits Wilson's good coverage, which matters for a
  small holdout (say 10 %) with a low conversion rate.
* :func:`welch_difference` — Welch's t interval for a difference of means, with
  the Welch-Satterthwaite degrees of freedom. It does not assume equal variances,
  which a lopsided split (treated much larger than control) would punish.
* :func:`cuped_difference` — CUPED (Deng et al. 2013): subtract from each outcome
  ``theta`` times its pre-period covariate's deviation from the pooled mean, then
  Welch. The covariate is measured before treatment, so the adjustment leaves the
  expected difference unchanged while removing the variance it explains.
* :func:`mde_proportion`, :func:`mde_mean` — the minimum detectable (absolute)
  effect at a confidence level and power, by the normal approximation: what the
  readout could have seen, to report alongside a null result.

All sums are compensated (:func:`math.fsum`) and variances are two-pass, so the
functions stay accurate and O(n) for groups of 100k values and more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

NEWCOMBE_WILSON = "newcombe-wilson"
WELCH = "welch"
CUPED_WELCH = "cuped-welch"


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high]."""

    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """Treated minus control, with a confidence interval for it."""

    treated: float  # treated group's mean (or proportion)
    control: float  # control group's mean
    diff: float  # treated - control
    low: float  # CI of diff
    high: float
    method: str  # "newcombe-wilson", "welch", "cuped-welch"

    def excludes_zero(self) -> bool:
        """True when 0 lies strictly outside [low, high]: the difference is significant."""
        return self.low > 0.0 or self.high < 0.0

    def contains(self, value: float) -> bool:
        """True when ``low <= value <= high``."""
        return self.low <= value <= self.high


def _check_level(name: str, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {level!r}")


def _z_two_sided(confidence: float) -> float:
    """The standard normal quantile z_{1 - alpha/2} for ``confidence = 1 - alpha``."""
    _check_level("confidence", confidence)
    return float(_scipy_stats.norm.ppf(0.5 + confidence / 2.0))


def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def _mean_ss(values: list[float]) -> tuple[float, float]:
    """Mean and sum of squared deviations (two-pass, compensated); exact for constant data."""
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):  # inf - inf, or a sum beyond the float range
        total = math.nan
    if not math.isfinite(total):
        raise ValueError("values must be finite (and their sum representable)")
    lo, hi = min(values), max(values)
    if lo == hi:
        return lo, 0.0
    mean = min(max(total / len(values), lo), hi)
    ss = math.fsum((v - mean) ** 2 for v in values)
    if not math.isfinite(ss):
        raise ValueError("values too spread out: their sum of squares overflows")
    return mean, ss


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (ddof=1) of ``values``.

    The sd is 0.0 when there are fewer than two values or all values are equal.
    Raises ValueError for an empty sequence or non-finite values.
    """
    vals = _floats(values)
    if not vals:
        raise ValueError("mean_sd of an empty sequence")
    mean, ss = _mean_ss(vals)
    if len(vals) < 2:
        return mean, 0.0
    return mean, math.sqrt(ss / (len(vals) - 1))


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval for the proportion ``successes / n``.

    ``low`` and ``high`` lie in [0, 1]; ``low == 0`` when ``successes == 0`` and
    ``high == 1`` when ``successes == n``. Raises ValueError when ``n <= 0``,
    ``successes`` is outside [0, n], or ``confidence`` is not in (0, 1).
    """
    if n <= 0:
        raise ValueError(f"wilson needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = _z_two_sided(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def newcombe_difference(
    x_t: int, n_t: int, x_c: int, n_c: int, confidence: float = 0.95
) -> Difference:
    """Newcombe's hybrid score interval (method 10) for ``x_t/n_t - x_c/n_c``.

    With Wilson intervals (l_t, u_t) and (l_c, u_c) at ``confidence``:
    ``low = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2)`` and
    ``high = d + sqrt((u_t - p_t)^2 + (p_c - l_c)^2)``; the interval lies in [-1, 1].
    Raises ValueError as :func:`wilson` does (an empty group, counts out of range).
    """
    wt = wilson(x_t, n_t, confidence)
    wc = wilson(x_c, n_c, confidence)
    p_t, p_c = x_t / n_t, x_c / n_c
    d = p_t - p_c
    low = d - math.hypot(p_t - wt.low, wc.high - p_c)
    high = d + math.hypot(wt.high - p_t, p_c - wc.low)
    return Difference(p_t, p_c, d, max(-1.0, low), min(1.0, high), NEWCOMBE_WILSON)


def _welch(
    treated: list[float], control: list[float], confidence: float, method: str
) -> Difference:
    n_t, n_c = len(treated), len(control)
    if n_t < 2 or n_c < 2:
        raise ValueError(f"welch needs at least 2 values per group, got {n_t} and {n_c}")
    _check_level("confidence", confidence)
    m_t, ss_t = _mean_ss(treated)
    m_c, ss_c = _mean_ss(control)
    d = m_t - m_c
    a = ss_t / (n_t - 1) / n_t  # var_t / n_t
    b = ss_c / (n_c - 1) / n_c
    se2 = a + b
    if se2 == 0.0:
        return Difference(m_t, m_c, d, d, d, method)
    df = se2 * se2 / (a * a / (n_t - 1) + b * b / (n_c - 1))
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df))
    half = t * math.sqrt(se2)
    return Difference(m_t, m_c, d, d - half, d + half, method)


def welch_difference(
    treated: Sequence[float], control: Sequence[float], confidence: float = 0.95
) -> Difference:
    """Welch's t interval for ``mean(treated) - mean(control)``.

    ``diff ± t_{1-alpha/2, df} * sqrt(s_t^2/n_t + s_c^2/n_c)`` with the
    Welch-Satterthwaite ``df``. When both groups have zero variance the interval
    is zero-width at ``diff``. Raises ValueError when a group has fewer than two
    values, a value is not finite, or ``confidence`` is not in (0, 1).
    """
    return _welch(_floats(treated), _floats(control), confidence, WELCH)


def _theta_xmean(y: list[float], x: list[float]) -> tuple[float, float]:
    if len(y) != len(x):
        raise ValueError(f"y and x differ in length: {len(y)} != {len(x)}")
    if not x:
        return 0.0, 0.0
    x_mean, sxx = _mean_ss(x)
    if sxx == 0.0:
        return 0.0, x_mean
    y_mean = math.fsum(y) / len(y)
    sxy = math.fsum((yi - y_mean) * (xi - x_mean) for yi, xi in zip(y, x, strict=True))
    return sxy / sxx, x_mean


def cuped_theta(y: Sequence[float], x: Sequence[float]) -> float:
    """``cov(y, x) / var(x)`` over paired samples: the OLS slope of y on x.

    0.0 when ``var(x) == 0`` (including fewer than two pairs): no adjustment.
    Raises ValueError when ``y`` and ``x`` differ in length.
    """
    return _theta_xmean(_floats(y), _floats(x))[0]


def cuped_difference(
    y_t: Sequence[float],
    x_t: Sequence[float],
    y_c: Sequence[float],
    x_c: Sequence[float],
    confidence: float = 0.95,
) -> Difference:
    """CUPED-adjusted Welch interval for treated minus control (method "cuped-welch").

    ``theta = cuped_theta`` over both groups pooled, ``y_adj = y - theta * (x - mean(x_pooled))``,
    then :func:`welch_difference` on the adjusted outcomes; ``treated`` and
    ``control`` are the adjusted means. ``x`` must be measured before treatment
    (a pre-period value of the same metric is the usual choice). Raises
    ValueError when a group's ``y`` and ``x`` differ in length, and as
    :func:`welch_difference` does.
    """
    yt, xt, yc, xc = _floats(y_t), _floats(x_t), _floats(y_c), _floats(x_c)
    if len(yt) != len(xt) or len(yc) != len(xc):
        raise ValueError("each group needs one covariate value per outcome")
    theta, x_mean = _theta_xmean(yt + yc, xt + xc)
    adj_t = [y - theta * (x - x_mean) for y, x in zip(yt, xt, strict=True)]
    adj_c = [y - theta * (x - x_mean) for y, x in zip(yc, xc, strict=True)]
    return _welch(adj_t, adj_c, confidence, CUPED_WELCH)


def _z_sum(confidence: float, power: float) -> float:
    _check_level("power", power)
    return _z_two_sided(confidence) + float(_scipy_stats.norm.ppf(power))


def mde_proportion(
    p: float, n_t: int, n_c: int, confidence: float = 0.95, power: float = 0.8
) -> float:
    """Minimum detectable absolute difference of proportions around a base rate ``p``.

    ``(z_{1-alpha/2} + z_power) * sqrt(p (1 - p) (1/n_t + 1/n_c))``; ``math.inf``
    when a group is empty. Raises ValueError when ``p`` is not in [0, 1] or
    ``confidence``/``power`` are not in (0, 1).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    z = _z_sum(confidence, power)
    if n_t <= 0 or n_c <= 0:
        return math.inf
    return z * math.sqrt(p * (1.0 - p) * (1.0 / n_t + 1.0 / n_c))


def mde_mean(
    sd_t: float,
    sd_c: float,
    n_t: int,
    n_c: int,
    confidence: float = 0.95,
    power: float = 0.8,
) -> float:
    """Minimum detectable absolute difference of means.

    ``(z_{1-alpha/2} + z_power) * sqrt(sd_t^2/n_t + sd_c^2/n_c)``; ``math.inf``
    when a group is empty. Raises ValueError for a negative or non-finite sd, or
    ``confidence``/``power`` not in (0, 1).
    """
    for sd in (sd_t, sd_c):
        if not (math.isfinite(sd) and sd >= 0.0):
            raise ValueError(f"sd must be finite and >= 0, got {sd!r}")
    z = _z_sum(confidence, power)
    if n_t <= 0 or n_c <= 0:
        return math.inf
    return z * math.sqrt(sd_t * sd_t / n_t + sd_c * sd_c / n_c)
