"""The ledger's tables defend themselves: unbalanced or edited entries are refused
by Postgres itself, whatever code writes them. Migrations apply once."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from services.ledger.app import spec
from services.runtime.config import Settings
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate


async def test_unbalanced_and_changed_entries_are_refused(settings: Settings) -> None:
    engine = create_engine(settings.async_database_url(), "ledger")
    components = {"runtime": RUNTIME_MIGRATIONS, "ledger": spec().migrations}
    try:
        first = await migrate(engine, "ledger", components)  # type: ignore[arg-type]
        again = await migrate(engine, "ledger", components)  # type: ignore[arg-type]
        assert first and again == []

        insert_txn = text(
            "INSERT INTO transactions (txn_id, tenant, description, booked_at)"
            " VALUES (:id, 't', 'd', now())"
        )
        insert_entry = text(
            "INSERT INTO entries (txn_id, line, tenant, ledger_account, amount,"
            " currency) VALUES (:id, :line, 't', :acct, :amount, 'USD')"
        )
        with pytest.raises(exc.DBAPIError, match="does not balance"):
            async with engine.begin() as conn:
                await conn.execute(insert_txn, {"id": "bad"})
                await conn.execute(
                    insert_entry, {"id": "bad", "line": 0, "acct": "x", "amount": 100}
                )
                await conn.execute(
                    insert_entry, {"id": "bad", "line": 1, "acct": "y", "amount": -99}
                )
        async with engine.begin() as conn:
            await conn.execute(insert_txn, {"id": "ok"})
            await conn.execute(insert_entry, {"id": "ok", "line": 0, "acct": "x", "amount": 7})
            await conn.execute(insert_entry, {"id": "ok", "line": 1, "acct": "y", "amount": -7})
        with pytest.raises(exc.DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE entries SET amount = 8 WHERE line = 0"))
        async with engine.connect() as conn:
            total = (await conn.execute(text("SELECT sum(amount) FROM entries"))).scalar_one()
        assert total == 0
    finally:
        await engine.dispose()


async def test_dedupe_entries_expire_after_the_retention(settings: Settings) -> None:
    from services.runtime.housekeeping import purge_processed_events

    engine = create_engine(settings.async_database_url(), "ledger")
    try:
        await migrate(engine, "ledger", {"runtime": RUNTIME_MIGRATIONS})
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO processed_events (tenant, event_id, processed_at)"
                    " SELECT 't', 'old-' || i, now() - interval '40 days'"
                    " FROM generate_series(1, 25) i"
                )
            )
            await conn.execute(
                text("INSERT INTO processed_events (tenant, event_id) VALUES ('t', 'fresh')")
            )
        assert await purge_processed_events(engine, 30, chunk=10) == 25
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT event_id FROM processed_events"))).all()
        assert [r[0] for r in left] == ["fresh"]
    finally:
        await engine.dispose()
