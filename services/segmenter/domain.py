"""Account features and segment membership (pure: no I/O, no clock).

First version: seats purchased/used, MRR and plan per account, and one segment,
``expansion_ready``: seat use at or above 90 % of the seats purchased.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from schemas import Event, Money
from schemas.events import AccountFeatures, SeatsChanged, SubscriptionUpdated

EXPANSION_READY = "expansion_ready"
EXPANSION_THRESHOLD_PERCENT = 90


@dataclass(frozen=True, slots=True)
class AccountState:
    seats_purchased: int = 0
    seats_used: int = 0
    mrr: Money | None = None
    plan: str | None = None
    interval: Literal["month", "year"] | None = None
    renewal_date: date | None = None
    segments: frozenset[str] = frozenset()

    def features(self) -> AccountFeatures:
        return AccountFeatures(
            seats_purchased=self.seats_purchased,
            seats_used=self.seats_used,
            mrr=self.mrr,
            plan=self.plan,
            interval=self.interval,
            renewal_date=self.renewal_date,
        )


@dataclass(frozen=True, slots=True)
class SegmentTransition:
    """An account entered or exited a segment because of ``cause``."""

    kind: Literal["entered", "exited"]
    segment: str
    features: AccountFeatures
    cause: Event


def evolve(state: AccountState, event: Event) -> AccountState:
    """The account's features after ``event``."""
    if isinstance(event, SubscriptionUpdated):
        d = event.data
        return replace(
            state,
            seats_purchased=d.seats_purchased,
            mrr=d.mrr,
            plan=d.plan,
            interval=d.interval,
            renewal_date=d.renewal_date,
        )
    if isinstance(event, SeatsChanged):
        return replace(state, seats_used=event.data.seats_used)
    return state


def segments_of(state: AccountState) -> frozenset[str]:
    members = set()
    if (
        state.seats_purchased > 0
        and state.seats_used * 100 >= EXPANSION_THRESHOLD_PERCENT * state.seats_purchased
    ):
        members.add(EXPANSION_READY)
    return frozenset(members)


def apply(state: AccountState, event: Event) -> tuple[AccountState, list[SegmentTransition]]:
    """Folds one event; returns the new state and the segment transitions it caused."""
    evolved = evolve(state, event)
    now = segments_of(evolved)
    features = evolved.features()
    transitions = [
        SegmentTransition("exited", s, features, event) for s in sorted(state.segments - now)
    ]
    transitions += [
        SegmentTransition("entered", s, features, event) for s in sorted(now - state.segments)
    ]
    return replace(evolved, segments=now), transitions
