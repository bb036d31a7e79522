"""The console in a real browser (headless Chromium from Debian, driven by
Playwright) over real HTTP: the five services and the console run as
``loyalty serve`` processes on free loopback ports, against the session's
embedded broker and Postgres. An operator signs in, opens an account, approves a
pending credit and sees it granted (and a large one left pending for a second
approver), replays a dead letter and sees it processed; a read key is offered no
approve button and gets 403 when it posts the form anyway.

With ``LOYALTY_SCREENSHOTS=1`` (``make screenshots``) each page is saved, full
page, as ``docs/console/<page>.png``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from playwright.sync_api import sync_playwright

from services.cli import create_tenant_key
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from tests.kafka_helpers import produce
from tests.ledger_harness import offer_issued

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).parents[2] / "docs" / "console"
SERVICES = ("ingest", "segmenter", "offers", "ledger", "insights")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Without the background-networking flags Chromium's own connections get refused here."""
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (make test installs it)", allow_module_level=True)

R = TypeVar("R")


def run_async(coro: Coroutine[Any, Any, R]) -> R:
    """Runs ``coro`` to completion on a loop of its own (these tests are synchronous:
    Playwright's sync API must not run inside the session's event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not in {timeout_s:.0f}s (last: {last!r})")


@dataclass
class Stack:
    console: str
    urls: dict[str, str]
    settings: Settings
    keys: dict[str, str]
    holders: dict[str, str]

    def api(self, service: str, path: str, key: str = "admin") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.get(self.urls[service] + path, headers=auth, timeout=10)


def _event(account: str, n: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{account}-{type_}-{n}",
        "source": "browser-test",
        "type": type_,
        "subject": account,
        "time": (T0 + timedelta(minutes=n)).isoformat(),
        "data": data,
    }


def _history() -> list[dict[str, Any]]:
    events = []
    for i in range(1, 7):
        account = f"acct-{i}"
        events.append(
            _event(
                account,
                0,
                "billing.subscription_updated",
                {
                    "plan": "business",
                    "interval": "month" if i % 2 else "year",
                    "seats_purchased": 10 * i,
                    "mrr": {"amount": 50_000 * i, "currency": "USD"},
                    # the annual ones renew in 59 days: a renewal credit's moment
                    "renewal_date": (T0 + timedelta(days=200 if i % 2 else 59)).date().isoformat(),
                    "status": "active",
                },
            )
        )
        events.append(_event(account, 1, "product.login", {"user_id": "u1"}))
        events.append(
            _event(
                account,
                2,
                "product.feature_used",
                {"user_id": "u1", "feature": "reports", "key_action": True},
            )
        )
        # 90 % of the seats in use: a seat-expansion offer's moment
        events.append(_event(account, 3, "product.seats_changed", {"seats_used": 9 * i}))
    return events


@pytest.fixture(scope="module")
def stack(
    broker: EmbeddedBroker, postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]

    async def create_database() -> None:
        conn = await asyncpg.connect(postgres.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "b_{tag}"')
        finally:
            await conn.close()

    run_async(create_database())
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=postgres.url_for(f"b_{tag}"),  # type: ignore[arg-type]
        topic_prefix=f"b{tag}.",
    )
    holders = {
        "admin": "ops-admin@acme.example",
        "approve": "cfo@acme.example",
        "read": "growth@acme.example",
    }
    keys = {
        scope: run_async(create_tenant_key(settings, "Acme", None, scope, holder))  # type: ignore[arg-type]
        for scope, holder in holders.items()
    }
    ports = {name: free_port() for name in (*SERVICES, "console")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "LOYALTY_KAFKA_BOOTSTRAP": broker.bootstrap,
        "LOYALTY_DATABASE_URL": postgres.url_for(f"b_{tag}"),
        "LOYALTY_TOPIC_PREFIX": f"b{tag}.",
        "LOYALTY_SESSION_TIMEOUT_MS": "6000",
        "LOYALTY_CONSUMER_POLL_MS": "100",
        "LOYALTY_TICK_INTERVAL": "0s",
        "LOYALTY_SEGMENTER_CLOCK": "event",
        "LOYALTY_CONSOLE_SECRET": uuid.uuid4().hex,
        "LOYALTY_CONSOLE_REFRESH_S": "2",
        **{f"LOYALTY_CONSOLE_{n.upper()}_URL": urls[n] for n in SERVICES},
    }
    logs = tmp_path_factory.mktemp("browser-stack")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, port in ports.items():
            out = (logs / f"{name}.log").open("wb")
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", name, "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        for name, url in urls.items():

            def ready(name: str = name, url: str = url) -> bool:
                assert procs[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
                return httpx.get(f"{url}/ready", timeout=2).status_code == 200

            wait_until(ready, f"{name} ready", timeout_s=120)
        found = Stack(urls["console"], urls, settings, keys, holders)
        for service, probe in (("ledger", "/v1/approvals"), ("segmenter", "/v1/segments")):

            def known(service: str = service, probe: str = probe) -> bool:
                return found.api(service, probe).status_code == 200

            wait_until(known, f"{service} knows the keys")
        _feed(found)
        yield found
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _feed(s: Stack) -> None:
    """Accounts through ingest (HTTP), and two grants that wait for approval on
    ``offers.decisions``: 500.00 USD (one approver) and 1,500.00 USD (four eyes)."""
    auth = {"Authorization": f"Bearer {s.keys['admin']}"}
    resp = httpx.post(
        f"{s.urls['ingest']}/v1/events?ordered=true", json=_history(), headers=auth, timeout=30
    )
    assert resp.status_code == 202, resp.text
    offers = [
        offer_issued("acme", "acct-1", "mid-credit", T0 + timedelta(hours=1), value=50_000),
        offer_issued("acme", "acct-2", "big-credit", T0 + timedelta(hours=1), value=150_000),
    ]
    run_async(
        produce(s.settings.kafka_bootstrap, f"{s.settings.topic_prefix}offers.decisions", offers)
    )

    def waiting() -> bool:
        listed = s.api("ledger", "/v1/approvals").json()["approvals"]
        return {a["approval_id"] for a in listed} >= {"mid-credit", "big-credit"}

    wait_until(waiting, "both grants wait for approval")
    wait_until(lambda: s.api("segmenter", "/v1/accounts/acct-6").status_code == 200, "accounts")


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot as ``docs/console/<name>.png``, when asked for."""
    if os.environ.get("LOYALTY_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def signed_in(browser: Any, stack: Stack, scope: str, operator: str) -> Any:
    """A fresh browser context (its own cookies), signed in with ``scope``'s key."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.console}/approvals")
    assert "/login" in page.url  # not signed in: sent to sign in, then back
    page.fill("input[name=key]", stack.keys[scope])
    page.fill("input[name=operator]", operator)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.console}/approvals")
    assert page.locator(".who").inner_text().count(stack.holders[scope]) == 1
    return page


def test_sign_in_and_the_overview_shows_live_figures(browser: Any, stack: Stack) -> None:
    page = signed_in(browser, stack, "admin", "Olga Operator")
    page.goto(stack.console + "/")
    assert page.locator("#services tr[data-service]").count() == 5
    assert page.locator("#services td.bad").count() == 0  # every service up
    # htmx refreshes the panel; the second scrape gives rates
    page.wait_for_selector("#overview:not([data-window=''])", timeout=20_000)
    assert page.locator("#topics tbody tr").count() >= 3
    assert "events.product" in page.locator("#topics").inner_text()
    shot(page, "overview")
    page.context.close()


def test_an_account_page_shows_features_segments_offers_and_credits(
    browser: Any, stack: Stack
) -> None:
    page = signed_in(browser, stack, "read", "Gina Growth")
    page.goto(stack.console + "/segments")
    assert page.locator("#segments tbody tr").count() >= 1
    shot(page, "segments")
    page.fill("input[name=account]", "acct-1")
    page.click("form.search button")
    page.wait_for_url(re.compile(r".*/accounts/acct-1$"))
    assert page.locator("#rfm-cell").inner_text().strip()
    features = page.locator("#features").inner_text()
    assert "seats_purchased" in features or "seats" in features, features
    assert page.locator(".banner.down").count() == 0
    shot(page, "account")
    with_members = page.locator("#account-segments a").first
    if with_members.count():
        with_members.click()
        page.wait_for_selector("#members")
        assert page.locator("#members a", has_text="acct-1").count() == 1
        shot(page, "segment-members")
    page.context.close()


def test_approving_a_pending_credit_grants_it_and_four_eyes_leave_a_large_one_pending(
    browser: Any, stack: Stack
) -> None:
    page = signed_in(browser, stack, "approve", "Carla CFO")
    row = page.locator("tr[data-approval=mid-credit]")
    assert row.locator("button.approve").count() == 1
    shot(page, "approvals")
    row.locator("input[name=comment]").fill("fine for a renewal")
    row.locator("button.approve").click()
    page.wait_for_url(f"{stack.console}/approvals/mid-credit")
    assert page.locator("#approval-status").inner_text() == "granted"
    assert "granted" in page.locator(".flash").inner_text()
    assert page.locator("button.approve").count() == 0  # decided: read-only
    audit = page.locator("#audit").inner_text()
    assert "via console by Carla CFO: fine for a renewal" in audit
    assert stack.holders["approve"] in audit  # the services record the key's holder
    page.goto(stack.console + "/accounts/acct-1")
    assert "500.00 USD" in page.locator("#credits").inner_text()

    page.goto(stack.console + "/approvals")
    page.locator("tr[data-approval=big-credit] button.approve").click()
    page.wait_for_url(f"{stack.console}/approvals/big-credit")
    assert "still pending" in page.locator(".flash").inner_text()
    assert page.locator("#approval-status").inner_text() == "pending"
    assert page.locator("#second-approver").is_visible()
    # the granted 500.00 USD already counts against the month's program cap
    program = page.locator("#headroom tr", has_text="program cap").inner_text()
    assert "500.00 USD" in program and "1,500.00 USD" in program
    shot(page, "approval-four-eyes")
    page.context.close()
    detail = stack.api("ledger", "/v1/approvals/mid-credit").json()
    assert detail["status"] == "granted"


def test_a_read_key_sees_no_approve_button_and_gets_403_when_posting_anyway(
    browser: Any, stack: Stack
) -> None:
    page = signed_in(browser, stack, "read", "Gina Growth")
    assert page.locator("tr[data-approval=big-credit]").count() == 1
    assert page.locator("button.approve").count() == 0
    assert page.locator("button.reject").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    url = f"{stack.console}/approvals/big-credit/approve"
    forged = page.request.post(url, form={"csrf": csrf, "comment": "let me"})
    assert forged.status == 403
    assert 'data-required-scope="approve"' in forged.text()
    no_token = page.request.post(url, form={"comment": "let me"})
    assert no_token.status == 403
    assert stack.api("ledger", "/v1/approvals/big-credit").json()["approved_by"] == [
        stack.holders["approve"]
    ]
    page.context.close()


def test_offers_ledger_and_insights_pages(browser: Any, stack: Stack) -> None:
    page = signed_in(browser, stack, "admin", "Olga Operator")
    for path, heading, name in (
        ("/offers", "Offers", "offers"),
        ("/ledger", "Ledger", "ledger"),
        ("/insights", "Insights", "insights"),
    ):
        resp = page.goto(stack.console + path)
        assert resp is not None and resp.status == 200, path
        assert page.locator("h1").first.inner_text() == heading
        assert page.locator(".banner.down").count() == 0, page.locator(".banner").all_inner_texts()
        shot(page, name)
    page.goto(stack.console + "/ledger")
    assert page.locator("#credits-report tbody tr").count() >= 1
    page.context.close()


def test_a_dead_letter_replayed_after_the_fix_is_processed(browser: Any, stack: Stack) -> None:
    from schemas import Money
    from schemas.events import SubscriptionUpdated, SubscriptionUpdatedData
    from tests.kafka_helpers import read_all

    early = SubscriptionUpdated(
        id="late-sub-1",
        source="billing",
        type="billing.subscription_updated",
        subject="late-1",
        tenant="latecomer",  # a tenant nobody created yet: every consumer dead-letters it
        time=T0,
        data=SubscriptionUpdatedData(
            plan="team",
            interval="month",
            seats_purchased=5,
            mrr=Money(amount=20_000, currency="USD"),
            renewal_date=(T0 + timedelta(days=30)).date(),
            status="active",
        ),
    )
    prefix = stack.settings.topic_prefix
    bootstrap = stack.settings.kafka_bootstrap
    run_async(produce(bootstrap, f"{prefix}events.billing", [early]))
    dead = run_async(read_all(bootstrap, f"{prefix}events.billing.dlq", at_least=1, timeout_s=60))
    assert dead, "the event of an unknown tenant was not dead-lettered"
    # the fix: the tenant is created; then its admin replays what was quarantined
    stack.keys["late"] = run_async(
        create_tenant_key(stack.settings, "Latecomer", None, "admin", "late-admin@example")
    )
    stack.holders["late"] = "late-admin@example"
    wait_until(lambda: stack.api("ingest", "/v1/whoami", "late").status_code == 200, "late key")
    page = signed_in(browser, stack, "late", "Olga Operator")
    page.goto(stack.console + "/dead-letters")
    rows = page.locator("tr[data-dead-letter]")

    def listed() -> bool:
        if rows.count():
            return True
        page.reload()  # ingest reads the dead-letter topics as they are
        return False

    wait_until(listed, "the dead letters listed in the console", timeout_s=30)
    text = page.locator("#dead-letters").inner_text()
    assert "events.billing" in text and "unknown tenant" in text, text
    shot(page, "dead-letters")
    first = rows.first
    entry_id = first.get_attribute("data-dead-letter")
    first.locator("input[name=comment]").fill("tenant created")
    first.locator("button.replay").click()
    page.wait_for_selector(".flash")
    assert "replayed" in page.locator(".flash").inner_text()
    assert page.locator(f"tr[data-dead-letter='{entry_id}']").count() == 0  # no longer open
    page.goto(f"{stack.console}/dead-letters/{entry_id}")
    assert page.locator("#dead-letter-status").inner_text() == "replayed"
    assert "via console by Olga Operator: tenant created" in page.content()
    shot(page, "dead-letter")
    wait_until(
        lambda: stack.api("segmenter", "/v1/accounts/late-1", "late").status_code == 200,
        "the replayed event processed by the segmenter",
        timeout_s=60,
    )
    page.context.close()
