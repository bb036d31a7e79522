"""Admin-scoped key management over HTTP: list, create, revoke and rotate a
tenant's keys. Ingest holds the producer, so it writes the key events to the
``tenants`` topic; every service (ingest too) learns them from there."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Scope, TenantKeyAdded, TenantKeyRevoked
from services.runtime.connections import kafka_connection
from services.runtime.problems import problems
from services.runtime.service import (
    TENANT_PROBLEMS,
    AdminDep,
    PlainText,
    ServiceRuntime,
)
from services.runtime.tenants import (
    KeyRecord,
    key_added_event,
    key_revoked_event,
    new_api_key,
    publish_key_event,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=TENANT_PROBLEMS)

KeyId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{12}$", description="A key's public id (12 hex digits).")
]
_FOUND = problems(
    {
        404: "no key of this id in the tenant",
        409: "the key was already revoked",
    }
)


class KeyCreate(BaseModel):
    """A new key: what it may do and who holds it."""

    model_config = ConfigDict(extra="forbid")
    scope: Scope
    holder: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Who holds it (a person or a system): what audits record.",
    )


class KeyRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: PlainText | None = None


class KeyPublic(BaseModel):
    """A key as listed: never the key itself."""

    key_id: str
    scope: Scope
    holder: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class KeyList(BaseModel):
    keys: list[KeyPublic] = Field(description="Newest first.")


class KeyCreated(BaseModel):
    """A new key, shown this once (only its hash is kept)."""

    key: str
    key_id: str
    scope: Scope
    holder: str


class KeyRotated(KeyCreated):
    replaces: str = Field(description="The id of the key it replaces (now revoked).")


class KeyRevocation(BaseModel):
    key_id: str
    revoked_by: str = Field(description="The holder of the admin key that revoked it.")


def _public(k: KeyRecord) -> KeyPublic:
    return KeyPublic(
        key_id=k.key_id,
        scope=k.scope,
        holder=k.holder,
        created_at=k.created_at,
        revoked_at=k.revoked_at,
        revoked_by=k.revoked_by,
    )


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
async def list_keys(caller: AdminDep, request: Request) -> KeyList:
    """The tenant's keys (never the keys themselves), newest first."""
    return KeyList(
        keys=[_public(k) for k in await request.app.state.tenant_keys.keys(caller.tenant)]
    )


@router.post("", status_code=201)
async def create_key(caller: AdminDep, request: Request, body: KeyCreate) -> KeyCreated:
    """A new key of the tenant, returned once; services accept it within seconds."""
    key = new_api_key()
    event = key_added_event(caller.tenant, key, scope=body.scope, holder=body.holder)
    await _publish(request, event)
    return KeyCreated(key=key, key_id=event.data.key_id, scope=body.scope, holder=body.holder)


@router.post("/{key_id}/revoke", responses=_FOUND)
async def revoke_key(
    key_id: KeyId, caller: AdminDep, request: Request, body: KeyRevoke | None = None
) -> KeyRevocation:
    """Every service refuses the key within seconds; the revocation names who did it."""
    found = await _find(request, caller.tenant, key_id)
    reason = body.reason if body else None
    await _publish(request, key_revoked_event(caller.tenant, found.key_hash, caller.holder, reason))
    return KeyRevocation(key_id=key_id, revoked_by=caller.holder)


@router.post("/{key_id}/rotate", status_code=201, responses=_FOUND)
async def rotate_key(key_id: KeyId, caller: AdminDep, request: Request) -> KeyRotated:
    """A new key of the same scope and holder, returned once; the old one is revoked."""
    found = await _find(request, caller.tenant, key_id)
    key = new_api_key()
    event = key_added_event(found.name, key, scope=found.scope, holder=found.holder)
    await _publish(request, event)
    await _publish(
        request, key_revoked_event(caller.tenant, found.key_hash, caller.holder, "rotated")
    )
    return KeyRotated(
        key=key,
        key_id=event.data.key_id,
        scope=found.scope,
        holder=found.holder,
        replaces=key_id,
    )
