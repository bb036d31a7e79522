"""Scoped keys on every route of every service: a key of each scope is let
through where its scope allows (the route's own answer: 2xx or 4xx) and refused
with 403 naming the needed scope elsewhere; a revoked key is refused by every
service within seconds; rotating gives a working key of the same scope."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from services.cli import create_tenant_key
from services.runtime.config import Settings
from services.runtime.tenants import SCOPES
from tests.apps import running

OPS = {"/health", "/ready", "/metrics"}
LETS_IN = {
    "ingest": {"ingest", "admin"},
    "read": {"read", "approve", "admin"},
    "approve": {"approve", "admin"},
    "admin": {"admin"},
    "any": set(SCOPES),
}
"""Route scope -> the key scopes it lets in (the README's Security section)."""


def route_scope(method: str, path: str) -> str:
    """What each route needs, written down independently of the code."""
    if path == "/v1/whoami":
        return "any"
    if path.startswith(("/v1/keys", "/v1/dead-letters")):
        return "admin"
    if method == "GET":
        return "read"
    if path == "/v1/events" or path.endswith(("/accept", "/decline")):
        return "ingest"
    if path.endswith(("/approve", "/reject")):
        return "approve"
    raise AssertionError(f"no scope written down for {method} {path}")


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every documented route, its path parameters filled in."""
    found = []
    for path, methods in app.openapi()["paths"].items():
        if path in OPS:
            continue
        for method in sorted(methods):
            found.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return found


async def _until(client: httpx.AsyncClient, key: str, want: int, path: str) -> int:
    status = 0
    for _ in range(150):  # keys and revocations arrive on the tenants topic
        status = (await client.get(path, headers={"Authorization": f"Bearer {key}"})).status_code
        if status == want:
            return status
        await asyncio.sleep(0.2)
    return status


async def test_every_route_lets_in_exactly_the_scopes_it_allows(settings: Settings) -> None:
    from services.ingest.app import create_app as ingest_app
    from services.ingest.config import IngestSettings
    from services.insights.app import create_app as insights_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app
    from services.segmenter.config import SegmenterSettings

    keys = {s: await create_tenant_key(settings, "Acme", None, s, f"{s}-holder") for s in SCOPES}
    apps = [
        ingest_app(IngestSettings(**settings.model_dump())),
        segmenter_app(SegmenterSettings(**settings.model_dump())),
        offers_app(settings),
        ledger_app(settings),
        insights_app(settings),
    ]
    async with running(*apps) as clients:
        probe = dict(
            zip(
                clients,
                [
                    "/v1/keys",
                    "/v1/segments",
                    "/v1/offers/summary",
                    "/v1/reports/credits",
                    "/v1/insights/lift",
                ],
                strict=True,
            )
        )
        for client in clients:  # every service has folded the keys
            assert await _until(client, keys["admin"], 200, probe[client]) == 200
        tried: list[tuple[str, str, str, int]] = []
        for app, client in zip(apps, clients, strict=True):
            for method, path in routes(app):
                need = route_scope(method, path)
                for scope, key in keys.items():
                    resp = await client.request(
                        method, path, headers={"Authorization": f"Bearer {key}"}, json={}
                    )
                    tried.append((method, path, scope, resp.status_code))
                    if scope in LETS_IN[need]:
                        assert resp.status_code not in (401, 403), (method, path, scope, resp.text)
                        assert resp.status_code < 500, (method, path, scope, resp.text)
                    else:
                        assert resp.status_code == 403, (method, path, scope, resp.text)
                        problem = resp.json()
                        assert f"'{need}' scope" in problem["detail"]
                        assert problem["required_scope"] == need, problem
                        assert problem["status"] == 403
                        assert resp.headers["content-type"] == "application/problem+json"
        assert len({(m, p) for m, p, _, _ in tried}) >= 25  # every service's routes
        no_key = await clients[4].get("/v1/insights/lift")
        assert no_key.status_code == 401
        assert no_key.headers["www-authenticate"] == "Bearer"
        assert no_key.json()["title"] == "Unauthorized" and no_key.json()["status"] == 401

        # the admin API: a new read key works, its rotation works, the old one is refused
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        made = await clients[0].post(
            "/v1/keys", json={"scope": "read", "holder": "bi"}, headers=admin
        )
        assert made.status_code == 201, made.text
        fresh = made.json()["key"]
        assert await _until(clients[0], fresh, 403, "/v1/keys") == 403  # known, not admin
        for client in clients[1:]:
            assert await _until(client, fresh, 200, probe[client]) == 200
        for _ in range(150):  # ingest folds its own key events from the topic too
            listed = (await clients[0].get("/v1/keys", headers=admin)).json()["keys"]
            if "bi" in {k["holder"] for k in listed}:
                break
            await asyncio.sleep(0.2)
        assert {k["holder"] for k in listed} >= {"bi", "read-holder", "admin-holder"}
        assert all("key" not in k for k in listed)  # the keys themselves never come back
        rotated = await clients[0].post(f"/v1/keys/{made.json()['key_id']}/rotate", headers=admin)
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["key"]
        for client in clients[1:]:
            assert await _until(client, fresh, 401, probe[client]) == 401
            assert await _until(client, new, 200, probe[client]) == 200
        for _ in range(150):  # until ingest, too, has folded the rotation's revocation
            listed = (await clients[0].get("/v1/keys", headers=admin)).json()["keys"]
            if any(k["key_id"] == made.json()["key_id"] and k["revoked_at"] for k in listed):
                break
            await asyncio.sleep(0.2)
        again = await clients[0].post(f"/v1/keys/{made.json()['key_id']}/revoke", headers=admin)
        assert again.status_code == 409
        revoked = await clients[0].post(
            f"/v1/keys/{rotated.json()['key_id']}/revoke", json={"reason": "left"}, headers=admin
        )
        assert revoked.json() == {"key_id": rotated.json()["key_id"], "revoked_by": "admin-holder"}
        for client in clients[1:]:
            assert await _until(client, new, 401, probe[client]) == 401
        # ingest too: a read key gets 403 on its admin routes while it is valid, 401 once
        # revoked (it is refused before its scope is weighed)
        for gone in (fresh, new):
            assert await _until(clients[0], gone, 401, "/v1/keys") == 401
