"""The topic contract: which topics exist, what travels on each, and the Kafka
headers a message carries.

Names here are *logical*; a deployment prefixes every one of them with
``LOYALTY_TOPIC_PREFIX`` (``staging.events.product``) so that several environments
can share one cluster. The runtime (``services/runtime/``) creates, names and reads
the topics from these constants, and the AsyncAPI document
(``python -m schemas.asyncapi``) describes them from the same ones, so that the
document cannot drift from what the system does.
"""

from __future__ import annotations

ACCOUNT_TOPICS = (
    "events.product",
    "events.billing",
    "events.support",
    "segments.changes",
    "offers.decisions",
    "credits.decisions",
    "insights.signals",
)
"""Contract topics, all keyed ``{tenant}:{account}`` and co-partitioned."""

INPUT_TOPICS = ("events.product", "events.billing", "events.support")
"""The topics producers write to; clock ticks and watermarks go to every partition
of each, so that stream time moves where there is no traffic."""

TENANTS = "tenants"
"""Tenant API keys (as hashes): one partition, folded by every service."""

INCARNATION = "loyalty.incarnation"
"""One partition whose first record names the current topic set (see
``services/runtime/topics.py``)."""

DLQ_SUFFIX = ".dlq"
"""``<topic>.dlq`` holds what a consumer of ``<topic>`` could not take."""

DEFAULT_PARTITIONS = 6
"""Partitions of every account topic and its dead letters (``LOYALTY_PARTITIONS``);
``tenants`` and the incarnation topic have one."""

TOPIC_FAMILIES: dict[str, tuple[str, ...]] = {
    "events.product": ("product", "clock"),
    "events.billing": ("billing", "clock"),
    "events.support": ("support", "clock"),
    "segments.changes": ("segment",),
    "offers.decisions": ("offer",),
    "credits.decisions": ("credit",),
    "insights.signals": ("bundle",),
    TENANTS: ("tenant",),
}
"""Topic -> the event type families (``product`` of ``product.login``) it carries."""

KEY_FORMAT = "{tenant}:{account}"
"""The Kafka key of every event: its ``tenant`` and ``subject``, so that one
account's events stay ordered in one partition."""

KAFKA_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "tenant")
"""The CloudEvents attributes every message carries as ``ce_<name>`` headers (binary
mode); ``datacontenttype`` travels as ``content-type``, ``dataschema`` and other
extensions as ``ce_<name>`` when set."""

DLQ_REASON = "dlq_reason"
DLQ_SERVICE = "dlq_service"
DLQ_SOURCE_TOPIC = "dlq_source_topic"
DLQ_SOURCE_PARTITION = "dlq_source_partition"
DLQ_SOURCE_OFFSET = "dlq_source_offset"
DLQ_HEADERS: dict[str, str] = {
    DLQ_REASON: "Why the record was refused (at most 4000 bytes).",
    DLQ_SERVICE: "The consuming service that refused it.",
    DLQ_SOURCE_TOPIC: "The physical topic it was read from (prefix included).",
    DLQ_SOURCE_PARTITION: "Its partition there, in decimal.",
    DLQ_SOURCE_OFFSET: "Its offset there, in decimal.",
}
"""Headers a dead letter carries after the source record's own, each one UTF-8."""

DLQ_REASON_MAX_BYTES = 4000


def consumer_group(service: str) -> str:
    """The logical consumer group of a service (prefixed like the topics)."""
    return f"loyalty.{service}"
