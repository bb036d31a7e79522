"""How the processes log: ``text`` lines for a terminal (the default) or JSON lines
for a log pipeline (``LOYALTY_LOG_FORMAT=json``, deploy/README.md "JSON logs").

A JSON line is one object with ``time`` (RFC 3339, UTC), ``level``, ``logger`` and
``message``, plus whichever of ``tenant``, ``service``, ``event_id``, ``topic``,
``partition`` and ``offset`` the call passed as ``extra=`` (``record_context``
builds them from a consumed record), and ``exception`` with the traceback when
there is one. ``loyalty serve <service>`` stamps every line with its service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, get_args

from services.runtime.config import LogFormat

CONTEXT_FIELDS = ("tenant", "service", "event_id", "topic", "partition", "offset")
"""The ``LogRecord`` extras a JSON line carries when a call sets them."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _DefaultService(logging.Filter):
    """Names the process's service on records that do not name one themselves."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "service", None) is None:
            record.service = self.service
        return True


def configure_logging(level: str, log_format: str, service: str | None = None) -> None:
    """Sets up the root logger once per process: ``log_format`` is ``text`` or
    ``json`` (anything else stops the process with a message naming the variable);
    ``service``, when given, is stamped on every JSON line that names none."""
    if log_format not in get_args(LogFormat):
        raise SystemExit(f"LOYALTY_LOG_FORMAT must be text or json, not {log_format!r}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
        if service is not None:
            handler.addFilter(_DefaultService(service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def record_context(
    service: str, topic: str, partition: int, offset: int, headers: Iterable[Any] | None
) -> dict[str, Any]:
    """The ``extra=`` of a log call about one consumed record: where it came from
    and, when its CloudEvents headers say so, its tenant and event id."""
    context: dict[str, Any] = {
        "service": service,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    for key, value in headers or ():
        name = {"ce_id": "event_id", "ce_tenant": "tenant"}.get(key)
        if name is not None and isinstance(value, bytes | bytearray):
            context[name] = bytes(value).decode("utf-8", "replace")
    return context
