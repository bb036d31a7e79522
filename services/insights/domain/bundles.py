"""Bundle discovery over feature adoptions: which features go together, and
which follow one another.

An *adoption* is an account's first use of a feature; an account's *basket* is
the set of features it has adopted (if the same (account, feature) appears more
than once, the earliest time is the adoption, as in the ``adoptions`` table).
Everything is computed from a few counts (:class:`BundleCounts`), which
:func:`count_bundles` builds in memory and ``adapters/bundles_sql.py`` builds
inside PostgreSQL; the reports (:func:`itemsets`, :func:`sequences`) and the
readiness rule take counts only, so both paths give the same reports.

Counts (``n(X)`` is the number of accounts whose basket contains every feature
of ``X``; feature tuples are sorted by code point, as Python sorts ``str``):

- ``baskets``: accounts with at least one adoption.
- ``items[f]``, ``pairs[(a, b)]``, ``triples[(a, b, c)]``: ``n`` of each
  feature, pair and triple seen at least once.
- ``sequences[(A, B)]``, for an ordered pair seen at least once:

  - ``accounts``: accounts that adopted A at ``tA`` and B at ``tB`` with
    ``tA < tB <= tA + window_days`` (strictly later, the window inclusive);
  - ``matured``: accounts that adopted A at ``tA <= now - window_days`` (they
    had the whole window to go on to B), plus those counted in ``accounts``
    whose ``tA`` is more recent. It is the denominator of the confidence, so
    that recent adopters of A, who may still go on, do not dilute it;
  - ``p25``, ``median``, ``p75``: quartiles of the delays ``tB - tA`` (in days,
    a float) of the accounts counted in ``accounts``, by linear interpolation
    between closest ranks, exactly as PostgreSQL's ``percentile_cont``.

  A delay is ``microseconds / 86_400_000_000`` in floating point, one division
  of exact integers, which the SQL path computes the same way: delays, and so
  the quartiles, agree bit for bit.

Reports, with minimums (``>=``) from the program file:

- :func:`itemsets`: pairs and triples. ``support = n(X) / baskets``; a rule
  ``X -> Y`` (every split of the itemset into two non-empty parts, as Apriori
  generates them) has ``confidence = n(X u Y) / n(X)`` and
  ``lift = confidence / support(Y)``. A bundle is kept when its support and at
  least one of its rules meet the minimums; only such rules are listed, best
  lift first. Bundles are sorted by best lift, then support (both descending),
  then items.
- :func:`sequences`: ordered pairs ``A -> B`` with ``support = accounts /
  baskets`` and ``confidence = accounts / matured`` (0 when nothing matured),
  sorted by confidence, then support (descending), then names.
- Readiness (:func:`ready`, :func:`ready_accounts`): an account is ready for
  ``A -> B`` at ``now`` when it adopted A at ``tA``, has not adopted B, and
  ``p25 <= (now - tA) in days <= p75``: it is inside the typical delay.

Memory is bounded by the data, not by its square: adoptions are grouped per
account once (a dict of feature -> time per account), counts are at most
O(features^3), no per-pair lists of accounts are kept; only the delays of each
ordered pair are (at most one per account and pair), for the exact quartiles.
All times must be timezone-aware.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import combinations

_DAY = timedelta(days=1)

Pair = tuple[str, str]
Triple = tuple[str, str, str]


@dataclass(frozen=True)
class Adoption:
    """An account's first use of a feature."""

    account: str
    feature: str
    at: datetime


@dataclass(frozen=True)
class SequenceCounts:
    """The counts of an ordered pair (A, B); see the module docstring."""

    accounts: int
    matured: int
    p25: float
    median: float
    p75: float


@dataclass(frozen=True)
class BundleCounts:
    """Everything the reports need; built by :func:`count_bundles` or in SQL."""

    baskets: int
    items: dict[str, int] = field(default_factory=dict)
    pairs: dict[Pair, int] = field(default_factory=dict)
    triples: dict[Triple, int] = field(default_factory=dict)
    sequences: dict[Pair, SequenceCounts] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleRule:
    """An association rule ``antecedent -> consequent`` of a bundle."""

    antecedent: tuple[str, ...]
    consequent: tuple[str, ...]
    confidence: float
    lift: float


@dataclass(frozen=True)
class Bundle:
    """A pair or triple of features adopted together, with its qualifying rules
    (at least one, best lift first)."""

    items: tuple[str, ...]
    accounts: int
    support: float
    rules: list[BundleRule]

    @property
    def best_rule(self) -> BundleRule:
        return self.rules[0]


@dataclass(frozen=True)
class SequenceStat:
    """An ordered pair ``antecedent -> consequent``: how often, and how soon."""

    antecedent: str
    consequent: str
    accounts: int
    matured: int
    support: float
    confidence: float
    p25: float
    median_delay_days: float
    p75: float


def days_between(earlier: datetime, later: datetime) -> float:
    """``later - earlier`` in days: exact microseconds over microseconds a day."""
    return (later - earlier) / _DAY


def percentile_cont(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of non-empty ascending ``ordered``, computed as
    PostgreSQL's ``percentile_cont`` does (same operations, same rounding)."""
    if not ordered:
        raise ValueError("percentile_cont of no values")
    position = fraction * (len(ordered) - 1)
    first, second = math.floor(position), math.ceil(position)
    low = ordered[first]
    if second == first:
        return low
    return low + (ordered[second] - low) * (position - first)


def _first_adoptions(adoptions: Iterable[Adoption]) -> dict[str, dict[str, datetime]]:
    baskets: dict[str, dict[str, datetime]] = {}
    for a in adoptions:
        basket = baskets.setdefault(a.account, {})
        known = basket.get(a.feature)
        if known is None or a.at < known:
            basket[a.feature] = a.at
    return baskets


def count_bundles(adoptions: Iterable[Adoption], window_days: int, now: datetime) -> BundleCounts:
    """The counts of the module docstring, computed in memory."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, not {window_days}")
    window = timedelta(days=window_days)
    cutoff = now - window
    items: Counter[str] = Counter()
    pairs: Counter[Pair] = Counter()
    triples: Counter[Triple] = Counter()
    matured_alone: Counter[str] = Counter()  # adopted at or before the cutoff
    followed: Counter[Pair] = Counter()
    followed_recently: Counter[Pair] = Counter()  # ... with A after the cutoff
    delays: defaultdict[Pair, list[float]] = defaultdict(list)
    grouped = _first_adoptions(adoptions)
    for basket in grouped.values():
        features = sorted(basket)
        items.update(features)
        pairs.update(combinations(features, 2))
        triples.update(combinations(features, 3))
        in_time = sorted(basket.items(), key=lambda fa: fa[1])
        for i, (first, first_at) in enumerate(in_time):
            if first_at <= cutoff:
                matured_alone[first] += 1
            limit = first_at + window
            for then, then_at in in_time[i + 1 :]:
                if then_at > limit:
                    break
                if then_at == first_at:
                    continue
                key = (first, then)
                followed[key] += 1
                if first_at > cutoff:
                    followed_recently[key] += 1
                delays[key].append(days_between(first_at, then_at))
    sequences = {}
    for key, n in followed.items():
        ordered = sorted(delays[key])
        sequences[key] = SequenceCounts(
            accounts=n,
            matured=matured_alone[key[0]] + followed_recently[key],
            p25=percentile_cont(ordered, 0.25),
            median=percentile_cont(ordered, 0.5),
            p75=percentile_cont(ordered, 0.75),
        )
    return BundleCounts(
        baskets=len(grouped),
        items=dict(items),
        pairs=dict(pairs),
        triples=dict(triples),
        sequences=sequences,
    )


def _splits(items: tuple[str, ...]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    found = []
    for size in range(1, len(items)):
        for antecedent in combinations(items, size):
            consequent = tuple(i for i in items if i not in antecedent)
            found.append((antecedent, consequent))
    return found


def itemsets(
    counts: BundleCounts, min_support: float, min_confidence: float, min_lift: float
) -> list[Bundle]:
    """The pairs and triples that meet the minimums, best lift first."""
    if counts.baskets == 0:
        return []

    def n(features: tuple[str, ...]) -> int:
        if len(features) == 1:
            return counts.items.get(features[0], 0)
        if len(features) == 2:
            return counts.pairs.get((features[0], features[1]), 0)
        return counts.triples.get((features[0], features[1], features[2]), 0)

    candidates: list[tuple[tuple[str, ...], int]] = [*counts.pairs.items()]
    candidates.extend(counts.triples.items())
    found = []
    for features, together in candidates:
        support = together / counts.baskets
        if support < min_support:
            continue
        rules = []
        for antecedent, consequent in _splits(features):
            confidence = together / n(antecedent)
            lift = confidence / (n(consequent) / counts.baskets)
            if confidence >= min_confidence and lift >= min_lift:
                rules.append(BundleRule(antecedent, consequent, confidence, lift))
        if rules:
            rules.sort(key=lambda r: (-r.lift, -r.confidence, r.antecedent))
            found.append(Bundle(features, together, support, rules))
    found.sort(key=lambda b: (-b.best_rule.lift, -b.support, b.items))
    return found


def sequences(
    counts: BundleCounts, min_support: float, min_confidence: float
) -> list[SequenceStat]:
    """The ordered pairs that meet the minimums, most confident first."""
    if counts.baskets == 0:
        return []
    found = []
    for (antecedent, consequent), seq in counts.sequences.items():
        support = seq.accounts / counts.baskets
        confidence = seq.accounts / seq.matured if seq.matured else 0.0
        if support >= min_support and confidence >= min_confidence:
            found.append(
                SequenceStat(
                    antecedent=antecedent,
                    consequent=consequent,
                    accounts=seq.accounts,
                    matured=seq.matured,
                    support=support,
                    confidence=confidence,
                    p25=seq.p25,
                    median_delay_days=seq.median,
                    p75=seq.p75,
                )
            )
    found.sort(key=lambda s: (-s.confidence, -s.support, s.antecedent, s.consequent))
    return found


def ready(adopted: Mapping[str, datetime], seq: SequenceStat, now: datetime) -> bool:
    """Whether an account whose adoptions are ``adopted`` (feature -> time) is
    ready for ``seq`` at ``now``: it has A, not B, and is inside the typical delay."""
    at = adopted.get(seq.antecedent)
    if at is None or seq.consequent in adopted:
        return False
    return seq.p25 <= days_between(at, now) <= seq.p75


def ready_accounts(
    adoptions: Iterable[Adoption], seq: SequenceStat, now: datetime
) -> list[tuple[str, datetime]]:
    """The accounts ready for ``seq`` at ``now``, with the time they adopted A,
    sorted by account."""
    return sorted(
        (account, adopted[seq.antecedent])
        for account, adopted in _first_adoptions(adoptions).items()
        if ready(adopted, seq, now)
    )
