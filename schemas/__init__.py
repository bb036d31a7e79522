"""Contracts shared by every service: the CloudEvents envelope and the event catalog.

Only contracts live here — no I/O and no service logic. JSON Schema documents are
generated from these models into ``schemas/json/`` (``python -m schemas.generate``),
and a test fails when the committed files drift from the models.
"""

from schemas.events import (
    CATALOG,
    EVENT_ADAPTER,
    AnyEvent,
    Event,
    Money,
    topic_family,
)

__all__ = ["CATALOG", "EVENT_ADAPTER", "AnyEvent", "Event", "Money", "topic_family"]
