"""Applies batches of product, billing and support events to account state in
stream time, and publishes segment transitions to ``segments.changes``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from hashlib import sha1
from typing import Any, Protocol

from schemas import Money
from schemas.events import (
    AccountFeatures,
    RfmScores,
    SegmentChangedData,
    SegmentEntered,
    SegmentExited,
)
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.codec import KafkaMessage, encode_fields
from services.runtime.ticks import complete_rounds, split_ticks
from services.segmenter.adapters.db import PostgresAccountRepository, StateCache
from services.segmenter.adapters.held import hold_in_order
from services.segmenter.domain import fold
from services.segmenter.domain.due import TenantIndex
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import AccountKey, TenantClock, Transition
from services.segmenter.domain.program import SegmenterProgram

SOURCE = "loyalty/segmenter"
_IDS = uuid.UUID("6f1c2b1e-3f7a-4a55-9d9e-2f1f5e0c7a01")
_IDS_BYTES = _IDS.bytes


class AccountRepository(Protocol):
    """What the fold needs from storage (Postgres, memory, or a fake in unit tests)."""

    async def load_clocks(self, tenants: Iterable[str]) -> dict[str, TenantClock]: ...

    async def load_accounts(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountState]: ...

    async def load_index(
        self,
        program: SegmenterProgram,
        clock: TenantClock,
        states: dict[AccountKey, AccountState],
    ) -> TenantIndex:
        """The tenant's index over all its accounts. Accounts already in ``states``
        (this batch's) must be the ones indexed; the others are added to it."""
        ...

    def index_if_held(self, tenant: str) -> TenantIndex | None:
        """The tenant's index if this storage keeps it in memory between batches
        (then the fold keeps it current event by event); else None."""
        ...

    async def save(
        self, clocks: Iterable[TenantClock], states: dict[AccountKey, AccountState]
    ) -> None: ...


@dataclass
class FoldResult:
    transitions: list[Transition] = field(default_factory=list)
    late: list[tuple[Inbound, str]] = field(default_factory=list)


async def process(
    repo: AccountRepository,
    program: SegmenterProgram,
    batch: Sequence[Inbound],
    now: datetime | None,
    rounds: Mapping[str, datetime] | None = None,
) -> FoldResult:
    """Folds a batch in order: one read of clocks and accounts, one write back.

    Event-time mode (``now`` is None: replays, backfills): the tenant's watermark is
    the largest event time seen; events older than it minus the allowed lateness are
    refused; crossing midnight rolls the tenant over. Live mode (``now`` given):
    an event is refused when it *arrived* (its Kafka timestamp) more than the
    allowed lateness after it happened — a backlog of our own never makes events
    late — and days are rolled over by clock ticks: ``rounds`` gives, per tenant,
    the time of a round of ticks now read on every input partition
    (``services/runtime/ticks.py``), applied after the batch's events.

    A rollover or a redraw needs the tenant's index (all its accounts): it is
    loaded once per batch, when first needed, and only the accounts it touches
    are written back."""
    result = FoldResult()
    rounds = rounds or {}
    tenants = {i.event.tenant for i in batch} | set(rounds)
    clocks = await repo.load_clocks(tenants)
    states = await repo.load_accounts((i.event.tenant, i.event.subject) for i in batch)
    indexes: dict[str, TenantIndex] = {}
    for tenant in tenants:
        held = repo.index_if_held(tenant)
        if held is not None:
            indexes[tenant] = held
    dirty: set[AccountKey] = set(states)

    async def index_of(clock: TenantClock) -> TenantIndex:
        index = indexes.get(clock.tenant)
        if index is None:
            index = indexes[clock.tenant] = await repo.load_index(program, clock, states)
        return index

    def touched(tenant: str, accounts: Iterable[str]) -> None:
        dirty.update((tenant, a) for a in accounts)

    for item in batch:
        event = item.event
        clock = clocks[event.tenant]
        if now is None:  # event time: stream time moves with the events themselves
            reason = fold.too_late(clock, program, event.time)
            if reason is None:
                due = fold.advance(clock, program, event.time)
                if due is not None:
                    rolled, changed = fold.rollover(program, clock, await index_of(clock), due)
                    result.transitions.extend(rolled)
                    touched(clock.tenant, changed)
        else:  # live: lateness is judged on arrival; the wall clock moves the day
            reason = fold.arrived_too_late(program, event.time, item.arrival)
            if reason is None:
                fold.observe(clock, program, event.time, now)
        if reason is not None:
            result.late.append((item, reason))
            continue
        key = (event.tenant, event.subject)
        is_new = key not in states  # every existing account of the batch was loaded
        dirty.add(key)
        state = states.setdefault(key, AccountState())
        transitions, values = fold.apply_event_values(program, clock, state, event)
        result.transitions.extend(transitions)
        if is_new:
            clock.accounts += 1
        index = indexes.get(event.tenant)
        if index is not None:
            assert clock.stream_day is not None
            index.sync(event.subject, state, clock.stream_day, values)
        if clock.needs_rescore(event.time, program.rfm_redraw_every):
            redrawn, changed = fold.rescore(
                program, clock, await index_of(clock), event.time, event.id
            )
            result.transitions.extend(redrawn)
            touched(clock.tenant, changed)
    for tenant, at in sorted(rounds.items()):
        clock = clocks[tenant]
        if clock.watermark is None:
            continue  # no account yet: nothing for time to change
        due = fold.advance(clock, program, at)
        if due is not None:
            rolled, changed = fold.rollover(program, clock, await index_of(clock), due)
            result.transitions.extend(rolled)
            touched(tenant, changed)
    for tenant, index in indexes.items():
        for key in dirty:
            if key[0] == tenant and key not in states:
                states[key] = index.states[key[1]]
    await repo.save(clocks.values(), {k: states[k] for k in dirty})
    return result


def _why(t: Transition) -> str:
    return t.cause_id if t.cause_id is not None else f"{t.account}/day/{t.as_of}"


def _transition_id(t: Transition, why: str) -> str:
    """``uuid5(_IDS, tenant/why/kind/segment)``, formatted without the UUID object
    (a backfill names hundreds of thousands; a unit test checks it is uuid5)."""
    digest = bytearray(
        sha1(_IDS_BYTES + f"{t.tenant}/{why}/{t.kind}/{t.segment}".encode()).digest()
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def transition_event(t: Transition) -> SegmentEntered | SegmentExited:
    """The transition as a validated event; its id derives from its cause (an
    event, or the day of a rollover), so a replay produces the same ids."""
    why = _why(t)
    data = SegmentChangedData(
        segment=t.segment,
        features=public_features(t.features),
        user_id=t.user_id,
        rfm=RfmScores(
            r=t.features["r_score"],
            f=t.features["f_score"],
            m=t.features["m_score"],
            cell=t.features["rfm_cell"],
        ),
        as_of=date.fromordinal(t.as_of),
        segments=list(t.segments),
        cause=why,
    )
    common: dict[str, Any] = {
        "id": _transition_id(t, why),
        "source": SOURCE,
        "subject": t.account,
        "tenant": t.tenant,
        "time": t.time,
        "data": data,
    }
    if t.kind == "entered":
        return SegmentEntered(type="segment.entered", **common)
    return SegmentExited(type="segment.exited", **common)


def transition_message(t: Transition) -> KafkaMessage:
    """What :func:`transition_event` encodes to, built straight from the transition
    without the models (every transition of a backfill goes through here; a test
    checks that both decode to the same event)."""
    why = _why(t)
    f = t.features
    currency = f["currency"]

    def money(amount: int | None) -> dict[str, Any] | None:
        return None if amount is None or not currency else {"amount": amount, "currency": currency}

    renewal = f["renewal_date"]
    features = {
        "seats_purchased": f["seats_purchased"],
        "seats_used": f["seats_used"],
        "mrr": money(f["mrr"]),
        "arr": money(f["arr"]),
        "plan": f["plan"],
        "interval": f["interval"],
        "subscription_status": f["subscription_status"],
        "renewal_date": None if renewal is None else renewal.isoformat(),
        "days_to_renewal": f["days_to_renewal"],
        "paid_months": f["paid_months"],
        "tenure_days": f["tenure_days"],
        "membership": f["membership"],
        "onboarding_completed": f["onboarding_completed"],
        "key_actions_30d": f["key_actions_30d"],
        "active_days_30d": f["active_days_30d"],
        "active_day_streak": f["active_day_streak"],
        "weekly_streak": f["weekly_streak"],
        "features_adopted": sorted(f["adopted"]),
        "last_nps": f["last_nps"],
        "open_tickets": f["open_tickets"],
        "cancellation_requested": f["cancellation_requested"],
    }
    data = {
        "segment": t.segment,
        "features": features,
        "rfm": {"r": f["r_score"], "f": f["f_score"], "m": f["m_score"], "cell": f["rfm_cell"]},
        "as_of": date.fromordinal(t.as_of).isoformat(),
        "user_id": t.user_id,
        "segments": list(t.segments),
        "cause": why,
    }
    return encode_fields(
        type=f"segment.{t.kind}",
        id=_transition_id(t, why),
        source=SOURCE,
        subject=t.account,
        tenant=t.tenant,
        time=t.time,
        data=data,
    )


def public_features(view: Mapping[str, Any]) -> AccountFeatures:
    currency = view.get("currency")

    def money(amount: int | None) -> Money | None:
        return Money(amount=amount, currency=currency) if amount is not None and currency else None

    return AccountFeatures(
        seats_purchased=view["seats_purchased"],
        seats_used=view["seats_used"],
        mrr=money(view["mrr"]),
        arr=money(view["arr"]),
        plan=view["plan"],
        interval=view["interval"],
        subscription_status=view["subscription_status"],
        renewal_date=view["renewal_date"],
        days_to_renewal=view["days_to_renewal"],
        paid_months=view["paid_months"],
        tenure_days=view["tenure_days"],
        membership=view["membership"],
        onboarding_completed=view["onboarding_completed"],
        key_actions_30d=view["key_actions_30d"],
        active_days_30d=view["active_days_30d"],
        active_day_streak=view["active_day_streak"],
        weekly_streak=view["weekly_streak"],
        features_adopted=sorted(view["adopted"]),
        last_nps=view["last_nps"],
        open_tickets=view["open_tickets"],
        cancellation_requested=view["cancellation_requested"],
    )


@dataclass
class SegmenterHandler:
    """The runtime handler: folds the batch and turns results into outbox rows.
    Clock ticks count towards their rounds (live mode); in event-time mode a
    history's watermarks order it across partitions (``adapters/held.py``)."""

    program: SegmenterProgram
    wall_clock: Callable[[], datetime] | None  # None: event time only (replays, tests)
    cache: StateCache = field(default_factory=StateCache)

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        events, ticks = split_ticks(batch)
        now = self.wall_clock() if self.wall_clock else None
        if now is None:
            # event time: the events move time; watermarks order a history across
            # partitions, ticks mean nothing
            events = await hold_in_order(uow.conn, uow.names, events, ticks)
            rounds = {}
        else:
            rounds = await complete_rounds(uow.conn, ticks)
        repo = PostgresAccountRepository(uow.conn, self.cache)
        try:
            result = await process(repo, self.program, events, now, rounds)
        except BaseException:
            self.cache.clear()  # the fold may have changed kept states: trust none
            raise
        for t in result.transitions:
            uow.publish_message("segments.changes", transition_message(t))
        for item, reason in result.late:
            uow.reject(item, reason)
