"""Dead letters on the real broker and Postgres: ingest's ``/v1/dead-letters`` and
``loyalty dlq`` over what two consumers of one topic quarantined.

Two test services consume ``events.product``: ``steady`` applies every event,
``picky`` has a handler that breaks on some events until it is fixed. A record that
picky dead-letters and steady applied is replayed after the fix: picky applies it
once, steady drops it by its event id, and the dead letter is marked replayed, with
the key's holder in its audit. Then a replay again and a discard of a decided one
are refused, the tenant scoping holds, and the CLI does the same as the operator."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from schemas.events import Login, LoginData
from services.cli import create_tenant_key
from services.cli import main as cli_main
from services.ingest.config import IngestSettings
from services.runtime.batch import Inbound, UnitOfWork
from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime, ServiceSpec
from tests.apps import running
from tests.kafka_helpers import produce_one, wait_consumed

BREAKS = "this event breaks the handler"
REASON = f"handler error: ValueError: {BREAKS}"


def login(event_id: str, user: str, tenant: str = "acme", account: str = "acct-1") -> Login:
    return Login(
        id=event_id,
        source="test",
        type="product.login",
        subject=account,
        tenant=tenant,
        time=datetime.now(UTC),
        data=LoginData(user_id=user),
    )


class Picky:
    """A handler that breaks on events of user ``bad`` while ``broken``."""

    def __init__(self) -> None:
        self.broken = True
        self.failures = 0

    async def __call__(self, uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
        if self.broken and any(i.event.data.user_id == "bad" for i in batch):
            self.failures += 1
            raise ValueError(BREAKS)
        await record(uow, batch)


async def record(uow: UnitOfWork, batch: Sequence[Inbound]) -> None:
    await uow.conn.execute(
        text("INSERT INTO effects (tenant, event_id, account) VALUES (:t, :e, :a)"),
        [{"t": i.event.tenant, "e": i.event.id, "a": i.event.subject} for i in batch],
    )


async def effects_of(rt: ServiceRuntime, event_id: str) -> int:
    async with rt.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM effects WHERE event_id = :e"), {"e": event_id}
                )
            ).scalar_one()
        )


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        got = await check()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def consumers(
    settings: Settings, fixture_migrations: Path, picky: Picky
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime]]:
    steady = ServiceRuntime(
        ServiceSpec("steady", fixture_migrations, {"events.product": record}), settings
    )
    choosy = ServiceRuntime(
        ServiceSpec("picky", fixture_migrations, {"events.product": picky}), settings
    )
    await steady.start()
    await choosy.start()
    try:
        yield steady, choosy
    finally:
        await choosy.stop()
        await steady.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def listed(client: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    resp = await client.get("/v1/dead-letters", params=params, headers=auth(key))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"dead_letters", "next"}
    entries: list[dict[str, Any]] = body["dead_letters"]
    return entries


def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """``loyalty`` in process with ``settings`` as its environment: exit code, stdout."""
    monkeypatch.setenv("LOYALTY_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("LOYALTY_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("LOYALTY_TOPIC_PREFIX", settings.topic_prefix)
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(list(args))
    return code, out.getvalue()


async def test_a_dead_letter_is_replayed_once_after_the_fix_audited_and_scoped(
    settings: Settings, fixture_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.ingest.app import create_app as ingest_app

    keys = {
        "admin": await create_tenant_key(settings, "Acme", None, "admin", "ops@acme.example"),
        "read": await create_tenant_key(settings, "Acme", None, "read", "bi@acme.example"),
        "other": await create_tenant_key(settings, "Globex", None, "admin", "ops@globex.example"),
    }
    topic = f"{settings.topic_prefix}events.product"
    picky = Picky()
    app = ingest_app(IngestSettings(**settings.model_dump()))
    async with (
        running(app) as (client,),
        consumers(settings, fixture_migrations, picky) as (
            steady,
            choosy,
        ),
    ):
        await until(lambda: _ok(client, keys["admin"]))
        partition, offset = await produce_one(
            settings.kafka_bootstrap, topic, login("bad-1", "bad")
        )
        await wait_consumed(choosy, "events.product", partition, offset)
        await wait_consumed(steady, "events.product", partition, offset)
        assert picky.failures >= 1
        assert await effects_of(steady, "bad-1") == 1
        assert await effects_of(choosy, "bad-1") == 0

        # listed with its reason and source offset (dead-lettered by picky only)
        (entry,) = await until(lambda: listed(client, keys["admin"]))
        assert entry["id"] == f"events.product.dlq:{partition}:{entry['id'].split(':')[-1]}"
        assert {k: entry[k] for k in entry if k not in ("id", "dead_lettered_at", "preview")} == {
            "topic": "events.product.dlq",
            "source_topic": "events.product",
            "source_partition": partition,
            "source_offset": offset,
            "service": "picky",
            "reason": REASON,
            "event_id": "bad-1",
            "type": "product.login",
            "tenant": "acme",
            "status": "open",
        }
        assert '"user_id":"bad"' in entry["preview"].replace(" ", "")
        assert await listed(client, keys["admin"], reason="BREAKS THE") == [entry]
        assert await listed(client, keys["admin"], reason="no such reason") == []
        assert await listed(client, keys["admin"], topic="events.billing") == []
        assert await listed(client, keys["admin"], status="replayed") == []

        # another tenant's admin key sees nothing of it; a read key may not look
        assert await listed(client, keys["other"]) == []
        hidden = await client.get(f"/v1/dead-letters/{entry['id']}", headers=auth(keys["other"]))
        assert hidden.status_code == 404
        refused = await client.post(
            f"/v1/dead-letters/{entry['id']}/replay", json={}, headers=auth(keys["other"])
        )
        assert refused.status_code == 404
        for path in ("/v1/dead-letters", f"/v1/dead-letters/{entry['id']}"):
            forbidden = await client.get(path, headers=auth(keys["read"]))
            assert forbidden.status_code == 403
            assert forbidden.json()["required_scope"] == "admin"

        # the fix, then the replay: picky applies it once, steady drops the duplicate
        picky.broken = False
        resp = await client.post(
            f"/v1/dead-letters/{entry['id']}/replay",
            json={"comment": "handler fixed"},
            headers=auth(keys["admin"]),
        )
        assert resp.status_code == 200, resp.text
        replayed = resp.json()
        assert replayed["id"] == entry["id"] and replayed["status"] == "replayed"
        to = replayed["replayed_to"]
        assert (to["topic"], to["partition"]) == ("events.product", partition)
        assert to["offset"] > offset
        await wait_consumed(choosy, "events.product", partition, to["offset"])
        await wait_consumed(steady, "events.product", partition, to["offset"])
        assert await effects_of(choosy, "bad-1") == 1
        assert await effects_of(steady, "bad-1") == 1
        assert await listed(client, keys["admin"]) == []  # open ones by default

        shown = await client.get(f"/v1/dead-letters/{entry['id']}", headers=auth(keys["admin"]))
        assert shown.status_code == 200, shown.text
        detail = shown.json()
        assert detail["status"] == "replayed"
        assert [(a["action"], a["actor"], a["comment"]) for a in detail["audit"]] == [
            ("replayed", "ops@acme.example", "handler fixed")
        ]
        assert detail["headers"]["dlq_reason"] == REASON
        assert detail["headers"]["ce_id"] == "bad-1"
        assert json.loads(detail["value"])["user_id"] == "bad"

        again = await client.post(
            f"/v1/dead-letters/{entry['id']}/replay", json={}, headers=auth(keys["admin"])
        )
        assert again.status_code == 409, again.text
        late = await client.post(
            f"/v1/dead-letters/{entry['id']}/discard",
            json={"reason": "too late"},
            headers=auth(keys["admin"]),
        )
        assert late.status_code == 409

        # a second bad record, discarded: listed as such, then neither replayed nor discarded
        picky.broken = True
        p2, o2 = await produce_one(settings.kafka_bootstrap, topic, login("bad-2", "bad"))
        await wait_consumed(choosy, "events.product", p2, o2)
        (second,) = await until(lambda: listed(client, keys["admin"]))
        assert second["event_id"] == "bad-2"
        no_reason = await client.post(
            f"/v1/dead-letters/{second['id']}/discard", json={}, headers=auth(keys["admin"])
        )
        assert no_reason.status_code == 422
        gone = await client.post(
            f"/v1/dead-letters/{second['id']}/discard",
            json={"reason": "a test event"},
            headers=auth(keys["admin"]),
        )
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"id": second["id"], "status": "discarded"}
        assert [e["id"] for e in await listed(client, keys["admin"], status="discarded")] == [
            second["id"]
        ]
        assert {
            e["event_id"]: e["status"] for e in await listed(client, keys["admin"], status="all")
        } == {
            "bad-1": "replayed",
            "bad-2": "discarded",
        }
        # a dozen listings later, each dead-letter record was read from the broker once
        # (the API keeps what it read; only the statuses are read every time)
        assert app.state.dead_letter_log.records_read == 2
        for verb, body in (("replay", {}), ("discard", {"reason": "again"})):
            resp = await client.post(
                f"/v1/dead-letters/{second['id']}/{verb}", json=body, headers=auth(keys["admin"])
            )
            assert resp.status_code == 409, (verb, resp.text)
        missing = await client.get(
            f"/v1/dead-letters/events.product.dlq:{partition}:999999", headers=auth(keys["admin"])
        )
        assert missing.status_code == 404

        # the operator on the command line: a third one, listed and replayed by reason
        p3, o3 = await produce_one(settings.kafka_bootstrap, topic, login("bad-3", "bad"))
        await wait_consumed(choosy, "events.product", p3, o3)
        picky.broken = False
        code, out = await asyncio.to_thread(
            cli, settings, monkeypatch, "dlq", "list", "--tenant", "acme", "--json"
        )
        assert code == 0
        (third,) = [json.loads(line) for line in out.splitlines()]
        assert (third["event_id"], third["reason"], third["source_offset"]) == (
            "bad-3",
            REASON,
            o3,
        )
        code, out = await asyncio.to_thread(
            cli,
            settings,
            monkeypatch,
            "dlq",
            "replay",
            "--reason",
            REASON,
            "--operator",
            "sre-on-call",
        )
        assert code == 0, out
        assert f"replayed {third['id']} to events.product[{p3}]@" in out
        replayed_at = int(out.split("@")[1].split()[0])
        await wait_consumed(choosy, "events.product", p3, replayed_at)
        await wait_consumed(steady, "events.product", p3, replayed_at)
        assert await effects_of(choosy, "bad-3") == 1
        assert await effects_of(steady, "bad-3") == 1
        code, out = await asyncio.to_thread(
            cli, settings, monkeypatch, "dlq", "show", third["id"], "--json"
        )
        assert code == 0
        audit = json.loads(out)["audit"]
        assert [(a["action"], a["actor"]) for a in audit] == [("replayed", "sre-on-call")]
        code, _ = await asyncio.to_thread(
            cli, settings, monkeypatch, "dlq", "discard", third["id"], "--reason", "x"
        )
        assert code == 1  # already replayed
        # the tenant's admin sees the operator's action too
        over_http = await client.get(f"/v1/dead-letters/{third['id']}", headers=auth(keys["admin"]))
        assert over_http.json()["audit"][0]["actor"] == "sre-on-call"


async def _ok(client: httpx.AsyncClient, key: str) -> bool:
    return (await client.get("/v1/dead-letters", headers=auth(key))).status_code == 200
