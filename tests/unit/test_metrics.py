"""``/metrics`` carries no tenant's data: the runtime's metrics are labelled by
service, topic and partition only (deploy/README.md, "Metrics")."""

from __future__ import annotations

from services.runtime.metrics import RuntimeMetrics


def test_no_metric_is_labelled_by_a_tenant_or_an_account() -> None:
    metrics = RuntimeMetrics("offers")
    # touch every labelled family once, so that its samples (and labels) exist
    for family in (metrics.consumed, metrics.processed, metrics.duplicates):
        family("events.billing").inc()
    metrics.dead_lettered("events.billing").inc()
    metrics.published("offers.decisions").inc()
    metrics.lag.labels("events.billing", "3").set(1)
    labels = {
        name
        for family in metrics.registry.collect()
        for sample in family.samples
        for name in sample.labels
    }
    assert labels == {"service", "topic", "partition", "le"}
