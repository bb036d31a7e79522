"""Validation of incoming CloudEvents (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas import EVENT_ADAPTER, Event, topic_family
from schemas.events import CATALOG

MAX_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class EventError:
    """Why event number ``index`` of a request was rejected."""

    index: int
    field: str
    reason: str


class BatchTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a batch holds at most {MAX_BATCH} events; got {size}")


class NotAnEventList(Exception):
    """The body is neither a CloudEvent object nor an array of them."""


def topic_for(event: Event) -> str:
    family = topic_family(event.type)
    assert family is not None  # validate() only accepts producer families
    return f"events.{family}"


def validate(raw: Any, tenant: str, batch: bool) -> tuple[list[Event], list[EventError]]:
    """Parses a request body into events for ``tenant``; all or nothing.

    Returns the events, or the errors (by index, field and reason) when any event
    is invalid — in which case nothing of the request may be published.
    """
    if batch:
        if not isinstance(raw, list):
            raise NotAnEventList("a batch (application/cloudevents-batch+json) is a JSON array")
        items = raw
    else:
        if not isinstance(raw, dict):
            raise NotAnEventList("a single event (application/cloudevents+json) is a JSON object")
        items = [raw]
    if len(items) > MAX_BATCH:
        raise BatchTooLarge(len(items))
    events: list[Event] = []
    errors: list[EventError] = []
    for index, item in enumerate(items):
        event, problems = _one(index, item, tenant)
        errors.extend(problems)
        if event is not None:
            events.append(event)
    return (events, []) if not errors else ([], errors)


def _one(index: int, item: Any, tenant: str) -> tuple[Event | None, list[EventError]]:
    if not isinstance(item, dict):
        return None, [EventError(index, "(event)", "an event is a JSON object")]
    if "tenant" in item:
        return None, [
            EventError(index, "tenant", "the tenant comes from the API key; do not send it")
        ]
    etype = item.get("type")
    if isinstance(etype, str) and etype in CATALOG and topic_family(etype) is None:
        return None, [
            EventError(index, "type", f"{etype!r} is published by the engine, not accepted here")
        ]
    if isinstance(etype, str) and etype not in CATALOG:
        accepted = ", ".join(t for t in sorted(CATALOG) if topic_family(t))
        return None, [
            EventError(index, "type", f"unknown event type {etype!r}; accepted: {accepted}")
        ]
    try:
        event = EVENT_ADAPTER.validate_python({**item, "tenant": tenant})
    except ValidationError as exc:
        return None, [
            EventError(index, _field(err["loc"], etype), err["msg"])
            for err in exc.errors(include_url=False)
        ]
    return event, []


def _field(loc: tuple[int | str, ...], etype: Any) -> str:
    parts = list(loc)
    if parts and parts[0] == etype:  # the discriminated union's tag
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "(event)"
