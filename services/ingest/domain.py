"""Validation of incoming CloudEvents (pure: no I/O, no clock — ``now`` is passed in).

What a request body must get past before anything of it is produced, in order:

1. :func:`parse_body`: JSON, nested at most :data:`MAX_DEPTH` levels. The body is
   parsed with pydantic-core's JSON parser (jiter, in Rust), never Python's
   recursive ``json`` module: jiter stops at 200 levels with an error, in
   microseconds, so a body nested 100,000 levels deep is a 400, not a
   ``RecursionError``. The stricter limit here is then checked on the (shallow)
   result; an event needs 4 levels. jiter also refuses what is not JSON
   (``NaN``, lone surrogates, raw control characters, invalid UTF-8).
2. :func:`validate` / :func:`validate_binary`, per event, all or nothing: the
   CloudEvents attributes and the catalogued ``data``, plus what the schemas
   cannot say but a partition downstream cares about — no control characters in
   identifiers (a NUL cannot be stored and stalls its partition), integers within
   JSON's exact range, event times within ``[2000-01-01, now + max clock skew]``,
   and no negative money.

Extension attributes (any name following the CloudEvents naming rule: lowercase
a-z and 0-9, at most 20 characters) are accepted with String, Integer or Boolean
values and carried as strings. ``tenant`` is the system's own extension: a body
that sets it is refused (the tenant comes from the API key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from schemas import EVENT_ADAPTER, Event, Money, topic_family
from schemas.events import CATALOG, EXTENSION_NAME, MAX_EXTENSION_VALUE

MAX_BATCH = 1_000
MAX_DEPTH = 16
"""How deep a body may nest (a batch of events with money in their data needs 4)."""
MAX_EXTENSIONS = 20
"""Extension attributes per event (each becomes a Kafka header)."""
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""Events older than this are refused: no SaaS history goes back further; such a
time is a sender's bug (an epoch default, a unit slip)."""
MAX_JSON_INT = 2**53 - 1
"""Integers in data stay within the range JSON carries exactly (RFC 8259 / I-JSON)."""
MAX_CE_INT = 2**31 - 1
"""The CloudEvents Integer type is 32-bit signed."""

ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")
"""The attributes whose text must be printable (they become headers and keys)."""
FREE_TEXT: Mapping[str, frozenset[str]] = {"billing.cancellation_requested": frozenset({"reason"})}
"""Data fields that are prose: tabs and line breaks allowed, other controls not."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_EXTENSION_NAME = re.compile(EXTENSION_NAME)
_JSON_MEDIA_TYPE = re.compile(
    r"^(application|text)/([a-z0-9!#$&^_.\-]+\+)?json( *;[ -~]*)?$", re.IGNORECASE
)
_ECHO = 60


@dataclass(frozen=True, slots=True)
class EventError:
    """Why event number ``index`` of a request was rejected."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Arrival:
    """When a request arrived by the server's clock, and how far ahead of it an
    event's time may be (``max_clock_skew``)."""

    now: datetime
    max_clock_skew: timedelta = timedelta(minutes=5)


class BatchTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a batch holds at most {MAX_BATCH} events; got {size}")


class NotAnEventList(Exception):
    """The body is neither a CloudEvent object nor an array of them."""


class MalformedBody(Exception):
    """The body is not JSON, or nests deeper than :data:`MAX_DEPTH`."""


def is_json_media_type(media_type: str) -> bool:
    """``application/json``, ``text/json``, ``application/*+json``, with parameters."""
    return bool(_JSON_MEDIA_TYPE.match(media_type.strip()))


def parse_body(body: bytes) -> Any:
    """The JSON value of ``body``, or :class:`MalformedBody` saying what is wrong."""
    try:
        value = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise MalformedBody(_too_deep()) from None
        raise MalformedBody(f"body is not JSON: {exc}") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise MalformedBody(_too_deep())
    return value


def _too_deep() -> str:
    return f"body nests deeper than {MAX_DEPTH} levels of arrays and objects"


def _depth_exceeds(value: Any, limit: int) -> bool:
    # level by level, without recursion
    level: list[Any] = [value]
    for _ in range(limit + 1):
        containers = [node for node in level if isinstance(node, dict | list)]
        if not containers:
            return False
        level = [
            child
            for node in containers
            for child in (node.values() if isinstance(node, dict) else node)
        ]
    return True


def topic_for(event: Event) -> str:
    family = topic_family(event.type)
    assert family is not None  # validate() only accepts producer families
    return f"events.{family}"


def validate(
    raw: Any, tenant: str, batch: bool, arrival: Arrival
) -> tuple[list[Event], list[EventError]]:
    """Parses a structured (or batch) request body into events for ``tenant``; all
    or nothing.

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
        event, problems = _one(index, item, tenant, arrival)
        errors.extend(problems)
        if event is not None:
            events.append(event)
    return (events, []) if not errors else ([], errors)


def validate_binary(
    headers: Iterable[tuple[str, str]], content_type: str, data: Any, tenant: str, arrival: Arrival
) -> tuple[list[Event], list[EventError]]:
    """The HTTP binary content mode: attributes in ``ce-*`` headers (percent-encoded,
    as the HTTP binding says), ``Content-Type`` the ``datacontenttype``, the body
    ``data``. Errors name the header (``ce-id``) or the data field."""
    attrs: dict[str, Any] = {}
    errors: list[EventError] = []
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith("ce-"):
            continue
        try:
            attrs[lowered[3:]] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            errors.append(EventError(0, lowered, "not percent-encoded UTF-8"))
    attrs["datacontenttype"] = content_type
    attrs["data"] = data
    event, problems = _one(0, attrs, tenant, arrival)
    errors.extend(_as_header(p) for p in problems)
    return ([event], []) if event is not None and not errors else ([], errors)


def _as_header(error: EventError) -> EventError:
    head = error.field.split(".", 1)[0]
    if head == "data" or head.startswith("("):
        return error
    where = "content-type" if head == "datacontenttype" else f"ce-{error.field}"
    return EventError(error.index, where, error.reason)


def _one(
    index: int, item: Any, tenant: str, arrival: Arrival
) -> tuple[Event | None, list[EventError]]:
    if not isinstance(item, dict):
        return None, [EventError(index, "(event)", "an event is a JSON object")]
    if "tenant" in item:
        return None, [
            EventError(index, "tenant", "the tenant comes from the API key; do not send it")
        ]
    etype = item.get("type")
    if isinstance(etype, str) and (why := _control(etype, _CONTROL)):
        return None, [EventError(index, "type", why)]
    if isinstance(etype, str) and etype in CATALOG and topic_family(etype) is None:
        return None, [
            EventError(
                index, "type", f"{_echo(etype)} is published by the engine, not accepted here"
            )
        ]
    if isinstance(etype, str) and etype not in CATALOG:
        accepted = ", ".join(t for t in sorted(CATALOG) if topic_family(t))
        return None, [
            EventError(index, "type", f"unknown event type {_echo(etype)}; accepted: {accepted}")
        ]
    errors = [EventError(index, f, r) for f, r in _envelope_problems(item, etype)]
    attrs = {**item, "tenant": tenant}
    if isinstance(media := item.get("datacontenttype"), str):
        attrs["datacontenttype"] = _lowercase_media_type(media)
    try:
        event: Event = EVENT_ADAPTER.validate_python(attrs)
    except ValidationError as exc:
        # the checks above say it more precisely where both found a field wrong
        seen = {e.field for e in errors}
        for err in exc.errors(include_url=False):
            field = _field(err["loc"], etype)
            if field not in seen:
                errors.append(EventError(index, field, _reason(err)))
        return None, errors
    errors.extend(EventError(index, f, r) for f, r in _event_problems(event, arrival))
    return (event, []) if not errors else (None, errors)


def _envelope_problems(item: dict[str, Any], etype: Any) -> Iterator[tuple[str, str]]:
    """What the raw attributes and data hold that no schema refuses."""
    for name in ATTRIBUTES:
        value = item.get(name)
        if isinstance(value, str) and (why := _control(value, _CONTROL)):
            yield name, why
    if "extensions" in item:
        yield "extensions", "not a CloudEvents attribute: extension attributes go at the top level"
    if "data_base64" in item:
        yield "data_base64", "binary data is not accepted: data must be JSON"
    unknown = [k for k in item if k not in Event.model_fields and k != "data_base64"]
    if len(unknown) > MAX_EXTENSIONS:
        yield "(event)", f"at most {MAX_EXTENSIONS} extension attributes; got {len(unknown)}"
    for name in unknown:
        if not _EXTENSION_NAME.fullmatch(name):
            yield (
                _echo_name(name),
                "not a CloudEvents attribute, and not an extension's name"
                " (lowercase a-z and 0-9, at most 20 characters)",
            )
            continue
        value = item[name]
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) > MAX_CE_INT:
                yield name, "an Integer extension is 32-bit: outside ±2147483647"
        elif isinstance(value, str):
            if why := _control(value, _CONTROL):
                yield name, why
            elif len(value) > MAX_EXTENSION_VALUE:
                yield name, f"at most {MAX_EXTENSION_VALUE} characters; got {len(value)}"
        else:
            yield name, "an extension attribute's value is a string, an integer or a boolean"
    if "data" in item:
        prose = FREE_TEXT.get(etype, frozenset()) if isinstance(etype, str) else frozenset()
        yield from _data_problems(item["data"], "data", prose, top=True)


def _data_problems(
    value: Any, path: str, prose: frozenset[str], top: bool = False
) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        leaf = path.rsplit(".", 1)[-1]
        pattern = _CONTROL_IN_TEXT if leaf in prose else _CONTROL
        if why := _control(value, pattern):
            yield path, why
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            yield path, "integer outside ±(2^53-1), the range JSON carries exactly"
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _data_problems(child, f"{path}.{key}", prose if top else frozenset())
    elif isinstance(value, list):
        for n, child in enumerate(value):
            yield from _data_problems(child, f"{path}.{n}", frozenset())


def _event_problems(event: Event, arrival: Arrival) -> Iterator[tuple[str, str]]:
    """What a valid event may still not be: from the future, too old, negative money."""
    latest = arrival.now + arrival.max_clock_skew
    if event.time > latest:
        ahead = event.time - arrival.now
        yield (
            "time",
            f"{event.time.isoformat()} is {ahead} ahead of the server's clock at arrival"
            f" ({arrival.now.isoformat()}); at most {arrival.max_clock_skew} ahead is accepted",
        )
    elif event.time < EARLIEST:
        yield "time", f"{event.time.isoformat()} is before {EARLIEST.date().isoformat()}"
    yield from _negative_money(event.data, "data")


def _negative_money(model: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(model, Money):
        if model.amount < 0:
            yield f"{path}.amount", f"must not be negative; got {model.amount}"
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from _negative_money(getattr(model, name), f"{path}.{name}")


def _lowercase_media_type(media: str) -> str:
    # type and subtype are case-insensitive (RFC 2045); parameters stay as sent
    kind, sep, params = media.strip().partition(";")
    return kind.strip().lower() + sep + params


def _control(text: str, pattern: re.Pattern[str]) -> str | None:
    found = pattern.search(text)
    if found is None:
        return None
    char = found.group()
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{what} (U+{ord(char):04X}) at position {found.start()} is not allowed"


def _field(loc: tuple[int | str, ...], etype: Any) -> str:
    parts = list(loc)
    if parts and parts[0] == etype:  # the discriminated union's tag
        parts = parts[1:]
    if parts[:1] == ["extensions"] and len(parts) >= 2:  # on the wire, a top-level attribute
        parts = parts[1:2]
    return ".".join(str(p) for p in parts) or "(event)"


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "not a CloudEvents attribute of this event"
    if err["type"] == "string_pattern_mismatch" and err["loc"][-1] == "datacontenttype":
        return "data must be JSON: application/json, text/json or application/*+json"
    if err["type"] == "string_pattern_mismatch" and err["loc"][-1] == "dataschema":
        return "must be an absolute URI (scheme:...) of printable ASCII, without spaces"
    msg: str = err["msg"]
    return msg


def _echo(text: str) -> str:
    return repr(text if len(text) <= _ECHO else text[:_ECHO] + "...")


def _echo_name(name: str) -> str:
    shown = name if len(name) <= _ECHO else name[:_ECHO] + "..."
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", shown)
