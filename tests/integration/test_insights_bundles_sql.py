"""The bundle counts computed in PostgreSQL equal those of the pure
``count_bundles`` on the same adoptions, and readiness agrees too."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from services.insights.adapters.bundles_sql import bundle_counts, ready_accounts
from services.insights.domain import bundles
from services.insights.domain.bundles import Adoption, BundleCounts
from services.runtime.config import Settings
from services.runtime.db import create_engine, migrate

MIGRATIONS = Path("services/insights/migrations")
# mixed case, punctuation and accents: Python's code point order is not a
# locale's, so the SQL must compare features the same way
FEATURES = ["Export", "Zapier", "_sso", "api", "billing", "éditeur"]
T0 = datetime(2024, 2, 1, tzinfo=UTC)  # adoptions run across the March DST change
NOW = T0 + timedelta(days=100)
WINDOW_DAYS = 30


def random_adoptions(seed: int, accounts: int) -> list[Adoption]:
    """Mostly on whole days, so that ties, delays of exactly the window and
    adoptions exactly ``window_days`` before now are common; some to the microsecond."""
    rng = random.Random(seed)
    found = []
    for i in range(accounts):
        account = rng.choice(["acct", "Acct", "_acct"]) + str(i)
        for feature in rng.sample(FEATURES, rng.randint(1, len(FEATURES))):
            at = T0 + timedelta(days=rng.randint(0, 110))
            if rng.random() < 0.3:
                at += timedelta(microseconds=rng.randint(0, 86_400_000_000))
            found.append(Adoption(account, feature, at))
    return found


def assert_same_counts(sql: BundleCounts, pure: BundleCounts) -> None:
    assert sql.baskets == pure.baskets
    assert sql.items == pure.items
    assert sql.pairs == pure.pairs
    assert sql.triples == pure.triples
    # delays are the same one division of exact integers, and the quartiles the
    # same interpolation, on both sides: equal to the last bit
    assert sql.sequences == pure.sequences


async def test_sql_counts_and_readiness_equal_the_pure_ones(settings: Settings) -> None:
    engine = create_engine(settings.async_database_url(), "insights")
    try:
        await migrate(engine, "insights", {"insights": MIGRATIONS})
        tenants = {f"tenant{seed}": random_adoptions(seed, 40 + 30 * seed) for seed in range(4)}
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO adoptions VALUES (:tenant, :account, :feature, :at)"),
                [
                    {"tenant": t, "account": a.account, "feature": a.feature, "at": a.at}
                    for t, adoptions in tenants.items()
                    for a in adoptions
                ],
            )

        async with engine.connect() as conn:
            # windows must be absolute durations, whatever the session's time zone
            await conn.execute(text("SET TIME ZONE 'America/New_York'"))
            for tenant, adoptions in tenants.items():
                pure = bundles.count_bundles(adoptions, WINDOW_DAYS, NOW)
                assert any(s.accounts > 1 for s in pure.sequences.values())
                assert_same_counts(await bundle_counts(conn, tenant, WINDOW_DAYS, NOW), pure)

                found = bundles.sequences(pure, min_support=0.0, min_confidence=0.0)
                assert found
                ready_somewhere = 0
                for seq in found:
                    expected = bundles.ready_accounts(adoptions, seq, NOW)
                    assert await ready_accounts(conn, tenant, seq, NOW) == expected
                    ready_somewhere += len(expected)
                assert ready_somewhere > 0

            assert await bundle_counts(conn, "nobody", WINDOW_DAYS, NOW) == BundleCounts(0)
    finally:
        await engine.dispose()
