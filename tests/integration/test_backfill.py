"""`loyalty segments backfill`: history into a tenant, validated first, re-runnable."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import text

from schemas import Event
from services.runtime.config import Settings
from services.runtime.db import create_engine
from services.segmenter.app import load
from services.segmenter.backfill import BackfillInputError, backfill
from services.segmenter.config import SegmenterSettings
from tests.kafka_helpers import decoded, read_all
from tests.unit.segmenter_events import at, key_action, login, paid, subscribed


def write_history(path: Path) -> int:
    events = [subscribed("quiet", at(0)), subscribed("busy", at(0))]
    for d in range(15):
        events += [key_action("quiet", at(d * 2, 1)), key_action("quiet", at(d * 2, 2))]
    events += [login("busy", at(d, 3)) for d in range(30, 75)]
    events.append(login("busy", at(10)))  # out of order in the file: sorted into place
    lines = [json.dumps(e.model_dump(mode="json", exclude={"tenant"})) for e in events]
    path.write_text("\n".join(lines) + "\n")
    return len(events)


async def test_backfill_replays_history_and_can_run_again(
    settings: Settings, tmp_path: Path
) -> None:
    local = SegmenterSettings(**settings.model_dump())
    program = load(local)
    history = tmp_path / "history.jsonl"
    n = write_history(history)

    report = await backfill(local, program, history, "acme")
    assert (report.events, report.applied, report.late) == (n, n, 0)
    assert report.transitions > 0 and report.published == report.transitions

    engine = create_engine(local.async_database_url(), "segmenter")
    try:
        async with engine.connect() as conn:
            quiet = (
                await conn.execute(
                    text(
                        "SELECT segments FROM accounts WHERE tenant = 'acme' AND account = 'quiet'"
                    )
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert "at_risk" in quiet and "power_users" not in quiet
    changes = decoded(
        await read_all(
            local.kafka_bootstrap,
            f"{local.topic_prefix}segments.changes",
            at_least=report.published,
        )
    )
    assert len({c.id for c in changes}) == report.transitions

    again = await backfill(local, program, history, "acme")
    assert (again.applied, again.duplicates, again.transitions) == (0, n, 0)

    # a second file continues the tenant: what its stream time has passed is late
    older = tmp_path / "older.jsonl"
    older.write_text(json.dumps(_line(login("quiet", at(3)))) + "\n")
    late = await backfill(local, program, older, "acme")
    assert (late.applied, late.late) == (0, 1)
    assert late.rejected_file is not None
    assert "late event" in json.loads(late.rejected_file.read_text())["reason"]


def _line(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude={"tenant"})


def shop_history(customers: int, seed: int) -> list[Event]:
    """Purchases over a year and a half, a few per customer, at random times."""
    rng = random.Random(seed)
    events: list[Event] = []
    for c in range(customers):
        first = rng.uniform(0, 400)
        for k in range(rng.randint(1, 6)):
            t = at(first + k * rng.uniform(5, 60), rng.uniform(0, 24))
            events.append(paid(f"cust-{c:04d}", t, rng.randint(1, 40) * 500))
        if rng.random() < 0.3:
            events.append(login(f"cust-{c:04d}", at(first + 1)))
    return events


async def _segments_after(
    local: SegmenterSettings, lines: list[dict[str, Any]], tmp: Path, tenant: str, **kw: Any
) -> tuple[dict[str, list[str]], list[tuple[str, str, str, str]]]:
    path = tmp / f"{tenant}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = await backfill(local, load(local), path, tenant, publish=False, **kw)
    assert report.late == 0 and report.applied == len(lines)
    engine = create_engine(local.async_database_url(), "segmenter")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT account, segments FROM accounts WHERE tenant = :t"),
                    {"t": tenant},
                )
            ).all()
            changes = (
                await conn.execute(
                    text(
                        "SELECT encode(key, 'escape'), convert_from(value, 'UTF8') FROM outbox"
                        " WHERE convert_from(key, 'UTF8') LIKE :k ORDER BY id"
                    ),
                    {"k": f"{tenant}:%"},
                )
            ).all()
    finally:
        await engine.dispose()
    transitions = []
    for key, value in changes:
        data = json.loads(value)
        transitions.append((key.split(":", 1)[1], data["segment"], data["as_of"], data["cause"]))
    return {a: sorted(s) for a, s in rows}, transitions


async def test_a_history_in_customer_order_gives_what_time_order_gives(
    settings: Settings, tmp_path: Path
) -> None:
    local = SegmenterSettings(**settings.model_dump())
    events = shop_history(300, seed=5)
    by_time = sorted(events, key=lambda e: e.time)
    by_customer = sorted(events, key=lambda e: (e.subject, e.time))
    timed = await _segments_after(local, [_line(e) for e in by_time], tmp_path, "time-order")
    customers = await _segments_after(
        local, [_line(e) for e in by_customer], tmp_path, "customer-order"
    )
    # a file bigger than one sorting run is merged from sorted runs on disk
    spilled = await _segments_after(
        local, [_line(e) for e in by_customer], tmp_path, "spilled", run_lines=97
    )
    assert timed[1], "the history must cause transitions"
    assert customers == timed
    assert spilled == timed


async def test_a_bad_line_stops_the_backfill_before_anything_is_written(
    settings: Settings, tmp_path: Path
) -> None:
    local = SegmenterSettings(**settings.model_dump())
    history = tmp_path / "bad.jsonl"
    good = json.dumps(login("a", at(1)).model_dump(mode="json", exclude={"tenant"}))
    history.write_text(good + "\n" + '{"type": "product.login", "id": "x"}\n' + "[1]\n")
    try:
        await backfill(local, load(local), history, "acme")
    except BackfillInputError as exc:
        assert exc.problems[0].startswith("line 2: ")
        assert exc.problems[1] == "line 3: a line is one JSON object"
    else:
        raise AssertionError("a bad file was accepted")
    engine = create_engine(local.async_database_url(), "segmenter")
    try:
        async with engine.connect() as conn:
            exists = (
                await conn.execute(text("SELECT to_regclass('segmenter.accounts')"))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert exists is None  # not even the schema was created


async def test_a_backfill_stops_when_another_writer_moves_the_tenants_clock(
    settings: Settings, tmp_path: Path
) -> None:
    """Chunks are written while the next one folds; a live segmenter writing the
    same tenant meanwhile (here: a clock moved behind the backfill's back) stops it
    with a clear error, and what it committed before is whole: every applied event
    is recorded, and nothing after the conflict."""
    import asyncio

    import pytest

    from services.segmenter.backfill import BackfillConflict

    local = SegmenterSettings(**settings.model_dump())
    history = tmp_path / "history.jsonl"
    n = write_history(history)
    engine = create_engine(local.async_database_url(), "segmenter")
    moved: list[asyncio.Task[None]] = []

    async def move_clock() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE tenant_clocks SET watermark = watermark + interval '1 day'"
                    " WHERE tenant = 'acme'"
                )
            )

    class Meddler:
        folding = False

        def phase(self, name: str, total: int) -> None:
            self.folding = name == "folding"

        def advance(self, n: int) -> None:
            if self.folding and not moved:  # after the first chunk, another writer
                moved.append(asyncio.get_running_loop().create_task(move_clock()))

    try:
        with pytest.raises(BackfillConflict, match="another segmenter is writing this tenant"):
            await backfill(local, load(local), history, "acme", chunk=10, progress=Meddler())
        await asyncio.gather(*moved)
        async with engine.connect() as conn:
            recorded = (
                await conn.execute(text("SELECT count(*) FROM processed_events"))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert 10 <= recorded < n and recorded % 10 == 0  # whole chunks, not all of them
