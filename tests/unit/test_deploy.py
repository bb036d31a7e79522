"""What an SRE deploys from ``deploy/``: the dashboard is what its generator builds
and shows only metrics the engine exposes; the alert rules are valid Prometheus
rules (``promtool`` when installed, a structural check always) and fire when they
should; the compose file wires every engine service to Kafka, Postgres, Prometheus
and Grafana as ARCHITECTURE.md says; ``LOYALTY_LOG_FORMAT=json`` gives JSON lines."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from services.cli import SERVICES
from services.runtime.config import Settings
from services.runtime.logs import JsonLinesFormatter, configure_logging, record_context
from services.runtime.metrics import RuntimeMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = (
    "promtool is not installed (Debian package `prometheus`; `make test` installs it):"
    " only the structural checks of the rules ran"
)

# labels the queries may group or match by: the engine's own, and the target labels
# Prometheus adds (job, instance, and `service` from prometheus.yml)
KNOWN_LABELS = {
    "service",
    "topic",
    "partition",
    "le",
    "type",
    "route",
    "method",
    "status",
    "job",
    "instance",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def _dashboard_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "loyalty_dashboard", DEPLOY / "grafana/dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _exposed_metric_names() -> set[str]:
    """Every series name a service's /metrics can carry, plus Prometheus's ``up``."""
    metrics = RuntimeMetrics("offers")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    families: list[Metric] = list(metrics.registry.collect())
    names = {f.name + suffix for f in families for suffix in suffixes[f.type]}
    return names | {"up"}


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (enough PromQL for our queries)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\w+", " ", e)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if match.group() in PROMQL_KEYWORDS or e[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function
        names.add(match.group())
    return names


def _grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if m}
    return labels


def _dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


# --- the dashboard ---------------------------------------------------------------


def test_the_committed_dashboard_is_what_the_generator_builds() -> None:
    module = _dashboard_module()
    committed = (DEPLOY / "grafana" / "loyalty.json").read_text(encoding="utf-8")
    assert committed == module.render(), "run: python deploy/grafana/dashboard.py"


def test_every_dashboard_query_names_only_metrics_the_engine_exposes() -> None:
    board = json.loads((DEPLOY / "grafana" / "loyalty.json").read_text())
    exprs = _dashboard_exprs(board)
    exposed = _exposed_metric_names()
    used: set[str] = set()
    for expr in exprs:
        names = _metric_names(expr)
        assert names, expr
        assert names <= exposed, f"{expr} names {names - exposed}"
        assert _grouping_labels(expr) <= KNOWN_LABELS, expr
        used |= names
    # ... and every runtime metric has a panel (the identity gauge says nothing over time)
    families = {f.name for f in RuntimeMetrics("offers").registry.collect()}
    shown = {f for f in families if any(n == f or n.startswith(f + "_") for n in used)}
    assert families - shown == {"loyalty_service_info"}


def test_the_metric_name_parser_sees_through_functions_labels_and_ranges() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (service, le)"
        ' (rate(loyalty_batch_seconds_bucket{topic="x"}[5m])))'
        " and up offset 5m or vector(0)"
    )
    assert _metric_names(expr) == {"loyalty_batch_seconds_bucket", "up"}


def test_the_dashboard_has_the_panels_an_sre_needs() -> None:
    board = json.loads((DEPLOY / "grafana" / "loyalty.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(_dashboard_exprs(board))
    for needed in (
        "sum by (service, topic) (rate(loyalty_messages_consumed_total",
        "sum by (topic) (rate(loyalty_messages_consumed_total",
        "max by (service, topic, partition) (loyalty_consumer_lag)",
        "histogram_quantile(0.99",
        "loyalty_batch_retries_total",
        "loyalty_messages_dead_lettered_total",
        "loyalty_outbox_backlog",
        "rate(loyalty_messages_published_total",
        'topic=~"offers.decisions|credits.decisions"',
        'type="credit.granted"',
        "rate(loyalty_http_requests_total",
        "loyalty_http_request_seconds_bucket",
    ):
        assert needed in exprs, needed
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(p.get("description") for p in panels)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    board = json.loads((DEPLOY / "grafana" / "loyalty.json").read_text())
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(_dashboard_exprs(board))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    # $__range only makes sense to Grafana: give promtool a duration in its place
    path.write_text(path.read_text().replace("$__range", "1h"))
    _promtool("check", "rules", str(path))


# --- the alert rules ---------------------------------------------------------------

ALERT_NAMES = {
    "LoyaltyConsumerLagGrowing",
    "LoyaltyDeadLetters",
    "LoyaltyOutboxNotDraining",
    "LoyaltyServiceDown",
    "LoyaltyServiceNotReady",
    "LoyaltyNoCreditDecisions",
}


def test_the_alert_rules_are_well_formed() -> None:
    """Always runs, with or without promtool."""
    rules = _alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    exposed = _exposed_metric_names()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        names = _metric_names(rule["expr"])
        assert names and names <= exposed, f"{rule['alert']}: {names - exposed}"
        assert _grouping_labels(rule["expr"]) <= KNOWN_LABELS, rule["alert"]


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_alert_rules_and_the_prometheus_config() -> None:
    assert "SUCCESS: 6 rules found" in _promtool("check", "rules", str(ALERTS))
    _promtool("check", "config", str(PROMETHEUS_CONFIG))


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    """deploy/prometheus/alerts_test.yml: every alert, on series that should and
    should not fire it (a first dead letter, a draining backlog, a ledger that
    publishes, ...)."""
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert tested == ALERT_NAMES
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml", cwd=ALERTS.parent)


def _promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# --- Prometheus scraping and the compose file --------------------------------------


def test_prometheus_scrapes_every_engine_service_and_loads_the_alerts() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert [(PROMETHEUS_CONFIG.parent / f).resolve() for f in config["rule_files"]] == [ALERTS]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "loyalty"  # what the dashboard and the alerts select
    targets = {
        c["labels"]["service"]: target for c in job["static_configs"] for target in c["targets"]
    }
    assert targets == {name: f"{name}:{port}" for name, port in SERVICES.items()}
    compose = _compose()["services"]
    for target in targets.values():
        host, port = target.split(":")
        assert host in compose
        assert compose[host]["command"][-1] == port


def test_the_compose_file_runs_every_engine_service_as_architecture_md_says() -> None:
    services = _compose()["services"]
    postgres_env = services["postgres"]["environment"]
    for name, port in SERVICES.items():
        service = services[name]
        assert service["image"] == services["topics"]["image"]  # the image of deploy/Dockerfile
        assert service["command"] == ["serve", name, "--host", "0.0.0.0", "--port", str(port)]
        assert service["ports"] == [f"{port}:{port}"]
        assert str(port) in " ".join(service["healthcheck"]["test"])
        assert {"kafka", "postgres", "topics"} <= set(service["depends_on"])
        env = service["environment"]
        assert {"LOYALTY_KAFKA_BOOTSTRAP", "LOYALTY_DATABASE_URL", "LOYALTY_TOPIC_PREFIX"} <= set(
            env
        )
        assert env["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
        db = urlsplit(env["LOYALTY_DATABASE_URL"])
        assert (db.hostname, db.port, db.username, db.password, db.path) == (
            "postgres",
            5432,
            postgres_env["POSTGRES_USER"],
            postgres_env["POSTGRES_PASSWORD"],
            "/" + postgres_env["POSTGRES_DB"],
        )
        # the environment is one the engine accepts
        settings = Settings(**{k.removeprefix("LOYALTY_").lower(): v for k, v in env.items()})
        assert settings.log_format == "json"
    build = services["topics"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    assert services["topics"]["command"] == ["topics", "create"]


def test_kafka_runs_in_kraft_mode_and_advertises_what_the_services_dial() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "zookeeper" not in services
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert services["postgres"]["image"].startswith("postgres:")


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def test_prometheus_and_grafana_are_provisioned_from_files_that_exist() -> None:
    services = _compose()["services"]
    prometheus = _mounts(services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    assert prometheus["/etc/prometheus/alerts.yml"] == ALERTS
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]

    grafana = _mounts(services["grafana"])
    assert all(path.exists() for path in grafana.values())
    datasources = grafana["/etc/grafana/provisioning/datasources"]
    (source,) = yaml.safe_load((datasources / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    assert services["prometheus"]["ports"] == ["9090:9090"]
    providers = grafana["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load((providers / "loyalty.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = {t: p for t, p in grafana.items() if t.startswith(folder + "/")}
    assert list(dashboards.values()) == [DEPLOY / "grafana" / "loyalty.json"]


# --- JSON logs --------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging() replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _json_lines(service: str | None, log: Any) -> list[dict[str, Any]]:
    stream = io.StringIO()
    configure_logging("INFO", "json", service=service)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    log(logging.getLogger("services.runtime.worker"))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("root_logging")
def test_json_logs_are_one_object_a_line_with_the_tenant_service_and_event_id() -> None:
    headers = [("ce_id", b"evt-42"), ("ce_tenant", b"acme"), ("ce_type", b"product.login")]

    def log(logger: logging.Logger) -> None:
        logger.warning(
            "dead-lettered %s:\n%s",
            "events.product[3]@17",
            "bad data",
            extra=record_context("segmenter", "events.product", 3, 17, headers),
        )
        logger.info("started")

    dead, started = _json_lines("segmenter", log)
    assert dead == {
        "time": dead["time"],
        "level": "WARNING",
        "logger": "services.runtime.worker",
        "message": "dead-lettered events.product[3]@17:\nbad data",
        "tenant": "acme",
        "service": "segmenter",
        "event_id": "evt-42",
        "topic": "events.product",
        "partition": 3,
        "offset": 17,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", dead["time"])
    # what is not known is left out, and `loyalty serve <service>` names the service
    assert set(started) == {"time", "level", "logger", "message", "service"}
    assert started["service"] == "segmenter"


@pytest.mark.usefixtures("root_logging")
def test_json_logs_carry_the_traceback_and_no_service_when_none_is_known() -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("batch failed")

    (line,) = _json_lines(None, log)
    assert line["level"] == "ERROR" and "service" not in line
    assert "ValueError: boom" in line["exception"]


@pytest.mark.usefixtures("root_logging")
def test_text_logs_stay_the_default_and_unknown_formats_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("INFO", "text")
    (handler,) = logging.getLogger().handlers
    assert not isinstance(handler.formatter, JsonLinesFormatter)
    with pytest.raises(SystemExit, match="LOYALTY_LOG_FORMAT must be text or json"):
        configure_logging("INFO", "xml")
    monkeypatch.setenv("LOYALTY_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()
    monkeypatch.setenv("LOYALTY_LOG_FORMAT", "json")
    assert Settings().log_format == "json"


def test_a_record_without_cloudevents_headers_logs_where_it_came_from() -> None:
    assert record_context("ledger", "offers.decisions", 0, 5, None) == {
        "service": "ledger",
        "topic": "offers.decisions",
        "partition": 0,
        "offset": 5,
    }
