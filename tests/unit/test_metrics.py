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
    metrics.published("offers.decisions", "offer.issued").inc()
    metrics.http_requests("/v1/accounts/{account_id}", "GET", "200").inc()
    metrics.http_seconds("/v1/accounts/{account_id}", "GET").observe(0.01)
    metrics.lag.labels("events.billing", "3").set(1)
    labels = {
        name
        for family in metrics.registry.collect()
        for sample in family.samples
        for name in sample.labels
    }
    assert labels == {"service", "topic", "partition", "le", "type", "route", "method", "status"}


async def test_http_requests_are_counted_by_route_template_never_by_path() -> None:
    import httpx
    from fastapi import APIRouter, FastAPI
    from prometheus_client import generate_latest

    from services.runtime.http_metrics import HttpMetrics

    metrics = RuntimeMetrics("segmenter")
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/accounts/{account_id}")
    async def account(account_id: str) -> dict[str, str]:
        return {"account": account_id}

    app.include_router(router)
    app.add_middleware(HttpMetrics, metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v1/accounts/acct-secret-42")).status_code == 200
        assert (await client.get("/v1/accounts/acct-other")).status_code == 200
        assert (await client.get("/no/such/acct-secret-42")).status_code == 404
        assert (await client.request("BREW", "/v1/accounts/x")).status_code == 405
    text = generate_latest(metrics.registry).decode()
    assert "acct-secret-42" not in text and "acct-other" not in text
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "loyalty_http_requests_total"
    }
    assert requests == {
        ("/v1/accounts/{account_id}", "GET", "200"): 2,
        ("unmatched", "GET", "404"): 1,
        ("/v1/accounts/{account_id}", "other", "405"): 1,
    }


def test_the_ready_gauge_is_zero_until_the_service_runs() -> None:
    """``loyalty_ready`` reads the same checks as ``/ready``: an app whose lifespan has
    not started (no consumer, no relay) exposes 0."""
    from prometheus_client import generate_latest

    from services.offers.app import create_app
    from services.runtime.config import Settings

    app = create_app(Settings(database_url="postgresql+asyncpg://u@127.0.0.1:9/none"))
    text = generate_latest(app.state.runtime.metrics.registry).decode()
    assert "\nloyalty_ready 0.0\n" in text
