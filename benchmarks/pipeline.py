"""``loyalty bench pipeline``: the whole system under a sustained load, end to end.

It starts the embedded broker and Postgres (unless configured), creates a tenant
key on fresh topics (a random prefix), then the four services as separate
``loyalty serve`` processes on free ports (the segmenter on the live clock, the
default program), and posts synthetic SaaS traffic to ingest over HTTP at a fixed
rate: a batch of 100 events every ``100 / rate`` seconds, scheduled on a
monotonic clock. A batch that is late is sent at once, so the mean rate holds
rather than drifting; the output says how far behind schedule the generator
fell and which rate was achieved. The traffic is ``services/demo.py``'s accounts
(they subscribe, log in, use features, finish onboarding, grow into their seats,
now and then ask to cancel), with event time = now. Nine in ten accounts
subscribe evenly over a warm-up (the first fifth of the run), the others evenly
after it, so that segment entries and first offers (the contact policy allows an
account one offer a day) keep coming until the end, while the population — and
the account state the services keep in memory — hardly grows after the warm-up.
The latency goals are judged on the events posted after the warm-up (the whole
run's figures and the p99 of each tenth of the run are printed too), and RSS is
compared with its first sample after it.

Latency is from the moment a POST was sent to the moment this process read the
event it caused, both on one monotonic clock:

- to ``segment.entered``: its ``data.cause`` is the id of the causing event.
  Event ids are ``<run>-<n>``, and event ``n`` went out in POST ``n // 100``.
  Entries caused otherwise (a day rollover, or an RFM rescore that another
  account's event set off: ``<id>/rescore/<account>``) are counted, not timed.
- to ``credit.*``, the ledger's first decision on an offer (granted, rejected or
  pending approval): its ``data.offer_id`` is the id of an ``offer.issued``, which
  the offers service derives from tenant, account, cause and rule
  (``services.offers.domain.engine.offer_id``). The bench recomputes it for the
  account's last 64 posted events to find the cause. Offers caused otherwise (a
  day rollover) or by an older event count as unmatched. Held-out offers get no
  credit decision; they are only counted.

Every 5 s it reads each service's ``/metrics`` (``loyalty_consumer_lag`` summed
over topics and partitions, dead letters, outbox backlog) and each service
process's RSS. After the load it waits for the pipeline to drain (lags and
outboxes at zero, nothing new for 3 s; 60 s at most) so that the slowest events
count too. Service logs go to files in a temporary directory; the output names it
and counts their error lines. On any error or Ctrl-C the service processes it
started (and only those) get SIGTERM, then SIGKILL after 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from benchmarks.stack import with_stack
from services.demo import DemoAccount, make_accounts, step, subscription
from services.offers.domain.engine import offer_id
from services.progress import TerminalProgress
from services.runtime.config import Settings
from services.runtime.connections import Kafka, as_connection, kafka_connection
from services.runtime.embedded import die_with_parent, free_port
from services.runtime.tenants import tenant_id_for
from services.runtime.topics import TopicNames, broker_incarnation

BATCH = 100
MAX_IN_FLIGHT = 32  # concurrent POSTs before the generator waits (and falls behind)
SAMPLE_EVERY_S = 5.0
WARM_UP = 0.2  # of the run: accounts ramp up; latency goals and RSS baseline come after
JOIN_IN_WARM_UP = 0.9  # of the accounts subscribe during the warm-up, the rest after it
RSS_TOLERANCE = 0.10
SEGMENT_GOAL_S = 1.0
CREDIT_GOAL_S = 2.0
RECENT = 64  # posted events remembered per account, to find an offer's cause
DRAIN_MAX_S = 60.0
QUIET_S = 3.0
SLICES = 10  # latency p99 over time: the run in this many slices
SERVICE_NAMES = ("ingest", "segmenter", "offers", "ledger")
OUTPUTS = ("segments.changes", "offers.decisions", "credits.decisions")
CREDIT_DECISIONS = ("credit.granted", "credit.rejected", "credit.pending_approval")


@dataclass
class Latencies:
    """Seconds from a POST to an event it caused, with when (into the load) it was sent."""

    sent_at: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, sent_at: float, seconds: float) -> None:
        self.sent_at.append(sent_at)
        self.seconds.append(seconds)

    def pct(self, q: float) -> float:
        return _pct(self.seconds, q)

    def after(self, at: float) -> list[float]:
        return [s for t, s in zip(self.sent_at, self.seconds, strict=True) if t >= at]

    def p99_over_time(self, load_seconds: float) -> list[float | None]:
        """p99 of the events sent in each of ``SLICES`` equal parts of the load."""
        width = max(load_seconds, 1e-9) / SLICES
        slices: list[list[float]] = [[] for _ in range(SLICES)]
        for at, s in zip(self.sent_at, self.seconds, strict=True):
            slices[min(int(at / width), SLICES - 1)].append(s)
        return [_pct(s, 0.99) if s else None for s in slices]

    def figures(self, load_seconds: float) -> dict[str, Any]:
        """After the warm-up (what the goals judge), the whole run, and p99 over time."""
        steady = self.after(WARM_UP * load_seconds)
        return {
            "matched": len(steady),
            "p50_ms": 1000 * _pct(steady, 0.5),
            "p99_ms": 1000 * _pct(steady, 0.99),
            "max_ms": 1000 * max(steady, default=0.0),
            "whole_run": {
                "matched": len(self.seconds),
                "p50_ms": 1000 * self.pct(0.5),
                "p99_ms": 1000 * self.pct(0.99),
                "max_ms": 1000 * max(self.seconds, default=0.0),
            },
            "p99_ms_over_time": [
                None if p is None else 1000 * p for p in self.p99_over_time(load_seconds)
            ],
        }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Traffic:
    """The demo's SaaS accounts at a steady pace. Nine in ten subscribe evenly over
    the warm-up, the rest evenly after it (new accounts keep coming, but the
    population, and the state the services keep of it, hardly grows once the RSS
    baseline is taken); every batch is exactly ``BATCH`` events."""

    def __init__(self, accounts: int, seconds: float, run: str, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.fleet: list[DemoAccount] = make_accounts(accounts, self.rng)
        self.by_warm_up = max(1, int(accounts * JOIN_IN_WARM_UP))
        self.seconds = seconds
        self.run = run
        self.joined = 0
        self.seq = 0
        self._pending: deque[dict[str, Any]] = deque()
        self.recent: dict[str, deque[int]] = {}

    def batch(self, at: float) -> list[dict[str, Any]]:
        """The next batch, ``at`` seconds into the load."""
        n, warm_up = len(self.fleet), WARM_UP * self.seconds
        if at < warm_up:
            due = max(BATCH, int(self.by_warm_up * at / warm_up))  # not one account's batch
        else:
            due = self.by_warm_up + int(
                (n - self.by_warm_up) * (at - warm_up) / (self.seconds - warm_up)
            )
        while self.joined < min(due, n):
            self._pending.append(subscription(self.fleet[self.joined]))
            self.joined += 1
        while len(self._pending) < BATCH:
            self._pending.extend(step(self.fleet[self.rng.randrange(self.joined)], self.rng))
        out = [self._pending.popleft() for _ in range(BATCH)]
        for event in out:
            event["id"] = f"{self.run}-{self.seq}"
            ring = self.recent.get(event["subject"])
            if ring is None:
                ring = self.recent[event["subject"]] = deque(maxlen=RECENT)
            ring.append(self.seq)
            self.seq += 1
        return out


@dataclass
class Service:
    name: str
    url: str
    proc: asyncio.subprocess.Process
    log: Path
    rss: list[tuple[float, int]] = field(default_factory=list)
    lag: list[tuple[float, int]] = field(default_factory=list)
    dead_lettered: int = 0
    backlog: int = 0
    peak_rss: int = 0  # VmHWM where the OS tells it, else the sampled maximum
    exited: int | None = None  # its exit code, if it died before the bench stopped it


class Matcher:
    """Follows decisions back to the POST that caused them (see the module doc)."""

    def __init__(self, traffic: Traffic, tenant: str) -> None:
        self.traffic = traffic
        self.tenant = tenant
        self.sent: list[float] = []  # monotonic time each POST was sent, by batch number
        self.start = 0.0  # monotonic start of the load
        self.segment = Latencies()
        self.credit = Latencies()
        self.segment_other = 0
        self.offers: Counter[str] = Counter()
        self.credits: Counter[str] = Counter()
        self.last_read = time.monotonic()
        self._offer_sent: dict[str, float] = {}
        self._early: dict[str, float] = {}  # credit read before its offer: read time
        self._decided: set[str] = set()

    def sent_at(self, event_id: str | None) -> float | None:
        prefix = self.traffic.run + "-"
        seq = event_id[len(prefix) :] if event_id and event_id.startswith(prefix) else ""
        if not seq.isdigit():  # not ours, or ``<id>/rescore/<account>``: another account's
            return None
        batch = int(seq) // BATCH
        return self.sent[batch] if batch < len(self.sent) else None

    def see(self, kind: str, headers: dict[str, bytes], value: bytes, now: float) -> None:
        self.last_read = now
        if kind == "segment.entered":
            sent = self.sent_at(json.loads(value).get("cause"))
            if sent is None:
                self.segment_other += 1
            else:
                self.segment.add(sent - self.start, now - sent)
        elif kind == "offer.held_out":
            self.offers["held_out"] += 1
        elif kind == "offer.issued":
            self._issued(headers, json.loads(value)["rule"])
        elif kind in CREDIT_DECISIONS:
            oid = json.loads(value)["offer_id"]
            if oid in self._decided:
                return  # a later decision (a pending approval decided): not the first
            self._decided.add(oid)
            self.credits[kind] += 1
            sent = self._offer_sent.pop(oid, None)
            if sent is None:
                self._early[oid] = now
            else:
                self.credit.add(sent - self.start, now - sent)

    def _issued(self, headers: dict[str, bytes], rule: str) -> None:
        oid, account = headers["ce_id"].decode(), headers["ce_subject"].decode()
        self.offers["issued"] += 1
        for seq in reversed(self.traffic.recent.get(account, ())):
            cause = f"{self.traffic.run}-{seq}"
            if offer_id(self.tenant, account, cause, rule) == oid:
                sent = self.sent_at(cause)
                break
        else:
            sent = None
        if sent is None:
            self.offers["unmatched"] += 1
        elif oid in self._early:
            self.credit.add(sent - self.start, self._early.pop(oid) - sent)
        else:
            self._offer_sent[oid] = sent

    def unresolved(self) -> tuple[int, int]:
        """(matched offers without a credit decision yet, credits without a matched offer)."""
        return len(self._offer_sent), len(self._early)


@dataclass
class PipelineBench:
    rate: float
    seconds: float
    accounts: int
    by_warm_up: int  # accounts subscribed by the end of the warm-up
    posted: int
    accepted: int
    refused: Counter[str]
    load_seconds: float
    behind_s: float
    post_ms: list[float]
    matcher: Matcher
    services: dict[str, Service]
    drain_s: float
    logs: Path
    log_errors: dict[str, int]

    @property
    def achieved(self) -> float:
        return self.accepted / self.load_seconds if self.load_seconds else 0.0

    def _lag(self, s: Service) -> dict[str, Any]:
        during = [v for t, v in s.lag if t <= self.load_seconds]
        after = [v for t, v in s.lag if t > WARM_UP * self.load_seconds and t <= self.load_seconds]
        half = len(after) // 2
        first, second = max(after[:half], default=0), max(after[half:], default=0)
        return {
            "max": max(during, default=0),
            "last_under_load": during[-1] if during else 0,
            "after_drain": s.lag[-1][1] if s.lag else 0,
            # no upward trend: the second half's peak within 1.25x the first half's,
            # or under one second of input
            "bounded": second <= max(1.25 * first, self.rate),
            "series": [[round(t, 1), v] for t, v in s.lag],
        }

    def _rss(self, s: Service) -> dict[str, Any]:
        after = [v for t, v in s.rss if t >= WARM_UP * self.load_seconds]
        base = after[0] if after else 0
        changes = [v / base - 1 for v in after] if base else [0.0]
        return {
            "peak_bytes": max(s.peak_rss, *(v for _, v in s.rss), 0),
            "after_warm_up_bytes": base,
            "end_bytes": after[-1] if after else 0,
            "min_change": min(changes),
            "max_change": max(changes),
            "flat": all(abs(c) <= RSS_TOLERANCE for c in changes),
        }

    def json(self) -> dict[str, Any]:
        m = self.matcher
        undecided, orphan_credits = m.unresolved()
        lag = {n: self._lag(s) for n, s in self.services.items()}
        rss = {n: self._rss(s) for n, s in self.services.items()}
        seg = m.segment.figures(self.load_seconds)
        credit = m.credit.figures(self.load_seconds)
        return {
            "bench": "pipeline",
            "rate_target": self.rate,
            "seconds_target": self.seconds,
            "accounts": self.accounts,
            "accounts_by_warm_up_end": self.by_warm_up,
            "events_posted": self.posted,
            "events_accepted": self.accepted,
            "requests_refused": dict(self.refused),
            "load_seconds": self.load_seconds,
            "events_per_s": self.achieved,
            "max_behind_schedule_s": self.behind_s,
            "post_p50_ms": _pct(self.post_ms, 0.5),
            "post_p99_ms": _pct(self.post_ms, 0.99),
            "segment_entered": {**seg, "not_from_a_post": m.segment_other},
            "credit": {
                **credit,
                "by_type": dict(m.credits),
                "without_matched_offer": orphan_credits,
            },
            "offers": {
                "issued": m.offers["issued"],
                "held_out": m.offers["held_out"],
                "cause_not_found": m.offers["unmatched"],
                "no_credit_decision": undecided,
            },
            "lag": lag,
            "rss": rss,
            "dead_lettered": {n: s.dead_lettered for n, s in self.services.items()},
            "exited_during_run": {
                n: s.exited for n, s in self.services.items() if s.exited is not None
            },
            "drain_seconds": self.drain_s,
            "goals": {
                "segment_p99_under_1s": bool(seg["matched"])
                and seg["p99_ms"] < 1000 * SEGMENT_GOAL_S,
                "credit_p99_under_2s": bool(credit["matched"])
                and credit["p99_ms"] < 1000 * CREDIT_GOAL_S,
                "lag_bounded": all(v["bounded"] for v in lag.values()),
                "rss_flat": all(v["flat"] for v in rss.values()),
            },
            "logs": str(self.logs),
            "log_error_lines": self.log_errors,
        }

    def lines(self) -> list[str]:
        f = self.json()
        seg, credit, offers, goals = f["segment_entered"], f["credit"], f["offers"], f["goals"]

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:,.0f}"

        def met(ok: bool) -> str:
            return "met" if ok else "MISSED"

        refused = ", ".join(f"{n} {k}" for k, n in self.refused.items()) or "none"
        by_type = ", ".join(f"{k} {n:,}" for k, n in sorted(credit["by_type"].items()))
        warm = WARM_UP * self.load_seconds
        out = [
            f"load        {self.accepted:,} of {self.posted:,} events accepted in"
            f" {self.load_seconds:.1f}s for {self.accounts:,} accounts ({self.by_warm_up:,}"
            f" subscribing in the {warm:.0f}s warm-up, the rest after it)",
            f"rate        {self.achieved:,.0f} events/s achieved (target {self.rate:,.0f}),"
            f" at most {self.behind_s:.2f}s behind schedule; refused requests: {refused}",
            f"POST        p50 {f['post_p50_ms']:,.0f} ms, p99 {f['post_p99_ms']:,.0f} ms"
            f" a batch of {BATCH}",
            "latency     from POST, for events posted after the warm-up (whole run in brackets)",
            *(
                f"  {label:<16}p50 {ms(x['p50_ms']):>6} ms, p99 {ms(x['p99_ms']):>6} ms, max"
                f" {ms(x['max_ms']):>6} ms, n {x['matched']:>7,}   (p50"
                f" {ms(x['whole_run']['p50_ms'])}, p99 {ms(x['whole_run']['p99_ms'])},"
                f" n {x['whole_run']['matched']:,})  goal p99 < {goal:.0f} s: {met(ok)}"
                for label, x, goal, ok in (
                    ("segment.entered", seg, SEGMENT_GOAL_S, goals["segment_p99_under_1s"]),
                    ("credit.*", credit, CREDIT_GOAL_S, goals["credit_p99_under_2s"]),
                )
            ),
            f"  p99 in each tenth of the run, ms: segment.entered"
            f" {' '.join(ms(v) for v in seg['p99_ms_over_time'])};"
            f" credit.* {' '.join(ms(v) for v in credit['p99_ms_over_time'])}",
            f"decisions   {seg['not_from_a_post']:,} segment entries not caused by a POST"
            f" (rollovers, rescores); offers issued {offers['issued']:,} (cause not found"
            f" {offers['cause_not_found']:,}), held out {offers['held_out']:,};"
            f" credits: {by_type or 'none'}; {offers['no_credit_decision']:,} offers undecided,"
            f" {credit['without_matched_offer']:,} credits without a matched offer",
            f"lag         loyalty_consumer_lag every {SAMPLE_EVERY_S:.0f}s (max / last under load"
            f" / after drain, {self.drain_s:.0f}s)  goal bounded: {met(goals['lag_bounded'])}",
        ]
        for name, lag in f["lag"].items():
            series = [v for t, v in lag["series"] if t <= self.load_seconds]
            picks = series[:: max(1, len(series) // 10)]
            out.append(
                f"  {name:<10}{lag['max']:>9,} /{lag['last_under_load']:>9,} /"
                f"{lag['after_drain']:>7,}  {'bounded' if lag['bounded'] else 'GROWING'};"
                f" samples: {' '.join(f'{v:,}' for v in picks)}"
            )
        out.append(
            f"rss         peak, after warm-up ({self.by_warm_up:,} accounts), end"
            f" ({self.accounts:,}), range after warm-up  goal within ±{RSS_TOLERANCE:.0%}:"
            f" {met(goals['rss_flat'])}"
        )
        for name, r in f["rss"].items():
            mb = [r[k] / 2**20 for k in ("peak_bytes", "after_warm_up_bytes", "end_bytes")]
            out.append(
                f"  {name:<10}{mb[0]:>7,.0f} MB {mb[1]:>7,.0f} MB {mb[2]:>7,.0f} MB"
                f"  {r['min_change']:+.1%} .. {r['max_change']:+.1%}"
                f"  {'flat' if r['flat'] else 'NOT FLAT'}"
            )
        dead = ", ".join(f"{n} {v:,}" for n, v in f["dead_lettered"].items() if v) or "none"
        errors = ", ".join(f"{n} {v:,}" for n, v in self.log_errors.items() if v) or "none"
        died = ", ".join(f"{n} ({c})" for n, c in f["exited_during_run"].items()) or "none"
        out.append(
            f"problems    dead letters: {dead}; error lines in service logs: {errors};"
            f" exited during the run: {died}"
        )
        out.append(f"logs        {self.logs}")
        return out


async def run_pipeline_bench(
    bootstrap: str, database_url: str, rate: float, seconds: float, accounts: int
) -> PipelineBench:
    from services.cli import create_tenant_key

    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}."
    name = f"bench-pipeline-{run}"
    settings = Settings(
        kafka_bootstrap=bootstrap, database_url=SecretStr(database_url), topic_prefix=prefix
    )
    names = TopicNames(prefix)
    key = await create_tenant_key(settings, name)
    kafka = kafka_connection(settings)
    await broker_incarnation(kafka, names)
    env = {k: v for k, v in os.environ.items() if k != "LOYALTY_PROGRAM"}  # the default program
    env.update(
        LOYALTY_KAFKA_BOOTSTRAP=bootstrap,
        LOYALTY_DATABASE_URL=database_url,
        LOYALTY_TOPIC_PREFIX=prefix,
        LOYALTY_SEGMENTER_CLOCK="live",
    )
    logs = Path(tempfile.mkdtemp(prefix="loyalty-bench-pipeline-"))
    services: dict[str, Service] = {}
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    assert me is not None
    loop.add_signal_handler(signal.SIGTERM, me.cancel)  # clean up as on Ctrl-C
    try:
        for service in SERVICE_NAMES:
            services[service] = await _start(service, env, logs)
        async with httpx.AsyncClient(timeout=30) as http:
            await _wait_ready(http, services.values())
            traffic = Traffic(accounts, seconds, run)
            matcher = Matcher(traffic, tenant_id_for(name))
            bench = _Load(http, services, matcher, key, rate, seconds)
            await bench.run(kafka, [names.physical(t) for t in OUTPUTS])
        for s in services.values():
            s.peak_rss = max(s.peak_rss, _vm_hwm(s.proc.pid))
            s.exited = s.proc.returncode
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await _stop(services.values())
    return PipelineBench(
        rate=rate,
        seconds=seconds,
        accounts=accounts,
        by_warm_up=traffic.by_warm_up,
        posted=bench.posted,
        accepted=bench.accepted,
        refused=bench.refused,
        load_seconds=bench.load_seconds,
        behind_s=bench.behind_s,
        post_ms=bench.post_ms,
        matcher=matcher,
        services=services,
        drain_s=bench.drain_s,
        logs=logs,
        log_errors={n: _error_lines(s.log) for n, s in services.items()},
    )


class _Load:
    """The paced generator, the decision reader and the sampler, run together."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        services: dict[str, Service],
        matcher: Matcher,
        key: str,
        rate: float,
        seconds: float,
    ) -> None:
        self.http = http
        self.services = services
        self.matcher = matcher
        self.traffic = matcher.traffic
        self.headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/cloudevents-batch+json",
        }
        self.rate = rate
        self.seconds = seconds
        self.posted = self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.post_ms: list[float] = []
        self.behind_s = 0.0
        self.load_seconds = 0.0
        self.drain_s = 0.0
        self.progress = TerminalProgress()
        self._helpers: list[asyncio.Task[None]] = []

    async def run(self, kafka: Kafka, outputs: list[str]) -> None:
        consumer = AIOKafkaConsumer(
            **as_connection(kafka).client_kwargs(), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        stop = asyncio.Event()
        try:
            await _assign(consumer, outputs)
            self.matcher.start = time.monotonic()
            self._helpers = [
                asyncio.create_task(self._read(consumer, stop)),
                asyncio.create_task(self._sample(stop)),
            ]
            try:
                with self.progress:
                    self.progress.phase("posting", int(self.rate * self.seconds))
                    await self._post_all()
                self.load_seconds = time.monotonic() - self.matcher.start
                self.drain_s = await self._drain()
            finally:
                stop.set()
                await asyncio.gather(*self._helpers, return_exceptions=True)
            self._check_helpers()
        finally:
            await consumer.stop()

    def _check_helpers(self) -> None:
        """Raises what stopped the reader or the sampler, if anything did."""
        for task in self._helpers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def _post_all(self) -> None:
        interval = BATCH / self.rate
        start = self.matcher.start
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()
        k = 0
        while k * interval < self.seconds:
            due = start + k * interval
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await slots.acquire()
            self._check_helpers()
            events = self.traffic.batch(k * interval)
            sent = time.monotonic()
            self.behind_s = max(self.behind_s, sent - due)
            self.matcher.sent.append(sent)
            task = asyncio.create_task(self._post(json.dumps(events).encode(), sent, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
        await asyncio.gather(*pending)

    async def _post(self, body: bytes, sent: float, slots: asyncio.Semaphore) -> None:
        self.posted += BATCH
        try:
            r = await self.http.post(
                f"{self.services['ingest'].url}/v1/events", content=body, headers=self.headers
            )
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        finally:
            slots.release()
        self.post_ms.append(1000 * (time.monotonic() - sent))
        if status == "202":
            self.accepted += BATCH
            self.progress.advance(BATCH)
        else:
            self.refused[status] += 1

    async def _read(self, consumer: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers)
                    self.matcher.see(headers.get("ce_type", b"").decode(), headers, r.value, now)

    async def _sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._sample_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)

    async def _sample_once(self) -> None:
        at = time.monotonic() - self.matcher.start
        for s in self.services.values():
            with contextlib.suppress(psutil.Error):
                s.rss.append((at, int(psutil.Process(s.proc.pid).memory_info().rss)))
            try:
                text = (await self.http.get(f"{s.url}/metrics", timeout=5)).text
            except httpx.HTTPError:
                continue  # a missed sample; the next one comes in SAMPLE_EVERY_S
            s.lag.append((at, int(_metric_sum(text, "loyalty_consumer_lag"))))
            s.dead_lettered = int(_metric_sum(text, "loyalty_messages_dead_lettered_total"))
            s.backlog = int(_metric_sum(text, "loyalty_outbox_backlog"))

    async def _drain(self) -> float:
        """Waits until nothing is left in flight; returns how long that took."""
        start = time.monotonic()
        while time.monotonic() - start < DRAIN_MAX_S:
            await asyncio.sleep(1)
            self._check_helpers()
            if time.monotonic() - self.matcher.last_read < QUIET_S:
                continue
            await self._sample_once()
            if all(s.lag and s.lag[-1][1] == 0 and s.backlog == 0 for s in self.services.values()):
                break
        return time.monotonic() - start


def _metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples over all labels, in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _assign(consumer: Any, topics: list[str]) -> None:
    """All partitions of the (fresh, so still empty) output topics, from the start:
    that is their end too, without asking the embedded broker for end offsets
    (which it gets wrong)."""
    while not all(consumer.partitions_for_topic(t) for t in topics):
        await consumer._client.force_metadata_update()
    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)


async def _start(name: str, env: dict[str, str], logs: Path) -> Service:
    port = free_port()
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            name,
            "--port",
            str(port),
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    return Service(name, f"http://127.0.0.1:{port}", proc, log)


async def _wait_ready(http: httpx.AsyncClient, services: Iterable[Service]) -> None:
    """Every service answers /ready with its partitions assigned (120 s at most)."""
    pending = list(services)
    deadline = time.monotonic() + 120
    while pending:
        for s in list(pending):
            if s.proc.returncode is not None:
                tail = s.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await http.get(f"{s.url}/ready", timeout=2)
                if r.status_code == 200 and r.json().get("partitions", 0) > 0:
                    pending.remove(s)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready in 120 s: {', '.join(s.name for s in pending)}")
        await asyncio.sleep(0.3)


async def _stop(services: Iterable[Service], timeout_s: float = 20) -> None:
    """SIGTERM to the processes this bench started, SIGKILL to those still up after
    ``timeout_s``."""
    procs = [s.proc for s in services]
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _vm_hwm(pid: int) -> int:
    """The process's peak RSS (Linux ``VmHWM``), or 0 where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _error_lines(log: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(
            1
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or line.startswith("Traceback")
        )
    return 0


def pipeline_bench_with_embedded(rate: float, seconds: float, accounts: int) -> PipelineBench:
    try:
        return with_stack(lambda b, db: run_pipeline_bench(b, db, rate, seconds, accounts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit("interrupted; the services and the stack were stopped") from None
