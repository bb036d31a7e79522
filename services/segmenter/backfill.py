"""``loyalty segments backfill FILE.jsonl --tenant T``: replays a tenant's history.

The file holds one CloudEvent (HTTP JSON form, no ``tenant``) per line, in any
order: exports usually come customer by customer. Every line is validated before
anything is written; then the events are folded in **event-time order** (by time,
then account, then line: the same sequence whatever the file's order), in
event-time mode. A file of up to ``RUN_LINES`` lines is sorted in memory; a
larger one is sorted externally (sorted runs of ``RUN_LINES`` lines in temporary
files, merged lazily), so memory stays bounded by one run plus the tenant's
account state, not by the file.

The tenant's state is owned in memory for the whole run (loaded from Postgres at
the start, so a re-run or a second file continues it) and written back in
chunks: each chunk is one transaction with its dedupe rows, the accounts it
changed, the clock and the outbox (the running segmenter's relay, or this
command, publishes the transitions). Events already applied (same id) are
skipped, so a backfill can be re-run. Events refused as too late (older than
the tenant's stream time already allows) are written to
``FILE.rejected.jsonl`` with the reason. Backfill a tenant before its live
traffic starts: a live segmenter writing the same tenant meanwhile makes the
backfill stop (its clock moved under it) rather than lose either's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from schemas import EVENT_ADAPTER, Event, topic_family
from services.runtime.batch import Inbound, UnitOfWork, keep_first_seen
from services.runtime.connections import kafka_connection
from services.runtime.db import RUNTIME_MIGRATIONS, engine_for, migrate
from services.runtime.metrics import RuntimeMetrics
from services.runtime.relay import OutboxRelay
from services.runtime.topics import TopicNames
from services.segmenter.adapters.db import PostgresAccountRepository, PreparedSave, prepare_save
from services.segmenter.adapters.owned import OwnedAccountRepository
from services.segmenter.config import SegmenterSettings
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import AccountKey, TenantClock
from services.segmenter.domain.program import SegmenterProgram
from services.segmenter.handlers import FoldResult, process, transition_message

SCHEMA = "segmenter"
MIGRATIONS = Path(__file__).parent / "migrations"


class BackfillInputError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class BackfillReport:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    transitions: int = 0
    published: int = 0
    seconds: float = 0.0
    rejected_file: Path | None = None
    late_reasons: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - since
        return now


class Progress(Protocol):
    """Where a long backfill reports how far it got (a progress bar, or nothing)."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Quiet:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


RUN_LINES = 200_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _order(event: Event, line: int) -> tuple[int, str, int]:
    return ((event.time - _EPOCH) // timedelta(microseconds=1), event.subject, line)


def _validate(raw_line: str, tenant: str) -> Event:
    body = raw_line.rstrip()
    if '"tenant"' not in body and body.endswith("}") and not body.endswith("{}"):
        # the usual line: parsed and validated in one pass, the tenant added as text
        try:
            event: Event = EVENT_ADAPTER.validate_json(f"{body[:-1]},{_tenant_json(tenant)}}}")
        except ValidationError:
            pass  # the careful path below says precisely what is wrong
        else:
            if topic_family(event.type) is not None:
                return event
    return _validate_slowly(raw_line, tenant)


@lru_cache(maxsize=16)
def _tenant_json(tenant: str) -> str:
    return f'"tenant":{json.dumps(tenant)}'


def _validate_slowly(raw_line: str, tenant: str) -> Event:
    raw: Any = json.loads(raw_line)
    if not isinstance(raw, dict):
        raise ValueError("a line is one JSON object")
    if "tenant" in raw:
        raise ValueError("tenant: given on the command line, not in the file")
    if topic_family(str(raw.get("type", ""))) is None:
        raise ValueError(f"type: {raw.get('type')!r} is not a product, billing or support event")
    return EVENT_ADAPTER.validate_python({**raw, "tenant": tenant})


@dataclass
class History:
    """A validated history, to be read in event-time order with :meth:`events`."""

    count: int
    _memory: list[tuple[tuple[int, str, int], Event]] | None
    _runs: list[Path]
    _tenant: str
    _folder: Path | None = None

    def events(self) -> Iterator[Event]:
        if self._memory is not None:
            yield from (e for _, e in self._memory)
            return
        streams = [_read_run(p) for p in self._runs]
        for _key, line in heapq.merge(*streams):
            yield _validate(line, self._tenant)

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _read_run(path: Path) -> Iterator[tuple[tuple[int, str, int], str]]:
    with path.open() as fh:
        for row in fh:
            micros, subject, line, text = json.loads(row)
            yield (micros, subject, line), text


def _write_run(rows: list[tuple[tuple[int, str, int], str]], folder: Path, n: int) -> Path:
    rows.sort(key=lambda r: r[0])
    path = folder / f"run-{n:05d}.jsonl"
    with path.open("w") as fh:
        for key, text in rows:
            fh.write(json.dumps([*key, text]) + "\n")
    return path


def sort_history(
    path: Path,
    tenant: str,
    limit_errors: int = 20,
    run_lines: int = RUN_LINES,
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> History:
    """Validates every line (raises with line numbers if any is bad) and orders
    the events by (time, account, line)."""
    progress = progress or _Quiet()
    progress.phase("reading", path.stat().st_size)
    problems: list[str] = []
    memory: list[tuple[tuple[int, str, int], Event]] = []
    pending: list[tuple[tuple[int, str, int], str]] = []
    runs: list[Path] = []
    folder: Path | None = None
    count = 0
    with path.open() as fh:
        for n, line in enumerate(fh, start=1):
            progress.advance(len(line.encode()))
            if not line.strip():
                continue
            try:
                event = _validate(line, tenant)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in err["loc"][1:]) or "(event)"
                problems.append(f"line {n}: {loc}: {err['msg']}")
            except ValueError as exc:
                problems.append(f"line {n}: {exc}")
            else:
                count += 1
                key = _order(event, n)
                if problems:
                    pass  # keep validating, keep nothing
                elif runs or len(memory) >= run_lines:
                    if memory:  # the file is larger than a run: spill what we hold
                        pending += [
                            (k, json.dumps(e.model_dump(mode="json", exclude={"tenant"})))
                            for k, e in memory
                        ]
                        memory = []
                    pending.append((key, line.strip()))
                    if len(pending) >= run_lines:
                        folder = folder or Path(tempfile.mkdtemp(prefix="backfill-", dir=workdir))
                        runs.append(_write_run(pending, folder, len(runs)))
                        pending = []
                else:
                    memory.append((key, event))
            if len(problems) >= limit_errors:
                problems.append("... (stopped after the first errors)")
                break
    if problems:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise BackfillInputError(problems)
    if pending:
        folder = folder or Path(tempfile.mkdtemp(prefix="backfill-", dir=workdir))
        runs.append(_write_run(pending, folder, len(runs)))
    if runs:
        return History(count, None, runs, tenant, folder)
    memory.sort(key=lambda r: r[0])
    return History(count, memory, [], tenant)


def read_history(path: Path, tenant: str, limit_errors: int = 20) -> list[Event]:
    """Every event of the file in event-time order (see :func:`sort_history`)."""
    history = sort_history(path, tenant, limit_errors)
    try:
        return list(history.events())
    finally:
        history.close()


async def _load_tenant(
    conn: AsyncConnection, tenant: str
) -> tuple[TenantClock, dict[AccountKey, AccountState]]:
    pg = PostgresAccountRepository(conn)
    clock = (await pg.load_clocks([tenant]))[tenant]
    return clock, await pg.load_tenant_accounts(tenant, set())


async def _check_clock(conn: AsyncConnection, tenant: str, written: datetime | None) -> None:
    """Locks the tenant's clock row and checks nobody moved it since our last write."""
    row = (
        await conn.execute(
            text("SELECT watermark FROM tenant_clocks WHERE tenant = :t FOR UPDATE"),
            {"t": tenant},
        )
    ).one()
    if row[0] != written:
        raise BackfillConflict(
            f"tenant {tenant!r}: its stream time moved to {row[0]} while the backfill"
            f" held it at {written}: another segmenter is writing this tenant;"
            " stop it (or backfill before live traffic starts) and run the backfill again"
        )


class BackfillConflict(RuntimeError):
    """Someone else wrote the tenant's state during the backfill."""


async def backfill(
    settings: SegmenterSettings,
    program: SegmenterProgram,
    path: Path,
    tenant: str,
    chunk: int = 20_000,
    publish: bool = True,
    progress: Progress | None = None,
    run_lines: int = RUN_LINES,
) -> BackfillReport:
    progress = progress or _Quiet()
    started = time.perf_counter()
    history = sort_history(path, tenant, progress=progress, run_lines=run_lines)
    report = BackfillReport(events=history.count)
    mark = report.timed("read and sort", started)
    names = TopicNames(settings.topic_prefix)
    engine = engine_for(settings, SCHEMA)
    rejected: list[dict[str, Any]] = []
    try:
        await migrate(engine, SCHEMA, {"runtime": RUNTIME_MIGRATIONS, "segmenter": MIGRATIONS})
        async with engine.begin() as conn:
            clock, states = await _load_tenant(conn, tenant)
        written = clock.watermark
        repo = OwnedAccountRepository({tenant: clock}, states)
        progress.phase("folding", history.count)
        mark = time.perf_counter()
        # chunk k's writes and commit (Postgres, on its own connection) overlap chunk
        # k+1's dedupe and fold (the fold in a thread, so the event loop keeps
        # driving chunk k's statements): the two cores work at once. Chunk k+1 locks
        # the tenant's clock row only after chunk k committed, and commits only then.
        writing: asyncio.Task[None] | None = None
        try:
            for part in _chunks(history.events(), chunk):
                conn = await engine.connect()
                try:
                    tx = await conn.begin()
                    fresh = await keep_first_seen(conn, part, lambda e: (e.tenant, e.id))
                    report.duplicates += len(part) - len(fresh)
                    items = [Inbound(e, "backfill", 0, i) for i, e in enumerate(fresh)]  # type: ignore[arg-type]
                    mark = report.timed("dedupe", mark)
                    result = await asyncio.to_thread(_fold, repo, program, items)
                    mark = report.timed("fold", mark)
                    if writing is not None:
                        task, writing = writing, None
                        await task  # the previous chunk committed (or this raises)
                        mark = report.timed("wait for the previous commit", mark)
                    await _check_clock(conn, tenant, written)
                    clocks, dirty = repo.take_dirty()
                    state = prepare_save(clocks, dirty)
                    uow = UnitOfWork(conn, names, SCHEMA)
                    for t in result.transitions:
                        uow.publish_message("segments.changes", transition_message(t))
                    mark = report.timed("encode state and transitions", mark)
                except BaseException:
                    await conn.close()  # rolls back
                    raise
                written = clock.watermark
                # the task owns the connection from here: it writes, commits, closes
                writing = asyncio.create_task(_write_and_commit(conn, tx, state, uow))
                await asyncio.sleep(0)  # let it send its first statement
                progress.advance(len(part))
                report.applied += len(items) - len(result.late)
                report.late += len(result.late)
                report.transitions += len(result.transitions)
                for item, reason in result.late:
                    rejected.append(
                        {
                            "reason": reason,
                            "event": item.event.model_dump(mode="json", exclude={"tenant"}),
                        }
                    )
            if writing is not None:
                task, writing = writing, None
                await task
                mark = report.timed("wait for the previous commit", mark)
        finally:
            if writing is not None:
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing
        report.seconds = time.perf_counter() - started
        if rejected:
            report.rejected_file = path.with_suffix(".rejected.jsonl")
            report.rejected_file.write_text("".join(json.dumps(r) + "\n" for r in rejected))
            report.late_reasons = [r["reason"] for r in rejected[:3]]
        if publish:
            progress.phase("publishing", report.transitions)
            relay = OutboxRelay(
                service="segmenter-backfill",
                schema=SCHEMA,
                engine=engine,
                kafka=kafka_connection(settings),
                metrics=RuntimeMetrics("segmenter-backfill"),
            )
            await relay.start_producer()
            try:
                while (n := await relay.publish_once()) > 0:
                    report.published += n
                    progress.advance(n)
            finally:
                await relay.stop()
    finally:
        history.close()
        await engine.dispose()
    return report


def _fold(
    repo: OwnedAccountRepository, program: SegmenterProgram, items: list[Inbound]
) -> FoldResult:
    """One chunk's fold, run in a worker thread: pure CPU (the state is owned, the
    fold does no I/O), so the event loop meanwhile drives the previous chunk's
    writes. (Serialising and encoding stay on the loop: in the thread they would
    fight the writes' own Python work for the interpreter.)"""
    return asyncio.run(process(repo, program, items, None))


async def _write_and_commit(
    conn: AsyncConnection, tx: AsyncTransaction, state: PreparedSave, uow: UnitOfWork
) -> None:
    """Writes a chunk's state and outbox rows, commits, and closes the connection
    (rolling back if anything fails)."""
    try:
        await PostgresAccountRepository(conn).write(state)
        await uow.flush()
        await tx.commit()
    finally:
        await conn.close()


def _chunks(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    part: list[Event] = []
    for e in events:
        part.append(e)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part
