"""``POST /v1/events``: one CloudEvent or a batch of up to 1,000, in any of the
CloudEvents HTTP content modes: structured (``application/cloudevents+json``),
batch (``application/cloudevents-batch+json``) or binary (attributes in ``ce-*``
headers, ``data`` the JSON body; recognised by its ``ce-specversion`` header)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas.events import CATALOG, MAX_EXTENSION_VALUE, topic_family
from services.ingest.adapters.kafka import BrokerUnavailable, KafkaEventPublisher
from services.ingest.domain import (
    MAX_BATCH,
    MAX_EXTENSIONS,
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
from services.runtime.problems import (
    BATCH_TOO_LARGE,
    BODY_TOO_LARGE,
    INVALID_EVENTS,
    UNAVAILABLE,
    ProblemError,
    problems,
    unavailable_headers,
)
from services.runtime.service import TENANT_PROBLEMS, IngestTenantDep

router = APIRouter(responses=TENANT_PROBLEMS)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class EventsAccepted(BaseModel):
    """Every event of the request, acknowledged by the broker."""

    accepted: int = Field(ge=0, description="How many events were accepted.")
    ids: list[str] = Field(description="Their ids, in the order posted.")


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _posted_event_schema(model: type[Any]) -> dict[str, Any]:
    # a producer's event: the catalog's, without the tenant (the key says it)
    schema = _inline(model.model_json_schema())
    schema["properties"].pop("tenant", None)
    schema["required"] = [r for r in schema.get("required", []) if r != "tenant"]
    schema["not"] = {"required": ["tenant"], "description": "the tenant comes from the key"}
    # extension attributes (any other name of the CloudEvents naming rule, as the
    # catalog's schema says), with ingest's limits
    schema["additionalProperties"] = {
        **schema.get("additionalProperties", {}),
        "maxLength": MAX_EXTENSION_VALUE,
    }
    schema["maxProperties"] = len(schema["properties"]) + MAX_EXTENSIONS
    return schema


def _request_body() -> dict[str, Any]:
    event = {
        "oneOf": [_posted_event_schema(m) for t, m in CATALOG.items() if topic_family(t)],
        "description": "A CloudEvent of a product.*, billing.* or support.* type"
        " (schemas/json/ has each type's schema).",
    }
    batch = {"type": "array", "items": event, "maxItems": MAX_BATCH}
    return {
        "required": True,
        "description": "One CloudEvent (structured mode) or an array of up to"
        f" {MAX_BATCH} (batch mode); application/json takes either. In the binary"
        " mode the attributes are ce-* headers and the body is the event's JSON data.",
        "content": {
            SINGLE: {"schema": event},
            BATCH: {"schema": batch},
            "application/json": {"schema": {"anyOf": [event, batch]}},
        },
    }


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
    response_model=EventsAccepted,
    responses=problems(
        {
            400: "the body is not JSON, nests too deeply, or is not an event or an array",
            413: "the body is over the limit (body-too-large) or the batch holds more than"
            f" {MAX_BATCH} events (batch-too-large)",
            415: "not a CloudEvents JSON content type (nor the binary mode with JSON data)",
            422: "invalid events (invalid-events: errors by index, field and reason;"
            " nothing was accepted) or parameters (invalid-request)",
            503: "the broker did not acknowledge; retry the whole request after"
            " Retry-After seconds (repeated ids are dropped)",
        }
    ),
    openapi_extra={"requestBody": _request_body()},
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
    """Accepts events; 202 only once the broker acknowledged every one of them.

    Content modes: structured (``application/cloudevents+json``), batch
    (``application/cloudevents-batch+json``), ``application/json`` (an event or an
    array), or binary (``ce-specversion`` and the other attributes as ``ce-*``
    headers, the event's data as a JSON body)."""
    settings = request.app.state.settings
    arrival = Arrival(now=datetime.now(UTC), max_clock_skew=settings.max_clock_skew)
    content_type = request.headers.get("content-type", "")
    ctype = content_type.split(";")[0].strip().lower()
    # the HTTP binding: an application/cloudevents* type is the structured (or batch)
    # mode whatever the headers; otherwise ce-specversion marks the binary mode
    binary = "ce-specversion" in request.headers and not ctype.startswith("application/cloudevents")
    if binary and not is_json_media_type(content_type):
        raise ProblemError(
            415,
            f"unsupported content type {ctype[:100]!r} for the binary content mode: data must"
            " be JSON (application/json, text/json or application/*+json)",
        )
    if not binary and ctype not in (SINGLE, BATCH, "application/json"):
        raise ProblemError(
            415,
            f"unsupported content type {ctype[:100]!r}; use {SINGLE}, {BATCH}, or the binary"
            " content mode (ce-* headers, JSON data)",
        )
    limit: int = settings.ingest_max_body_bytes
    body = await _read_limited(request, limit)
    if body is None:
        raise ProblemError(
            413,
            f"body larger than the limit of {limit} bytes",
            type=BODY_TOO_LARGE,
            max_body_bytes=limit,
        )
    try:
        raw = parse_body(body)
    except MalformedBody as exc:
        raise ProblemError(400, str(exc)) from None
    try:
        if binary:
            events, errors = validate_binary(
                request.headers.items(), content_type, raw, tenant, arrival
            )
        else:
            batch = ctype == BATCH or (ctype == "application/json" and isinstance(raw, list))
            events, errors = validate(raw, tenant, batch, arrival)
    except BatchTooLarge as exc:
        raise ProblemError(
            413, str(exc), type=BATCH_TOO_LARGE, max_batch_events=MAX_BATCH
        ) from None
    except NotAnEventList as exc:
        raise ProblemError(400, str(exc)) from None
    if errors:
        first = errors[0]
        raise ProblemError(
            422,
            f"{len(errors)} error(s) in the events, nothing was accepted; the first: event"
            f" {first.index}, {first.field}: {first.reason}",
            type=INVALID_EVENTS,
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
        raise ProblemError(
            503,
            f"broker unavailable: {exc}; nothing may have been accepted,"
            " retry the whole request (duplicates are dropped by id)",
            type=UNAVAILABLE,
            headers=unavailable_headers(),
        ) from None
    accepted = EventsAccepted(accepted=len(events), ids=[e.id for e in events])
    return JSONResponse(accepted.model_dump(), status_code=202)
