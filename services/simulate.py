"""``loyalty offers simulate --program FILE --events FILE.jsonl``: what a program
would do to a history, before launch, with no side effects.

The history runs through the segmenter's fold and the offers service's logic —
the very code the services run — in memory, in event time: no broker, no
database, nothing published. The report says what fired, how often, for how
many accounts, what the holdout group took, what was suppressed and why, and
the total discount-equivalent cost."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.events import Event
from services.offers.domain.engine import reason_kind
from services.offers.domain.program import OffersProgram, load_offers_program
from services.offers.handlers import process as offers_process
from services.offers.memory import MemoryOfferRepository
from services.runtime.batch import Inbound
from services.segmenter.backfill import read_history
from services.segmenter.domain.program import SegmenterProgram, load_program
from services.segmenter.handlers import process as segmenter_process
from services.segmenter.handlers import transition_event
from services.segmenter.memory import MemoryAccountRepository


@dataclass
class RuleTally:
    issued: int = 0
    held_out: int = 0
    accounts: set[str] = field(default_factory=set)
    cost: Counter[str] = field(default_factory=Counter)  # currency -> minor units
    held_out_cost: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


@dataclass
class Simulation:
    events: int = 0
    late: int = 0
    transitions: int = 0
    decisions: int = 0
    expired: int = 0
    seconds: float = 0.0
    offer_inputs: int = 0  # events and transitions the offers logic took in
    offer_seconds: float = 0.0
    accounts: set[str] = field(default_factory=set)
    rules: dict[str, RuleTally] = field(default_factory=lambda: defaultdict(RuleTally))


def load_both(raw: Any) -> tuple[SegmenterProgram, OffersProgram]:
    """Both services' parts of a program; raises ProgramError (a ValueError)."""
    return load_program(raw), load_offers_program(raw)


async def simulate(
    segmenter: SegmenterProgram,
    offers: OffersProgram,
    events: Sequence[Event],
    batch: int = 500,
    inputs_seen: list[Event] | None = None,
    decisions: list[Event] | None = None,
) -> Simulation:
    """Runs the history; ``inputs_seen`` collects what the offers logic took in
    (events and transitions, in order), for ``loyalty bench offers``, and
    ``decisions`` what it decided, for ``loyalty insights report --history``."""
    sim = Simulation(events=len(events))
    started = time.perf_counter()
    seg_repo = MemoryAccountRepository()
    offer_repo = MemoryOfferRepository()
    ordered = sorted(events, key=lambda e: e.time)  # stable: ties keep file order
    for i in range(0, len(ordered), batch):
        chunk = ordered[i : i + batch]
        inbound = [
            Inbound(event=e, topic="history", partition=0, offset=i + n)  # type: ignore[arg-type]
            for n, e in enumerate(chunk)
        ]
        fold = await segmenter_process(seg_repo, segmenter, inbound, None)
        sim.late += len(fold.late)
        late_ids = {item.event.id for item, _ in fold.late}
        changes: list[Event] = [transition_event(t) for t in fold.transitions]
        sim.transitions += len(changes)
        # the raw events first, then what the segmenter made of them: the order the
        # offers service mostly sees them in, as transitions take one more hop
        inputs = [e for e in chunk if e.id not in late_ids] + changes
        began = time.perf_counter()
        result = await offers_process(offer_repo, offers, inputs)
        sim.offer_seconds += time.perf_counter() - began
        sim.offer_inputs += len(inputs)
        if inputs_seen is not None:
            inputs_seen.extend(inputs)
        if decisions is not None:
            decisions.extend(result.events)
        for e in result.events:
            _tally(sim, e)
        for s in result.suppressions:
            sim.rules[s.suppression.rule].suppressed[reason_kind(s.suppression.reason)] += 1
    sim.accounts = {a for _, a in seg_repo.accounts}
    sim.seconds = time.perf_counter() - started
    return sim


def _tally(sim: Simulation, e: Event) -> None:
    if e.type == "offer.expired":
        sim.expired += 1
        return
    if e.type not in ("offer.issued", "offer.held_out"):
        return
    sim.decisions += 1
    d = e.data
    tally = sim.rules[d.rule]
    tally.accounts.add(e.subject)
    cost = d.reward.cost
    if d.holdout:
        tally.held_out += 1
        tally.held_out_cost[cost.currency] += cost.amount
    else:
        tally.issued += 1
        tally.cost[cost.currency] += cost.amount
        if len(tally.examples) < 3:
            tally.examples.append(f"{e.subject} at {e.time:%Y-%m-%d %H:%M}: {d.reason}")


def _money(amounts: Counter[str]) -> str:
    if not amounts:
        return "0"
    return ", ".join(f"{v / 100:,.2f} {c}" for c, v in sorted(amounts.items()))


def render(sim: Simulation, offers: OffersProgram) -> str:
    lines = [
        f"{sim.events} events, {len(sim.accounts)} accounts, {sim.transitions} segment"
        f" transitions, {sim.late} too late; simulated in {sim.seconds:.1f}s"
        f" ({sim.events / sim.seconds if sim.seconds else 0:,.0f} events/s; the offers logic"
        f" alone: {sim.offer_inputs / sim.offer_seconds if sim.offer_seconds else 0:,.0f}"
        " inputs/s in memory)",
        "",
        f"{'rule':<26} {'issued':>7} {'held out':>8} {'accounts':>8}  cost (issued)",
    ]
    total: Counter[str] = Counter()
    held_total: Counter[str] = Counter()
    for rule in offers.rules:
        t = sim.rules.get(rule.name, RuleTally())
        total.update(t.cost)
        held_total.update(t.held_out_cost)
        lines.append(
            f"{rule.name:<26} {t.issued:>7} {t.held_out:>8} {len(t.accounts):>8}  {_money(t.cost)}"
        )
    issued = sum(t.issued for t in sim.rules.values())
    held = sum(t.held_out for t in sim.rules.values())
    lines += [
        "",
        f"decisions: {sim.decisions} ({issued} issued, {held} held out ="
        f" {held / sim.decisions if sim.decisions else 0:.1%};"
        f" setting {float(offers.holdout_percent):g}%), {sim.expired} expired unanswered",
        f"total discount-equivalent cost: {_money(total)}"
        f" (the holdout group would have cost {_money(held_total)})",
        "",
        "suppressed or lost, by rule and reason:",
    ]
    for rule in offers.rules:
        found = sim.rules.get(rule.name)
        for reason, n in sorted(
            (found.suppressed if found else Counter()).items(), key=lambda x: -x[1]
        ):
            lines.append(f"  {rule.name:<26} {n:>6}  {reason}")
    lines += ["", "examples:"]
    for rule in offers.rules:
        found = sim.rules.get(rule.name)
        lines += [f"  {ex}" for ex in (found.examples[:1] if found else [])]
    return "\n".join(lines)


async def simulate_file(raw: Any, path: Path, tenant: str) -> tuple[Simulation, OffersProgram]:
    segmenter, offers = load_both(raw)
    events = read_history(path, tenant)
    return await simulate(segmenter, offers, events), offers
