"""What the runtime requires of a decoded event before any handler may see it.

Pure functions (no I/O, no clock): the worker passes the times in, so that the
rules are tested on their own and a replay of the same records decides the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel

from schemas import Event, Money, topic_family


def record_arrival(timestamp_ms: int | None) -> datetime | None:
    """When a record entered the system: its Kafka timestamp (milliseconds since the
    epoch) as an aware UTC time, or None when the record carries none (old message
    formats give None or -1) or one that is not a representable time."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        # a producer may stamp any int64; such a record simply has no usable arrival
        # (and an OSError here must not pass for a transient infrastructure error)
        return None


def clock_skew_violation(
    event_time: datetime, arrival: datetime, max_skew: timedelta
) -> str | None:
    """None when ``event_time`` is at most ``max_skew`` ahead of ``arrival``;
    otherwise the reason to dead-letter the event.

    An event from the future would move its tenant's stream clock there, and every
    expiry before that time would fire at once. Events from the past are always
    admitted here: lateness is each handler's business (e.g. the segmenter's
    allowed lateness). Both times must be timezone-aware.
    """
    ahead = event_time - arrival  # a difference: never overflows, unlike time ± skew
    if ahead <= max_skew:
        return None
    ahead -= timedelta(microseconds=ahead.microseconds)  # whole seconds read better
    return (
        f"event time {event_time.isoformat()} is {ahead} ahead of its arrival"
        f" {arrival.isoformat()} (max clock skew {max_skew})"
    )


def unknown_tenant(tenant: str) -> str:
    """The reason to dead-letter an event of a tenant that does not exist (that no
    ``tenant.key_added`` ever created): nothing of it may reach any state."""
    return f"unknown tenant {tenant!r}"


def negative_money_violation(event: Event) -> str | None:
    """None unless a producer's event (the ``product``, ``billing`` and ``support``
    families, which anyone with access to the input topics can write) carries a
    negative amount of money anywhere in its data; then the reason to dead-letter
    it. Ingest refuses the same over HTTP; on Kafka nothing else stands between a
    negative MRR and a negative credit. The system's own events are not judged here:
    their services computed them."""
    if topic_family(event.type) is None:
        return None
    found = list(_negative_money(event.data, "data"))
    if not found:
        return None
    return "; ".join(f"{path}: must not be negative; got {amount}" for path, amount in found)


def _negative_money(model: Any, path: str) -> Iterator[tuple[str, int]]:
    if isinstance(model, Money):
        if model.amount < 0:
            yield f"{path}.amount", model.amount
    elif isinstance(model, BaseModel):
        for name in _fields_that_may_hold_money(type(model)):
            yield from _negative_money(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for n, child in enumerate(model):
            yield from _negative_money(child, f"{path}.{n}")


@cache
def _fields_that_may_hold_money(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` whose type involves a model (Money or one that may hold
    it): most events have none, and cost nothing to check."""
    return tuple(n for n, f in model.model_fields.items() if _involves_a_model(f.annotation))


def _involves_a_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_involves_a_model(a) for a in get_args(annotation))
