"""Prometheus metrics of the runtime, one registry per service instance.

No metric carries a tenant, an account or any other customer value as a label:
labels are the service, the topic, the partition, the event type and an HTTP route
*template* (``/v1/accounts/{account_id}``), method and status only, so ``/metrics``
tells an operator how the system runs, never whose data it holds or how much of
it. Keep it so (per-tenant figures belong in the tenant-scoped APIs), and serve
``/metrics`` on the operators' network only (deploy/README.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    """What SREs watch: throughput, errors, dead letters, latency, backlog, lag."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = {"service": service}
        self.consumed = Counter(
            "loyalty_messages_consumed_total",
            "Messages read from Kafka.",
            ["topic"],
            registry=self.registry,
        ).labels
        self.processed = Counter(
            "loyalty_events_processed_total",
            "Events applied (new, not duplicates).",
            ["topic"],
            registry=self.registry,
        ).labels
        self.duplicates = Counter(
            "loyalty_events_duplicate_total",
            "Events skipped as already done (same id).",
            ["topic"],
            registry=self.registry,
        ).labels
        self.dead_lettered = Counter(
            "loyalty_messages_dead_lettered_total",
            "Messages sent to a dead-letter topic.",
            ["topic"],
            registry=self.registry,
        ).labels
        self.batch_seconds = Histogram(
            "loyalty_batch_seconds",
            "Time to apply and commit one batch.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch_retries = Counter(
            "loyalty_batch_retries_total",
            "Batches retried after a transient error.",
            registry=self.registry,
        )
        self.batch_rewinds = Counter(
            "loyalty_batch_rewinds_total",
            "Batches that failed as a whole (not transient, not one poisoned record)"
            " and were read again from the stored offsets.",
            registry=self.registry,
        )
        self.tenant_refreshes = Counter(
            "loyalty_tenant_refreshes_total",
            "Reads of the tenants topic to its end, made because a batch named a tenant"
            " not known yet (a new tenant, or one that does not exist: its events are"
            " dead-lettered).",
            registry=self.registry,
        )
        self.ticks = Counter(
            "loyalty_clock_ticks_written_total",
            "Clock ticks this instance wrote while it led the ticker.",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "loyalty_outbox_backlog", "Outbox rows not yet published.", registry=self.registry
        )
        self.published = Counter(
            "loyalty_messages_published_total",
            "Messages the outbox relay published, by topic and event type.",
            ["topic", "type"],
            registry=self.registry,
        ).labels
        self.http_requests = Counter(
            "loyalty_http_requests_total",
            "HTTP requests answered, by route template (never the path itself, which may"
            " hold an account or offer id), method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        ).labels
        self.http_seconds = Histogram(
            "loyalty_http_request_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ).labels
        self.lag = Gauge(
            "loyalty_consumer_lag",
            "High watermark minus position, per partition.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "loyalty_ready",
            "1 while the instance is ready (migrated, consuming, relaying, and the"
            " service's own checks: what /ready answers 200 for), else 0.",
            registry=self.registry,
        )
        self.info = Gauge(
            "loyalty_service_info", "Service identity.", list(labels), registry=self.registry
        )
        self.info.labels(**labels).set(1)
