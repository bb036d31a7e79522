"""The bundle counts of ``domain/bundles.py``, computed inside PostgreSQL.

The same definitions as :func:`services.insights.domain.bundles.count_bundles`
(the module docstring there states them), computed with ``GROUP BY``, self-joins
on ``adoptions`` and ``percentile_cont``, so that the service's memory holds
only the counts (at most O(features^3) rows) whatever the number of accounts.
The integration tests check that both paths give equal counts.

Three details keep the two paths equal:

- feature order is code point order (``COLLATE "C"``), as Python sorts ``str``;
- windows are added as seconds (``make_interval(secs => ...)``), never as days,
  which PostgreSQL would add in the session's time zone (23 or 25 hours across
  a DST change);
- a delay in days is exact microseconds, as a ``float8``, divided by the
  microseconds of a day: one rounding, the same as Python's ``timedelta``
  division, so the quartiles agree bit for bit.

``conn``'s search path must be the insights schema.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.insights.domain.bundles import BundleCounts, SequenceCounts, SequenceStat


def _days(earlier: str, later: str) -> str:
    micros = f"((extract(epoch FROM {later}) - extract(epoch FROM {earlier})) * 1000000)"
    return f"({micros}::bigint::float8 / 86400000000)"


_BASKETS = text("SELECT count(DISTINCT account) FROM adoptions WHERE tenant = :tenant")

_ITEMS = text("SELECT feature, count(*) FROM adoptions WHERE tenant = :tenant GROUP BY feature")

_PAIRS = text(
    """
    SELECT a.feature, b.feature, count(*)
    FROM adoptions a
    JOIN adoptions b ON b.tenant = a.tenant AND b.account = a.account
        AND a.feature COLLATE "C" < b.feature COLLATE "C"
    WHERE a.tenant = :tenant
    GROUP BY a.feature, b.feature
    """
)

_TRIPLES = text(
    """
    SELECT a.feature, b.feature, c.feature, count(*)
    FROM adoptions a
    JOIN adoptions b ON b.tenant = a.tenant AND b.account = a.account
        AND a.feature COLLATE "C" < b.feature COLLATE "C"
    JOIN adoptions c ON c.tenant = a.tenant AND c.account = a.account
        AND b.feature COLLATE "C" < c.feature COLLATE "C"
    WHERE a.tenant = :tenant
    GROUP BY a.feature, b.feature, c.feature
    """
)

_SEQUENCES = text(
    f"""
    WITH followed AS (
        SELECT a.feature AS a_feature, b.feature AS b_feature, a.adopted_at AS a_at,
               {_days("a.adopted_at", "b.adopted_at")} AS delay
        FROM adoptions a
        JOIN adoptions b ON b.tenant = a.tenant AND b.account = a.account
            AND b.adopted_at > a.adopted_at
            AND b.adopted_at <= a.adopted_at + make_interval(secs => :window_secs)
        WHERE a.tenant = :tenant
    ), matured_alone AS (
        SELECT feature, count(*) AS n
        FROM adoptions
        WHERE tenant = :tenant AND adopted_at <= :cutoff
        GROUP BY feature
    )
    SELECT f.a_feature, f.b_feature, count(*) AS accounts,
           coalesce(max(m.n), 0) + count(*) FILTER (WHERE f.a_at > :cutoff) AS matured,
           percentile_cont(0.25) WITHIN GROUP (ORDER BY f.delay) AS p25,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY f.delay) AS median,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY f.delay) AS p75
    FROM followed f
    LEFT JOIN matured_alone m ON m.feature = f.a_feature
    GROUP BY f.a_feature, f.b_feature
    """
)

_READY = text(
    f"""
    SELECT a.account, a.adopted_at
    FROM adoptions a
    WHERE a.tenant = :tenant AND a.feature = :antecedent
      AND NOT EXISTS (
          SELECT 1 FROM adoptions b
          WHERE b.tenant = a.tenant AND b.account = a.account AND b.feature = :consequent
      )
      AND {_days("a.adopted_at", "CAST(:now AS timestamptz)")} BETWEEN :p25 AND :p75
    ORDER BY a.account COLLATE "C"
    """
)


async def bundle_counts(
    conn: AsyncConnection, tenant: str, window_days: int, now: datetime
) -> BundleCounts:
    """The tenant's bundle counts, as ``count_bundles`` would give over its adoptions."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, not {window_days}")
    window = timedelta(days=window_days)
    tenant_only: dict[str, Any] = {"tenant": tenant}
    baskets = (await conn.execute(_BASKETS, tenant_only)).scalar_one()
    items = {f: n for f, n in (await conn.execute(_ITEMS, tenant_only))}
    pairs = {(a, b): n for a, b, n in (await conn.execute(_PAIRS, tenant_only))}
    triples = {(a, b, c): n for a, b, c, n in (await conn.execute(_TRIPLES, tenant_only))}
    rows = await conn.execute(
        _SEQUENCES,
        {"tenant": tenant, "window_secs": window.total_seconds(), "cutoff": now - window},
    )
    sequences = {
        (first, then): SequenceCounts(
            accounts=accounts, matured=matured, p25=p25, median=median, p75=p75
        )
        for first, then, accounts, matured, p25, median, p75 in rows
    }
    return BundleCounts(
        baskets=baskets, items=items, pairs=pairs, triples=triples, sequences=sequences
    )


async def ready_accounts(
    conn: AsyncConnection, tenant: str, seq: SequenceStat, now: datetime
) -> list[tuple[str, datetime]]:
    """The tenant's accounts ready for ``seq`` at ``now`` (the rule of
    ``domain.bundles.ready``), with the time they adopted A, sorted by account."""
    rows = await conn.execute(
        _READY,
        {
            "tenant": tenant,
            "antecedent": seq.antecedent,
            "consequent": seq.consequent,
            "now": now,
            "p25": seq.p25,
            "p75": seq.p75,
        },
    )
    return [(account, at) for account, at in rows]
