"""The segmenter keeps the account states it wrote in memory, fenced by the row
version: a write by anyone else, or a write that never committed, makes it read
the stored state again."""

from __future__ import annotations

from collections.abc import Sequence

from services.runtime.batch import Inbound
from services.runtime.config import Settings
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate
from services.runtime.program_file import read_program
from services.segmenter.adapters.db import PostgresAccountRepository, StateCache
from services.segmenter.backfill import MIGRATIONS
from services.segmenter.domain.program import load_program
from services.segmenter.handlers import process
from tests.unit.segmenter_events import at, key_action

PROGRAM = load_program(read_program(None))


def batch(n: int, start: int = 0) -> Sequence[Inbound]:
    events = [key_action("x", at(0, (start + i) / 100), feature=f"f{start + i}") for i in range(n)]
    return [Inbound(e, "events.product", 0, i) for i, e in enumerate(events)]  # type: ignore[arg-type]


async def test_kept_states_are_used_only_while_the_stored_version_is_ours(
    settings: Settings,
) -> None:
    engine = create_engine(settings.async_database_url(), "segmenter")
    await migrate(engine, "segmenter", {"runtime": RUNTIME_MIGRATIONS, "segmenter": MIGRATIONS})
    cache = StateCache()
    try:
        async with engine.begin() as conn:
            await process(PostgresAccountRepository(conn, cache), PROGRAM, batch(2), None)
        kept = cache.state(("t", "x"), cache.version(("t", "x")) or -1)
        assert kept is not None and len(kept.features_adopted) == 2

        # another writer (an instance after a rebalance, a backfill) moves the account
        async with engine.begin() as conn:
            await process(PostgresAccountRepository(conn), PROGRAM, batch(1, start=2), None)
        async with engine.begin() as conn:
            repo = PostgresAccountRepository(conn, cache)
            state = (await repo.load_accounts([("t", "x")]))[("t", "x")]
        assert state is not kept and len(state.features_adopted) == 3

        # ours again, then a batch that writes but never commits
        async with engine.begin() as conn:
            await process(PostgresAccountRepository(conn, cache), PROGRAM, batch(1, start=3), None)
        mine = cache.version(("t", "x"))
        conn_ctx = engine.connect()
        async with conn_ctx as conn:
            tx = await conn.begin()
            await process(PostgresAccountRepository(conn, cache), PROGRAM, batch(1, start=4), None)
            await tx.rollback()
        assert cache.version(("t", "x")) != mine  # it kept what it wrote ...
        async with engine.begin() as conn:
            repo = PostgresAccountRepository(conn, cache)
            state = (await repo.load_accounts([("t", "x")]))[("t", "x")]
        assert len(state.features_adopted) == 4  # ... but reads what was committed
    finally:
        await engine.dispose()
