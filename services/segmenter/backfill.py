"""``loyalty segments backfill FILE.jsonl --tenant T``: replays a tenant's history.

The file holds one CloudEvent (HTTP JSON form, no ``tenant``) per line, in the
order to replay (normally by time). Every line is validated before anything is
written; then the events are folded in event-time mode, in chunks, each chunk in
one transaction with its dedupe rows, state and outbox (the running segmenter's
relay, or this command, publishes the transitions). Events already applied (same
id) are skipped, so a backfill can be re-run. Events refused as too late are
written to ``FILE.rejected.jsonl`` with the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas import EVENT_ADAPTER, Event, topic_family
from services.runtime.db import RUNTIME_MIGRATIONS, create_engine, migrate
from services.runtime.metrics import RuntimeMetrics
from services.runtime.relay import OutboxRelay
from services.runtime.topics import TopicNames
from services.runtime.worker import Inbound, UnitOfWork, keep_first_seen
from services.segmenter.adapters.db import PostgresAccountRepository
from services.segmenter.config import SegmenterSettings
from services.segmenter.domain.program import SegmenterProgram
from services.segmenter.handlers import process, transition_event

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


def read_history(path: Path, tenant: str, limit_errors: int = 20) -> list[Event]:
    """Parses and validates every line; raises with line numbers if any is bad."""
    events: list[Event] = []
    problems: list[str] = []
    with path.open() as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw: Any = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("a line is one JSON object")
                if "tenant" in raw:
                    raise ValueError("tenant: given on the command line, not in the file")
                if topic_family(str(raw.get("type", ""))) is None:
                    raise ValueError(
                        f"type: {raw.get('type')!r} is not a product, billing or support event"
                    )
                events.append(EVENT_ADAPTER.validate_python({**raw, "tenant": tenant}))
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in err["loc"][1:]) or "(event)"
                problems.append(f"line {n}: {loc}: {err['msg']}")
            except ValueError as exc:
                problems.append(f"line {n}: {exc}")
            if len(problems) >= limit_errors:
                problems.append("... (stopped after the first errors)")
                break
    if problems:
        raise BackfillInputError(problems)
    return events


async def backfill(
    settings: SegmenterSettings,
    program: SegmenterProgram,
    path: Path,
    tenant: str,
    chunk: int = 2_000,
    publish: bool = True,
) -> BackfillReport:
    events = read_history(path, tenant)
    report = BackfillReport(events=len(events))
    names = TopicNames(settings.topic_prefix)
    engine = create_engine(settings.async_database_url(), SCHEMA)
    started = time.perf_counter()
    rejected: list[dict[str, Any]] = []
    try:
        await migrate(engine, SCHEMA, {"runtime": RUNTIME_MIGRATIONS, "segmenter": MIGRATIONS})
        for start in range(0, len(events), chunk):
            part = events[start : start + chunk]
            async with engine.begin() as conn:
                fresh = await keep_first_seen(conn, part, lambda e: (e.tenant, e.id))
                report.duplicates += len(part) - len(fresh)
                items = [Inbound(e, "backfill", 0, i) for i, e in enumerate(fresh)]  # type: ignore[arg-type]
                result = await process(PostgresAccountRepository(conn), program, items, None)
                uow = UnitOfWork(conn, names, SCHEMA)
                for t in result.transitions:
                    uow.publish("segments.changes", transition_event(t))
                await uow.flush()
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
        report.seconds = time.perf_counter() - started
        if rejected:
            report.rejected_file = path.with_suffix(".rejected.jsonl")
            report.rejected_file.write_text("".join(json.dumps(r) + "\n" for r in rejected))
            report.late_reasons = [r["reason"] for r in rejected[:3]]
        if publish:
            relay = OutboxRelay(
                service="segmenter-backfill",
                schema=SCHEMA,
                engine=engine,
                bootstrap=settings.kafka_bootstrap,
                metrics=RuntimeMetrics("segmenter-backfill"),
            )
            await relay.start_producer()
            try:
                while (n := await relay.publish_once()) > 0:
                    report.published += n
            finally:
                await relay.stop()
    finally:
        await engine.dispose()
    return report
