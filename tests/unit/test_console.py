"""The console without the services: its pure figures and charts, its sessions,
and its pages over a fake network (``httpx.MockTransport``) — signing in, the
CSRF and scope checks, and the banner (never a 500) for a service that is down."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.console.app import create_app
from services.console.charts import Bar, bar_chart
from services.console.config import ConsoleSettings
from services.console.figures import Scrape, ScrapeHistory, overview
from services.console.session import SessionStore
from services.console.web import attributed, safe_next

METRICS = """\
# TYPE loyalty_messages_consumed_total counter
loyalty_messages_consumed_total{{topic="events.product"}} {consumed}
# TYPE loyalty_messages_published_total counter
loyalty_messages_published_total{{topic="offers.decisions"}} {published}
# TYPE loyalty_messages_dead_lettered_total counter
loyalty_messages_dead_lettered_total{{topic="events.product"}} 2
# TYPE loyalty_consumer_lag gauge
loyalty_consumer_lag{{topic="events.product",partition="0"}} 5
loyalty_consumer_lag{{topic="events.product",partition="1"}} 7
# TYPE loyalty_outbox_backlog gauge
loyalty_outbox_backlog 3
"""


def scrape(at: float, consumed: int, published: int) -> Scrape:
    return Scrape.parse("offers", at, METRICS.format(consumed=consumed, published=published))


def test_rates_come_from_two_scrapes_and_a_reset_gives_none() -> None:
    history = ScrapeHistory()
    first = scrape(0.0, 100, 10)
    assert history.add(first) is None
    second = scrape(5.0, 150, 20)
    assert history.add(second) is first
    o = overview(["offers", "ledger"], {"offers": (second, first)})
    (topic,) = [t for t in o.topics if t.topic == "events.product"]
    assert (topic.consumed, topic.consumed_per_s, topic.dead_lettered) == (150, 10.0, 2)
    assert o.decisions_per_min["offers.decisions"] == pytest.approx(120.0)
    assert o.decisions_per_min["credits.decisions"] == 0.0
    offers, ledger = o.services
    assert (offers.lag, offers.max_partition_lag, offers.outbox_backlog) == (12, 7, 3)
    assert not ledger.up
    assert o.dead_letters == 2
    restarted = overview(["offers"], {"offers": (scrape(9.0, 3, 1), second)})
    assert restarted.decisions_per_min["offers.decisions"] is None  # not negative


def test_the_first_scrape_has_totals_but_no_rates() -> None:
    o = overview(["offers"], {"offers": (scrape(0.0, 100, 10), None)})
    assert not o.rates_known
    assert o.topics[0].consumed == 100 and o.topics[0].consumed_per_s is None


def test_charts_escape_what_they_show() -> None:
    svg = bar_chart([Bar("<script>", 3, "3 & more"), Bar("b", 0, "0")])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "3 &amp; more" in svg
    assert "nothing to chart" in bar_chart([])


def test_sessions_are_found_by_a_signed_id_only_while_alive() -> None:
    now = [0.0]
    store = SessionStore("s3cret", idle_s=60, clock=lambda: now[0])
    session, cookie = store.open(
        key="lk_x", operator="ann", tenant="acme", scope="read", holder="bi"
    )
    assert store.find(cookie) is session
    assert store.find(cookie + "x") is None
    assert SessionStore("other", idle_s=60).find(cookie) is None  # another secret
    assert "lk_x" not in cookie  # the key stays on the server
    now[0] = 61
    assert store.find(cookie) is None
    token, signed = store.login_token()
    assert store.login_token_ok(signed, token)
    assert not store.login_token_ok(signed, token + "x")


def test_comments_name_the_operator_and_next_stays_local() -> None:
    assert attributed("ann@acme.example", "ok") == "via console by ann@acme.example: ok"
    assert attributed("ann", "") == "via console by ann"
    assert len(attributed("ann", "x" * 5000)) == 2000
    assert [safe_next(p) for p in ("/ledger", "//evil", "https://evil", None)] == [
        "/ledger",
        "/",
        "/",
        "/",
    ]


Route = Callable[[httpx.Request], httpx.Response]


def fake_services(scope: str, down: frozenset[str] = frozenset()) -> httpx.MockTransport:
    """Every service answers whoami for one key; ledger has one pending approval;
    a service in ``down`` refuses connections."""
    posted: list[tuple[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        port = request.url.port
        service = {8080: "ingest", 8081: "segmenter", 8082: "offers", 8083: "ledger"}.get(
            port or 0, "insights"
        )
        if service in down:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=METRICS.format(consumed=1, published=1))
        if request.headers.get("authorization") != "Bearer lk_good":
            return httpx.Response(401, json={"status": 401, "detail": "unknown key"})
        path = request.url.path
        if path == "/v1/whoami":
            body = {"tenant": "acme", "scope": scope, "holder": "fin@acme", "key_id": "0" * 12}
            return httpx.Response(200, json=body)
        if path == "/v1/approvals":
            return httpx.Response(200, json={"approvals": [APPROVAL]})
        if path.endswith("/approve"):
            posted.append((path, json.loads(request.content)))
            return httpx.Response(200, json={"status": "granted", "approved_by": ["fin@acme"]})
        return httpx.Response(404, json={"status": 404, "detail": "no such thing"})

    transport = httpx.MockTransport(handle)
    transport.posted = posted  # type: ignore[attr-defined]
    return transport


APPROVAL = {
    "approval_id": "off-1",
    "account": "acct-1",
    "rule": "renewal",
    "kind": "renewal_credit",
    "status": "pending",
    "value": 135_000,
    "cost": 135_000,
    "currency": "USD",
    "reason": "above the auto-approval limit",
    "requested_at": "2026-11-02T09:00:00+00:00",
    "expires_at": "2026-11-09T09:00:00+00:00",
    "approvals_needed": 1,
    "approved_by": [],
    "actor": None,
    "comment": None,
    "headroom": [
        {
            "cap": "program cap",
            "period": "2026-11",
            "currency": "USD",
            "limit": 500_000,
            "used": 420_000,
            "left": 80_000,
            "needs": 135_000,
            "binds": True,
        }
    ],
}


async def signed_in(client: httpx.AsyncClient, key: str = "lk_good") -> httpx.Response:
    form = (await client.get("/login")).text
    return await client.post(
        "/login", data={"key": key, "operator": "ann@acme.example", "csrf": csrf_of(form)}
    )


def console(transport: httpx.MockTransport) -> httpx.AsyncClient:
    app = create_app(ConsoleSettings(secret="t"), transport=transport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console", follow_redirects=True
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found[1]


async def test_an_approve_key_approves_with_its_operator_named_and_needs_the_csrf_token() -> None:
    transport = fake_services("approve")
    async with console(transport) as client:
        assert (
            await client.get("/approvals", follow_redirects=False)
        ).status_code == 303  # sign in
        assert (await signed_in(client)).status_code == 200
        queue = await client.get("/approvals")
        assert "Approve" in queue.text and "1,350.00 USD" in queue.text
        short = r'class="bad"[^>]*>program cap: 800.00 USD left of 5,000.00 USD'
        assert re.search(short, queue.text)  # the cap that would refuse it, marked
        assert "refused now by program cap" in queue.text
        wrong = await client.post("/approvals/off-1/approve", data={"csrf": "wrong"})
        assert wrong.status_code == 403
        done = await client.post(
            "/approvals/off-1/approve", data={"csrf": csrf_of(queue.text), "comment": "ok"}
        )
        assert done.status_code == 200 and "granted" in done.text
    assert transport.posted == [  # type: ignore[attr-defined]
        ("/v1/approvals/off-1/approve", {"comment": "via console by ann@acme.example: ok"})
    ]


async def test_a_read_key_is_offered_no_approve_button_and_gets_403_anyway() -> None:
    transport = fake_services("read")
    async with console(transport) as client:
        await signed_in(client)
        queue = await client.get("/approvals")
        assert queue.status_code == 200 and ">Approve<" not in queue.text
        refused = await client.post("/approvals/off-1/approve", data={"csrf": csrf_of(queue.text)})
        assert refused.status_code == 403 and 'data-required-scope="approve"' in refused.text
    assert transport.posted == []  # type: ignore[attr-defined]


async def test_a_service_that_is_down_is_a_banner_not_a_500() -> None:
    async with console(fake_services("admin", down=frozenset({"ledger", "ingest"}))) as client:
        await signed_in(client)
        for path in ("/approvals", "/ledger", "/dead-letters", "/"):
            resp = await client.get(path)
            assert resp.status_code == 200, path
            assert re.search(r"(ledger|ingest) is unavailable", resp.text), path
        assert "dead-letter API is unavailable" not in (await client.get("/dead-letters")).text


async def test_a_missing_dead_letter_api_says_so() -> None:
    async with console(fake_services("admin")) as client:
        await signed_in(client)
        resp = await client.get("/dead-letters")
        assert resp.status_code == 200 and "dead-letter API is unavailable" in resp.text


async def test_sign_in_refuses_an_unknown_key_and_needs_its_form_token() -> None:
    async with console(fake_services("admin")) as client:
        assert (await signed_in(client, key="lk_bad")).status_code == 401
        resp = await client.post(
            "/login", data={"key": "lk_good", "operator": "x", "csrf": "forged"}
        )
        assert resp.status_code == 403
    async with console(fake_services("admin", down=frozenset(SERVICES))) as client:
        assert (await signed_in(client)).status_code == 503


SERVICES = ("ingest", "segmenter", "offers", "ledger", "insights")


def test_topic_labels_are_folded_onto_logical_topics() -> None:
    text = (
        "# TYPE loyalty_messages_published_total counter\n"
        'loyalty_messages_published_total{topic="staging.credits.decisions"} 4\n'
        'loyalty_messages_published_total{topic="credits.decisions"} 1\n'
        'loyalty_messages_published_total{topic="staging.events.product.dlq"} 2\n'
    )
    assert Scrape.parse("ledger", 0.0, text).by("loyalty_messages_published_total", "topic") == {
        "credits.decisions": 5,
        "events.product.dlq": 2,
    }
