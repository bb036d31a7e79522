"""Tenant API keys.

Keys are random 256-bit tokens shown once; only their SHA-256 travels and is
stored (a fast hash is enough for high-entropy tokens, unlike passwords).
``tenant.key_added`` events on the ``tenants`` topic are folded by every service
into its own ``api_keys`` table, so no service reads another's tables.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import TenantKeyAdded, TenantKeyAddedData
from services.runtime.batch import Inbound, UnitOfWork


def new_api_key() -> str:
    return "lk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_id_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"tenant name {name!r} has no letters or digits")
    return slug[:64]


def key_added_event(name: str, key: str, now: datetime | None = None) -> TenantKeyAdded:
    tenant = tenant_id_for(name)
    return TenantKeyAdded(
        id=str(uuid.uuid4()),
        source="loyalty/cli",
        type="tenant.key_added",
        subject=tenant,
        tenant=tenant,
        time=now or datetime.now(UTC),
        data=TenantKeyAddedData(name=name, key_hash=hash_key(key)),
    )


async def fold_tenant_keys(uow: UnitOfWork, events: Sequence[Inbound]) -> None:
    """Handler for the ``tenants`` topic: upsert each key hash."""
    rows = [
        {"h": ev.event.data.key_hash, "t": ev.event.tenant, "n": ev.event.data.name}
        for ev in events
        if isinstance(ev.event, TenantKeyAdded)
    ]
    if rows:
        await uow.conn.execute(
            text(
                "INSERT INTO api_keys (key_hash, tenant, name) VALUES (:h, :t, :n)"
                " ON CONFLICT (key_hash) DO NOTHING"
            ),
            rows,
        )


class TenantKeys:
    """Resolves a bearer key to its tenant, with a short positive cache."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 10.0) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant_for(self, key: str) -> str | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        async with self._engine.connect() as conn:
            tenant = (
                await conn.execute(
                    text("SELECT tenant FROM api_keys WHERE key_hash = :h"), {"h": digest}
                )
            ).scalar_one_or_none()
        if tenant is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (tenant, now + self._ttl)
        return tenant
