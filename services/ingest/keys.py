"""Admin-scoped key management over HTTP: list, create, revoke and rotate a
tenant's keys. Ingest holds the producer, so it writes the key events to the
``tenants`` topic; every service (ingest too) learns them from there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Scope, TenantKeyAdded, TenantKeyRevoked
from services.runtime.connections import kafka_connection
from services.runtime.service import AdminDep, ServiceRuntime
from services.runtime.tenants import (
    KeyRecord,
    key_added_event,
    key_revoked_event,
    new_api_key,
    publish_key_event,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """A new key: what it may do and who holds it."""

    model_config = ConfigDict(extra="forbid")
    scope: Scope
    holder: str = Field(min_length=1, max_length=200)


class KeyRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


def _public(k: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "scope": k.scope,
        "holder": k.holder,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "revoked_by": k.revoked_by,
    }


async def _publish(request: Request, event: TenantKeyAdded | TenantKeyRevoked) -> None:
    runtime: ServiceRuntime = request.app.state.runtime
    settings = runtime.settings
    await publish_key_event(kafka_connection(settings), runtime.names, settings.partitions, event)


async def _find(request: Request, tenant: str, key_id: str) -> KeyRecord:
    for k in await request.app.state.tenant_keys.keys(tenant):
        if k.key_id == key_id:
            if k.revoked_at is not None:
                raise HTTPException(409, f"key {key_id} was revoked at {k.revoked_at}")
            return k  # type: ignore[no-any-return]
    raise HTTPException(404, f"no key {key_id!r} in this tenant")


@router.get("")
async def list_keys(caller: AdminDep, request: Request) -> dict[str, Any]:
    """The tenant's keys (never the keys themselves), newest first."""
    return {"keys": [_public(k) for k in await request.app.state.tenant_keys.keys(caller.tenant)]}


@router.post("", status_code=201)
async def create_key(caller: AdminDep, request: Request, body: KeyCreate) -> dict[str, Any]:
    """A new key of the tenant, returned once; services accept it within seconds."""
    key = new_api_key()
    event = key_added_event(caller.tenant, key, scope=body.scope, holder=body.holder)
    await _publish(request, event)
    return {"key": key, "key_id": event.data.key_id, "scope": body.scope, "holder": body.holder}


@router.post("/{key_id}/revoke")
async def revoke_key(
    key_id: str, caller: AdminDep, request: Request, body: KeyRevoke | None = None
) -> dict[str, Any]:
    """Every service refuses the key within seconds; the revocation names who did it."""
    found = await _find(request, caller.tenant, key_id)
    reason = body.reason if body else None
    await _publish(request, key_revoked_event(caller.tenant, found.key_hash, caller.holder, reason))
    return {"key_id": key_id, "revoked_by": caller.holder}


@router.post("/{key_id}/rotate", status_code=201)
async def rotate_key(key_id: str, caller: AdminDep, request: Request) -> dict[str, Any]:
    """A new key of the same scope and holder, returned once; the old one is revoked."""
    found = await _find(request, caller.tenant, key_id)
    key = new_api_key()
    event = key_added_event(found.name, key, scope=found.scope, holder=found.holder)
    await _publish(request, event)
    await _publish(
        request, key_revoked_event(caller.tenant, found.key_hash, caller.holder, "rotated")
    )
    return {
        "key": key,
        "key_id": event.data.key_id,
        "scope": found.scope,
        "holder": found.holder,
        "replaces": key_id,
    }
