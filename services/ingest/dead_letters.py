"""Admin-scoped dead letters over HTTP: list, show, replay and discard what the
consumers quarantined in ``<topic>.dlq`` (``services.runtime.dlq`` does the work;
``loyalty dlq`` is the same on the command line). A tenant's admin key sees and acts
on its own tenant's dead letters only; the audit records the key's holder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Literal

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.runtime import dlq
from services.runtime.problems import UNAVAILABLE, ProblemError, problems, unavailable_headers
from services.runtime.service import TENANT_PROBLEMS, AdminDep, PlainText, ServiceRuntime

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"], responses=TENANT_PROBLEMS)

DeadLetterId = Annotated[
    str,
    Path(
        pattern=dlq.ID_PATTERN,
        max_length=240,
        description="A dead letter's id: `{dead-letter topic}:{partition}:{offset}`.",
    ),
]
Topic = Literal[
    "events.product",
    "events.billing",
    "events.support",
    "segments.changes",
    "offers.decisions",
    "credits.decisions",
    "insights.signals",
    "events.product.dlq",
    "events.billing.dlq",
    "events.support.dlq",
    "segments.changes.dlq",
    "offers.decisions.dlq",
    "credits.decisions.dlq",
    "insights.signals.dlq",
]
"""A source topic or its dead-letter topic (logical names, without the prefix); spelt
out for the OpenAPI enum, and checked against schemas.topics by tests/unit/test_dlq.py."""
Reason = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[^\x00]*$")]
_FOUND = problems({404: "no dead letter of this id in the tenant"})
_OPEN = problems(
    {
        404: "no dead letter of this id in the tenant",
        409: "the dead letter was already replayed or discarded (or, for a replay, is"
        " older than the dedupe retention)",
    }
)


class DeadLetterPublic(BaseModel):
    """A dead letter as listed. Topics are logical (without the prefix); ``tenant``,
    ``event_id`` and ``type`` are null for a record without (valid) CloudEvents headers."""

    id: str = Field(description="`{topic}:{partition}:{offset}`: where it sits, never changes.")
    topic: str = Field(description="The dead-letter topic.")
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    service: str | None = Field(description="The service that dead-lettered it.")
    reason: str | None
    event_id: str | None
    type: str | None
    tenant: str | None
    dead_lettered_at: datetime | None
    status: dlq.Status
    preview: str = Field(description="The value's start as text (invalid bytes as \\xNN).")


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterPublic] = Field(
        description="In id order (topic, partition, offset)."
    )
    next: str | None = Field(description="Pass as `after` for the next page; null at the end.")


class AuditPublic(BaseModel):
    action: Literal["replayed", "discarded"]
    actor: str = Field(description="The holder of the key (or the operator) who did it.")
    comment: str | None
    at: datetime


class DeadLetterDetail(DeadLetterPublic):
    headers: dict[str, str] = Field(description="Every header as text (invalid bytes as \\xNN).")
    value: str = Field(description="The value as text (invalid bytes as \\xNN).")
    audit: list[AuditPublic] = Field(description="Oldest first.")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: PlainText | None = None


class ReplayReasonRequest(BaseModel):
    """Replay every open dead letter with exactly this reason (of one topic, or all)."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason
    topic: Topic | None = None
    comment: PlainText | None = None


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")]


class Where(BaseModel):
    topic: str
    partition: int
    offset: int


class ReplayedPublic(BaseModel):
    id: str
    status: Literal["replayed"]
    replayed_to: Where = Field(description="Where the replayed record was written.")


class ReplayedMany(BaseModel):
    replayed: int = Field(description="How many dead letters were marked replayed.")
    ids: list[str] = Field(
        description="Their ids; those of one source record share one replayed record."
    )


class Discarded(BaseModel):
    id: str
    status: Literal["discarded"]


def _public(e: dlq.DeadLetter) -> DeadLetterPublic:
    return DeadLetterPublic(
        id=e.id,
        topic=e.topic,
        source_topic=e.source_topic,
        source_partition=e.source_partition,
        source_offset=e.source_offset,
        service=e.service,
        reason=e.reason,
        event_id=e.event_id,
        type=e.type,
        tenant=e.tenant,
        dead_lettered_at=e.dead_lettered_at,
        status=e.status,
        preview=e.preview,
    )


@asynccontextmanager
async def _dead_letters(request: Request) -> AsyncIterator[dlq.DeadLetters]:
    """The operations, with the errors they raise as problems."""
    runtime: ServiceRuntime = request.app.state.runtime
    try:
        yield dlq.DeadLetters(
            runtime.kafka,
            runtime.names,
            runtime.engine,
            dedupe_retention=timedelta(days=runtime.settings.dedupe_retention_days),
            log=request.app.state.dead_letter_log,
        )
    except dlq.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except dlq.NotOpen as exc:
        raise HTTPException(409, str(exc)) from None
    except dlq.DeadLetterError as exc:
        raise HTTPException(422, str(exc)) from None
    except KafkaError as exc:
        raise ProblemError(
            503,
            f"the broker did not answer ({type(exc).__name__}); retry later",
            type=UNAVAILABLE,
            headers=unavailable_headers(),
        ) from None


@router.get("")
async def list_dead_letters(
    caller: AdminDep,
    request: Request,
    topic: Annotated[
        Topic | None, Query(description="A source topic or its dead-letter topic (default: all).")
    ] = None,
    reason: Annotated[
        str | None,
        Query(max_length=2000, pattern=r"^[^\x00]*$", description="A substring of the reason."),
    ] = None,
    status: dlq.StatusFilter = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None, Query(pattern=dlq.ID_PATTERN, max_length=240, description="`next` of a page.")
    ] = None,
) -> DeadLetterList:
    """The tenant's dead letters, with their reason, source offset and status."""
    query = dlq.Query(topic=topic, reason=reason, status=status, limit=limit, after=after)
    async with _dead_letters(request) as letters:
        page = await letters.page(query, tenant=caller.tenant)
    return DeadLetterList(dead_letters=[_public(e) for e in page.dead_letters], next=page.next)


@router.post("/replay")
async def replay_by_reason(
    caller: AdminDep, request: Request, body: ReplayReasonRequest
) -> ReplayedMany:
    """Replays every open dead letter of the tenant with exactly ``reason`` to its
    source topic (each source record once), audited with the key's holder."""
    async with _dead_letters(request) as letters:
        done = await letters.replay_reason(
            body.reason, caller.holder, body.comment, topic=body.topic, tenant=caller.tenant
        )
    ids = [i for r in done for i in (r.id, *r.siblings)]
    return ReplayedMany(replayed=len(ids), ids=ids)


@router.get("/{dead_letter_id}", responses=_FOUND)
async def show_dead_letter(
    dead_letter_id: DeadLetterId, caller: AdminDep, request: Request
) -> DeadLetterDetail:
    """One dead letter: its headers, its value and its audit trail."""
    async with _dead_letters(request) as letters:
        detail = await letters.show(dead_letter_id, tenant=caller.tenant)
    return DeadLetterDetail(
        **_public(detail.entry).model_dump(),
        headers=detail.headers,
        value=detail.value,
        audit=[
            AuditPublic(action=a.action, actor=a.actor, comment=a.comment, at=a.at)
            for a in detail.audit
        ],
    )


@router.post("/{dead_letter_id}/replay", responses=_OPEN)
async def replay_dead_letter(
    dead_letter_id: DeadLetterId,
    caller: AdminDep,
    request: Request,
    body: ReplayRequest | None = None,
) -> ReplayedPublic:
    """Writes the original record (key, value, headers without the ``dlq_*`` ones, and
    ``loyalty_replay_of``) to its source topic and partition; the services that had
    applied it drop it by its event id. Other open dead letters of the same source
    record (other services') are marked replayed with it."""
    async with _dead_letters(request) as letters:
        done = await letters.replay(
            dead_letter_id, caller.holder, body.comment if body else None, tenant=caller.tenant
        )
    return ReplayedPublic(
        id=done.id,
        status="replayed",
        replayed_to=Where(topic=done.topic, partition=done.partition, offset=done.offset),
    )


@router.post("/{dead_letter_id}/discard", responses=_OPEN)
async def discard_dead_letter(
    dead_letter_id: DeadLetterId, caller: AdminDep, request: Request, body: DiscardRequest
) -> Discarded:
    """Marks a dead letter discarded (it stays on its topic), with the reason."""
    async with _dead_letters(request) as letters:
        await letters.discard(dead_letter_id, caller.holder, body.reason, tenant=caller.tenant)
    return Discarded(id=dead_letter_id, status="discarded")
