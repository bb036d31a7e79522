"""``POST /v1/events``: one CloudEvent or a batch of up to 1,000, in any of the
CloudEvents HTTP content modes: structured (``application/cloudevents+json``),
batch (``application/cloudevents-batch+json``) or binary (attributes in ``ce-*``
headers, ``data`` the JSON body; recognised by its ``ce-specversion`` header)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from services.ingest.adapters.kafka import BrokerUnavailable, KafkaEventPublisher
from services.ingest.domain import (
    Arrival,
    BatchTooLarge,
    MalformedBody,
    NotAnEventList,
    is_json_media_type,
    parse_body,
    topic_for,
    validate,
    validate_binary,
)
from services.runtime.service import IngestTenantDep

router = APIRouter()

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
RETRY_AFTER_S = 5


def _problem(status: int, title: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(
        {"title": title, "status": status, **extra}, status_code=status, headers=headers
    )


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


@router.post(
    "/v1/events",
    status_code=202,
    responses={
        400: {"description": "body not JSON, nested too deeply, or not an event / array"},
        401: {"description": "missing or unknown API key"},
        413: {"description": "body or batch too large"},
        415: {"description": "not a CloudEvents JSON content type"},
        422: {"description": "invalid events (by index, field and reason) or parameters"},
        503: {"description": "broker unavailable; retry after Retry-After seconds"},
    },
)
async def post_events(
    request: Request,
    tenant: IngestTenantDep,
    ordered: Annotated[
        bool,
        Query(
            description="The sender posts a history in time order: ingest brackets the"
            " batch with clock.watermark records on every input partition (its oldest"
            " event time before, its newest after), so that a segmenter in event-time"
            " mode folds the history in time order across partitions. Promises that no"
            " later request of the tenant holds an event older than this batch's newest."
        ),
    ] = False,
) -> JSONResponse:
    """Accepts events; 202 only once the broker acknowledged every one of them."""
    settings = request.app.state.settings
    arrival = Arrival(now=datetime.now(UTC), max_clock_skew=settings.max_clock_skew)
    content_type = request.headers.get("content-type", "")
    ctype = content_type.split(";")[0].strip().lower()
    # the HTTP binding: an application/cloudevents* type is the structured (or batch)
    # mode whatever the headers; otherwise ce-specversion marks the binary mode
    binary = "ce-specversion" in request.headers and not ctype.startswith("application/cloudevents")
    if binary and not is_json_media_type(content_type):
        return _problem(
            415,
            f"unsupported content type {ctype!r} for the binary content mode: data must be"
            " JSON (application/json, text/json or application/*+json)",
        )
    if not binary and ctype not in (SINGLE, BATCH, "application/json"):
        return _problem(
            415,
            f"unsupported content type {ctype!r}; use {SINGLE}, {BATCH}, or the binary"
            " content mode (ce-* headers, JSON data)",
        )
    limit: int = settings.ingest_max_body_bytes
    body = await _read_limited(request, limit)
    if body is None:
        return _problem(413, f"body larger than the limit of {limit} bytes", max_body_bytes=limit)
    try:
        raw = parse_body(body)
    except MalformedBody as exc:
        return _problem(400, str(exc))
    try:
        if binary:
            events, errors = validate_binary(
                request.headers.items(), content_type, raw, tenant, arrival
            )
        else:
            batch = ctype == BATCH or (ctype == "application/json" and isinstance(raw, list))
            events, errors = validate(raw, tenant, batch, arrival)
    except BatchTooLarge as exc:
        return _problem(413, str(exc))
    except NotAnEventList as exc:
        return _problem(400, str(exc))
    if errors:
        return _problem(
            422,
            "invalid events; nothing was accepted",
            errors=[{"index": e.index, "field": e.field, "reason": e.reason} for e in errors],
        )
    publisher: KafkaEventPublisher = request.app.state.publisher
    try:
        if ordered and events:
            await publisher.publish_watermark(tenant, min(e.time for e in events))
        await publisher.publish([(topic_for(e), e) for e in events])
        if ordered and events:
            await publisher.publish_watermark(tenant, max(e.time for e in events))
    except BrokerUnavailable as exc:
        return _problem(
            503,
            f"broker unavailable: {exc}; nothing may have been accepted,"
            " retry the whole request (duplicates are dropped by id)",
        )
    return JSONResponse({"accepted": len(events), "ids": [e.id for e in events]}, status_code=202)
