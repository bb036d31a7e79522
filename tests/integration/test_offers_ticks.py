"""The offers service's clock on real Postgres: a round of clock ticks moves a
tenant's stream time (and expires offers by it) only once it has been read on
every input partition; single ticks move nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from services.offers.app import load, spec
from services.offers.handlers import OffersHandler
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.config import Settings
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate
from services.runtime.ticks import TICKED_TOPICS, round_ticks
from services.runtime.topics import TopicNames


async def test_only_a_round_read_everywhere_moves_the_offers_clock(settings: Settings) -> None:
    program = load(settings)
    migrations = spec(program).migrations
    assert migrations is not None
    engine = create_engine(settings.async_database_url(), "offers")
    handler = OffersHandler(program)
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    ticks = round_ticks("acme", at, dict.fromkeys(TICKED_TOPICS, 6))
    later = round_ticks("acme", at + timedelta(minutes=1), dict.fromkeys(TICKED_TOPICS, 6))

    async def apply(batch: list[tuple[str, int, object]]) -> datetime | None:
        items = [Inbound(tick, topic, p, n) for n, (topic, p, tick) in enumerate(batch)]  # type: ignore[arg-type]
        async with engine.begin() as conn:
            await handler(UnitOfWork(conn, TopicNames(""), "offers"), items)
            clock: datetime | None = (
                await conn.execute(text("SELECT watermark FROM offer_clocks WHERE tenant = 'acme'"))
            ).scalar()
        return clock

    try:
        await migrate(engine, "offers", {"runtime": RUNTIME_MIGRATIONS, "offers": migrations})
        assert await apply(ticks[:10]) is None
        assert await apply(ticks[10:-1] + later[:5]) is None  # one tick of the first missing
        assert await apply(ticks[-1:]) == at  # the first round is whole
        assert await apply(later[5:]) == at + timedelta(minutes=1)
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM tick_rounds"))).scalar_one()
        assert left == 0  # completed rounds are forgotten
    finally:
        await engine.dispose()


async def test_a_rule_fires_again_in_the_batch_that_expires_its_last_offer(
    settings: Settings,
) -> None:
    """The last offer of a rule expired (in stream time) by a moment in this batch,
    and the rule fires again at that moment: the old offer leaves 'issued' before
    the new one is written, so the one-open-offer-per-rule index holds."""
    from schemas.events import FeatureUsed, FeatureUsedData

    program = load(settings)
    migrations = spec(program).migrations
    assert migrations is not None
    engine = create_engine(settings.async_database_url(), "offers")
    handler = OffersHandler(program)
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)

    def used(feature: str, t: datetime) -> FeatureUsed:
        return FeatureUsed(
            id=f"use-{feature}",
            source="app",
            type="product.feature_used",
            subject="a1",
            tenant="acme",
            time=t,
            data=FeatureUsedData(user_id="u", feature=feature, key_action=True),
        )

    async def apply(events: list[FeatureUsed]) -> None:
        items = [Inbound(e, "events.product", 0, n) for n, e in enumerate(events)]  # type: ignore[arg-type]
        async with engine.begin() as conn:
            await handler(UnitOfWork(conn, TopicNames(""), "offers"), items)

    try:
        await migrate(engine, "offers", {"runtime": RUNTIME_MIGRATIONS, "offers": migrations})
        await apply([used("api", at)])  # core_feature_training, open for 30 days
        await apply([used("sso", at + timedelta(days=40))])  # expired by then; fires again
        async with engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        text(
                            "SELECT status FROM offers WHERE rule = 'core_feature_training'"
                            " ORDER BY issued_at"
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert rows == ["expired", "issued"]
    finally:
        await engine.dispose()
