"""The SRE dashboard of the loyalty engine, as code (grafana-foundation-sdk).

``python deploy/grafana/dashboard.py`` writes ``deploy/grafana/loyalty.json``, the
file Grafana is provisioned with (deploy/grafana/provisioning/dashboards/);
``--check`` exits 1 when the committed file differs from what this module builds
(tests/unit/test_deploy.py runs the same comparison).

Every query uses the runtime's metrics (services/runtime/metrics.py) and the
``service`` label that Prometheus adds per scrape target (deploy/prometheus/
prometheus.yml): the engine's metrics carry no ``service`` label themselves, and
``topic`` is the logical topic name (without LOYALTY_TOPIC_PREFIX).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT = Path(__file__).with_name("loyalty.json")
UID = "loyalty-engine"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One panel: a title, what it shows (the description), its unit and queries."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    span: int = 12


def _rate(metric: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{selector}[{RATE}]))"


def _quantile(q: float) -> Query:
    buckets = _rate("loyalty_batch_seconds_bucket", "service, le")
    return Query(
        f"histogram_quantile({q}, {buckets})",
        f"p{round(q * 100)} {{{{service}}}}",
    )


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Health",
        (
            PanelSpec(
                "Services up",
                "1 when Prometheus could scrape the service's /metrics, 0 when not.",
                "none",
                (Query('up{job="loyalty"}', "{{service}}"),),
                kind="stat",
                span=6,
            ),
            PanelSpec(
                "Services ready",
                "1 while the instance is ready (what /ready answers 200 for: migrated,"
                " consuming, relaying), 0 when it answers but does no work.",
                "none",
                (Query("min by (service) (loyalty_ready)", "{{service}}"),),
                kind="stat",
                span=6,
            ),
            PanelSpec(
                "Dead letters in the range",
                "Messages sent to a <topic>.dlq in the dashboard's time range.",
                "short",
                (
                    Query(
                        "sum(increase(loyalty_messages_dead_lettered_total[$__range]))",
                        "dead letters",
                    ),
                ),
                kind="stat",
                span=6,
            ),
            PanelSpec(
                "Outbox backlog (all services)",
                "Outbox rows written but not yet published by the relays.",
                "short",
                (Query("sum(loyalty_outbox_backlog)", "backlog"),),
                kind="stat",
                span=6,
            ),
        ),
    ),
    (
        "Throughput",
        (
            PanelSpec(
                "Consumed per service and topic",
                "Messages read from Kafka per second (clock ticks and duplicates included).",
                "ops",
                (
                    Query(
                        _rate("loyalty_messages_consumed_total", "service, topic"),
                        "{{service}} ← {{topic}}",
                    ),
                ),
            ),
            PanelSpec(
                "Consumed per topic",
                "Messages read per second per topic, all consuming services together.",
                "ops",
                (Query(_rate("loyalty_messages_consumed_total", "topic"), "{{topic}}"),),
            ),
            PanelSpec(
                "Events applied and duplicates",
                "New events applied per second, and events skipped as already done"
                " (same id: redelivery or a producer retry).",
                "ops",
                (
                    Query(
                        _rate("loyalty_events_processed_total", "service, topic"),
                        "applied {{service}} ← {{topic}}",
                    ),
                    Query(
                        _rate("loyalty_events_duplicate_total", "service, topic"),
                        "duplicate {{service}} ← {{topic}}",
                    ),
                ),
            ),
            PanelSpec(
                "Clock ticks written",
                "Clock-tick records per second written by the elected ticker.",
                "ops",
                (Query(_rate("loyalty_clock_ticks_written_total", "service"), "{{service}}"),),
            ),
        ),
    ),
    (
        "Lag and latency",
        (
            PanelSpec(
                "Consumer lag per partition",
                "High watermark minus the consumer's position, per service, topic, partition.",
                "short",
                (
                    Query(
                        "max by (service, topic, partition) (loyalty_consumer_lag)",
                        "{{service}} {{topic}}[{{partition}}]",
                    ),
                ),
            ),
            PanelSpec(
                "Batch latency percentiles",
                "Time to apply and commit one batch (one Postgres transaction).",
                "s",
                (_quantile(0.5), _quantile(0.95), _quantile(0.99)),
            ),
        ),
    ),
    (
        "Errors",
        (
            PanelSpec(
                "Dead letters per service and topic",
                "Messages quarantined to <topic>.dlq per second (undecodable, invalid,"
                " unknown tenant, or given up after the retries).",
                "ops",
                (
                    Query(
                        _rate("loyalty_messages_dead_lettered_total", "service, topic"),
                        "{{service}} ← {{topic}}",
                    ),
                ),
            ),
            PanelSpec(
                "Retries and rewinds",
                "Batches retried after a transient error, and batches rewound to the stored"
                " offsets after a non-transient failure.",
                "ops",
                (
                    Query(_rate("loyalty_batch_retries_total", "service"), "retry {{service}}"),
                    Query(_rate("loyalty_batch_rewinds_total", "service"), "rewind {{service}}"),
                ),
            ),
            PanelSpec(
                "Tenant refreshes",
                "Reads of the tenants topic for a tenant not known yet; steady only while"
                " someone sends events for a tenant that was never created.",
                "ops",
                (Query(_rate("loyalty_tenant_refreshes_total", "service"), "{{service}}"),),
            ),
        ),
    ),
    (
        "Outbox",
        (
            PanelSpec(
                "Outbox backlog",
                "Outbox rows not yet published, per service.",
                "short",
                (Query("max by (service) (loyalty_outbox_backlog)", "{{service}}"),),
            ),
            PanelSpec(
                "Relay publish rate",
                "Messages the outbox relays published per second, per service and topic.",
                "ops",
                (
                    Query(
                        _rate("loyalty_messages_published_total", "service, topic"),
                        "{{service}} → {{topic}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "HTTP",
        (
            PanelSpec(
                "HTTP requests by route and status",
                "Requests answered per second, per service, route template and status"
                " (loyalty_http_requests_total; the route is a template, never an id).",
                "reqps",
                (
                    Query(
                        _rate("loyalty_http_requests_total", "service, route, status"),
                        "{{service}} {{route}} {{status}}",
                    ),
                ),
            ),
            PanelSpec(
                "HTTP latency p95 by route",
                "The 95th percentile of the time to answer, per service and route template.",
                "s",
                (
                    Query(
                        "histogram_quantile(0.95, "
                        + _rate("loyalty_http_request_seconds_bucket", "service, route, le")
                        + ")",
                        "p95 {{service}} {{route}}",
                    ),
                ),
            ),
            PanelSpec(
                "HTTP server errors",
                "5xx answers per second, per service and route (problems of type"
                " internal-error or unavailable).",
                "reqps",
                (
                    Query(
                        _rate("loyalty_http_requests_total", "service, route", '{status=~"5.."}'),
                        "{{service}} {{route}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Business",
        (
            PanelSpec(
                "Decisions per minute by type",
                "Records published on offers.decisions and credits.decisions per minute, by"
                " event type (offer.issued, offer.held_out, credit.granted, ...).",
                "short",
                (
                    Query(
                        _rate(
                            "loyalty_messages_published_total",
                            "type",
                            '{topic=~"offers.decisions|credits.decisions"}',
                        )
                        + " * 60",
                        "{{type}}",
                    ),
                ),
            ),
            PanelSpec(
                "Credit granted per minute",
                "credit.granted records the ledger published per minute: what billing"
                " receives. Flat at zero while offers are issued is an alert"
                " (LoyaltyNoCreditDecisions).",
                "short",
                (
                    Query(
                        _rate(
                            "loyalty_messages_published_total",
                            "topic",
                            '{topic="credits.decisions", type="credit.granted"}',
                        )
                        + " * 60",
                        "credit.granted",
                    ),
                ),
            ),
        ),
    ),
)


def _panel(spec: PanelSpec, panel_id: int) -> timeseries.Panel | stat.Panel:
    panel: timeseries.Panel | stat.Panel
    if spec.kind == "stat":
        panel = stat.Panel().height(5)
    else:
        panel = timeseries.Panel().height(8).min(0).fill_opacity(10)
    panel = panel.title(spec.title).description(spec.description).unit(spec.unit)
    panel = panel.id(panel_id).span(spec.span).datasource(DATASOURCE)
    for ref, q in zip("ABCDEFGH", spec.queries, strict=False):
        panel = panel.with_target(
            prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(ref)
        )
    return panel


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana imports."""
    board = (
        gd.Dashboard("Loyalty engine")
        .uid(UID)
        .description(
            "Throughput, lag, latency, errors, dead letters, outbox and business rates of"
            " the loyalty engine's services (generated by deploy/grafana/dashboard.py)."
        )
        .tags(["loyalty", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(gd.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    panel_id = 0
    for title, panels in ROWS:
        panel_id += 1
        board = board.with_row(gd.Row(title).id(panel_id))
        for spec in panels:
            panel_id += 1
            board = board.with_panel(_panel(spec, panel_id))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
