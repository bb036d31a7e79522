"""`loyalty segments backfill`: history into a tenant, validated first, re-runnable."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from services.runtime.config import Settings
from services.runtime.db import create_engine
from services.segmenter.app import load
from services.segmenter.backfill import BackfillInputError, backfill
from services.segmenter.config import SegmenterSettings
from tests.kafka_helpers import decoded, read_all
from tests.unit.segmenter_events import at, key_action, login, subscribed


def write_history(path: Path) -> int:
    events = [subscribed("quiet", at(0)), subscribed("busy", at(0))]
    for d in range(15):
        events += [key_action("quiet", at(d * 2, 1)), key_action("quiet", at(d * 2, 2))]
    events += [login("busy", at(d, 3)) for d in range(30, 75)]
    events.append(login("busy", at(10)))  # far too late by then: refused, kept aside
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
    assert (report.events, report.applied, report.late) == (n, n - 1, 1)
    assert report.rejected_file is not None
    assert "late event" in json.loads(report.rejected_file.read_text())["reason"]
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
