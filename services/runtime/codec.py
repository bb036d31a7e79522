"""The one CloudEvents codec: Kafka binary mode (attributes as ``ce_*`` headers).

A small codec of our own rather than ``cloudevents.kafka``: it validates straight
into the typed catalog models in one pass (the SDK builds an untyped event first),
and decoding is on every consumer's hot path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from schemas import EVENT_ADAPTER, AnyEvent, Event
from schemas.topics import KAFKA_ATTRIBUTES

Headers = list[tuple[str, bytes]]

_ATTRIBUTES = KAFKA_ATTRIBUTES
CONTENT_TYPE = "application/json"
# names of the event model that are not CloudEvents attributes: never from a header
_NOT_ATTRIBUTES = frozenset({"ce_extensions", "ce_data"})


class DecodeError(Exception):
    """A message that is not a valid catalogued CloudEvent; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    key: bytes
    value: bytes
    headers: Headers


def encode(event: Event) -> KafkaMessage:
    """Event -> binary-mode Kafka message keyed ``{tenant}:{account}``.

    ``datacontenttype`` travels as ``content-type``, ``dataschema`` (when set) and each
    extension attribute as ``ce_<name>``, as the Kafka binding puts them."""
    headers: Headers = [("content-type", event.datacontenttype.encode())]
    headers.extend((f"ce_{name}", _attr(getattr(event, name)).encode()) for name in _ATTRIBUTES)
    if event.dataschema is not None:
        headers.append(("ce_dataschema", event.dataschema.encode()))
    headers.extend((f"ce_{name}", text.encode()) for name, text in event.extensions.items())
    value = to_json(event.data)
    return KafkaMessage(key=event.key.encode(), value=value, headers=headers)


def encode_fields(
    *, type: str, id: str, source: str, subject: str, tenant: str, time: datetime, data: Any
) -> KafkaMessage:
    """The message :func:`encode` makes of the same event, from plain fields and a
    JSON-ready ``data``: for services publishing many derived events of their own
    (a test checks that both give the same message)."""
    headers: Headers = [
        ("content-type", _CONTENT_TYPE),
        ("ce_specversion", _SPECVERSION),
        ("ce_id", id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time.isoformat().encode()),
        ("ce_tenant", tenant.encode()),
    ]
    return KafkaMessage(key=f"{tenant}:{subject}".encode(), value=to_json(data), headers=headers)


_CONTENT_TYPE = CONTENT_TYPE.encode()
_SPECVERSION = b"1.0"


def _attr(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> AnyEvent:
    """Binary-mode Kafka message -> validated event, or :class:`DecodeError`.

    A ``ce_*`` header the spec does not define is an extension attribute (the event
    model checks its name); ``content-type``, when present, is ``datacontenttype``."""
    attrs: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_") or name == "content-type":
            attr = name[3:] if name.startswith("ce_") else "datacontenttype"
            if name in _NOT_ATTRIBUTES:
                raise DecodeError(f"header {name} is not a CloudEvents attribute")
            try:
                attrs[attr] = raw.decode()
            except UnicodeDecodeError:
                raise DecodeError(f"header {name} is not UTF-8") from None
    missing = [a for a in _ATTRIBUTES if a not in attrs]
    if missing:
        raise DecodeError(
            f"not a CloudEvent: missing header(s) {', '.join('ce_' + m for m in missing)}"
        )
    if value is None:
        raise DecodeError("empty value: data is required")
    try:
        attrs["data"] = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"data is not JSON: {exc}") from None
    try:
        return EVENT_ADAPTER.validate_python(attrs)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """One line per problem: ``field.path: message``."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
