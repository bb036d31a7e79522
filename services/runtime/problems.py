"""One error shape for every service: RFC 9457 problem details.

Every 4xx and 5xx answer of every service is ``application/problem+json``::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no offer 'o-1' in this tenant"}

``title`` is the same for every occurrence of a ``type``, ``detail`` says what
happened this time. ``about:blank`` means no more than the HTTP status; the types
below carry extension members (``errors``, ``required_scope``, ...) and are
``tag:`` URIs (RFC 4151): names, not pages to fetch (docs/http.md documents them).

The handlers (:func:`install_problem_handlers`, called once by ``base_app``) turn
``HTTPException`` (and :class:`ProblemError`, which names a type and extensions),
``RequestValidationError`` and any unhandled exception into problems; routes
declare theirs with :func:`problems` and :func:`document_problems` gives them
their media type in the OpenAPI document.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from schemas.events import Scope
from services.runtime.errors import describe_error, is_transient

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
ABOUT_BLANK = "about:blank"
_TAG = "tag:loyalty-engine,2025:"
INVALID_REQUEST = _TAG + "invalid-request"
"""422: a parameter or the body failed validation; ``errors`` names each field."""
INVALID_EVENTS = _TAG + "invalid-events"
"""422 (ingest): events of the request are invalid, so none was accepted; ``errors``
names each by ``index`` in the batch (0 for a single event), ``field`` and ``reason``."""
MISSING_SCOPE = _TAG + "missing-scope"
"""403: the key's scope may not use the route; ``required_scope`` is what it needs."""
BODY_TOO_LARGE = _TAG + "body-too-large"
"""413: the body is over ``max_body_bytes``."""
BATCH_TOO_LARGE = _TAG + "batch-too-large"
"""413 (ingest): a batch of more than ``max_batch_events`` events."""
UNAVAILABLE = _TAG + "unavailable"
"""503: the broker or the database did not answer; retry after ``Retry-After`` s."""

RETRY_AFTER_S = 5
_TITLES = {
    INVALID_REQUEST: "Invalid request",
    INVALID_EVENTS: "Invalid events",
    MISSING_SCOPE: "Scope does not allow this route",
    BODY_TOO_LARGE: "Body too large",
    BATCH_TOO_LARGE: "Batch too large",
    UNAVAILABLE: "Service unavailable",
}


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        default=ABOUT_BLANK,
        description="The problem type: about:blank (no more than the HTTP status) or one of"
        " this system's tag: URIs (see docs/http.md).",
    )
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="What happened this time, for people.")


class FieldError(BaseModel):
    """One reason a request, or one event of a posted batch, was refused."""

    model_config = ConfigDict(extra="forbid")

    index: int | None = Field(
        default=None,
        ge=0,
        description="The event's position in the posted batch (0 for a single event);"
        " absent when a request parameter or body field is meant.",
    )
    field: str = Field(
        description="The field: an event attribute or data path (data.amount.amount), a"
        " ce-* header, or where a request parameter is (query.limit, body.comment).",
    )
    reason: str


class ValidationProblem(Problem):
    """422: what was invalid, field by field (nothing of the request was done)."""

    type: Literal[
        "tag:loyalty-engine,2025:invalid-request", "tag:loyalty-engine,2025:invalid-events"
    ]
    errors: list[FieldError] = Field(min_length=1)


class ScopeProblem(Problem):
    """403: the key is valid but its scope may not use this route."""

    type: Literal["tag:loyalty-engine,2025:missing-scope"]
    required_scope: Scope = Field(
        description="The scope the route needs (or one that includes it)."
    )


class TooLargeProblem(Problem):
    """413: the body or the batch is over the limit."""

    type: Literal[
        "tag:loyalty-engine,2025:body-too-large", "tag:loyalty-engine,2025:batch-too-large"
    ]
    max_body_bytes: int | None = Field(default=None, description="The body limit (body-too-large).")
    max_batch_events: int | None = Field(
        default=None, description="Events per batch at most (batch-too-large)."
    )


PROBLEM_MODELS: tuple[type[Problem], ...] = (
    Problem,
    ValidationProblem,
    ScopeProblem,
    TooLargeProblem,
)

_MODEL_FOR_STATUS: dict[int, type[Problem]] = {
    403: ScopeProblem,
    413: TooLargeProblem,
    422: ValidationProblem,
}
_HEADERS_FOR_STATUS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    },
}


class ProblemError(HTTPException):
    """Answers a problem of a given ``type`` with extension members (``errors``, ...).

    A plain ``HTTPException`` answers an ``about:blank`` problem with its detail."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = ABOUT_BLANK,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(status, detail, headers=dict(headers) if headers else None)
        self.type = type
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    *,
    type: str = ABOUT_BLANK,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """The ``application/problem+json`` answer (extension members that are None are left out)."""
    title = _TITLES.get(type) or _phrase(status)
    body = {"type": type, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extensions.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


def field_of(loc: Sequence[Any]) -> str:
    """``("query", "limit")`` -> ``query.limit``."""
    return ".".join(str(part) for part in loc) or "request"


async def _http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    if isinstance(exc, ProblemError):
        return problem_response(
            exc.status_code, detail, type=exc.type, headers=exc.headers, **exc.extensions
        )
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _validation_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(field=field_of(e.get("loc", ())), reason=str(e.get("msg", "invalid")))
        for e in exc.errors()
    ] or [FieldError(field="request", reason="invalid")]
    shown = "; ".join(f"{e.field}: {e.reason}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return problem_response(
        422,
        f"the request is invalid: {shown}{more}",
        type=INVALID_REQUEST,
        errors=[e.model_dump(exclude_none=True) for e in errors],
    )


async def _unhandled_problem(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception once this answer is sent, for the server to
    # log it with its traceback: one line with the request here is enough
    what = f"{request.method} {request.url.path[:200]}"
    if is_transient(exc):
        log.warning("%s: answered 503: %s", what, describe_error(exc))
        return problem_response(
            503,
            "a backing service (database or broker) did not answer; retry later",
            type=UNAVAILABLE,
            headers=unavailable_headers(),
        )
    log.error("%s: answered 500: %s", what, describe_error(exc))
    return problem_response(500, "an internal error; it was logged")


def install_problem_handlers(app: FastAPI) -> None:
    """Every error of ``app`` as a problem: HTTP errors, invalid requests, and any
    unhandled exception (503 with Retry-After when the infrastructure failed, 500
    otherwise; logged either way)."""
    app.add_exception_handler(HTTPException, _http_problem)
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(Exception, _unhandled_problem)


def problems(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses (status -> description): each a
    problem of the model that status carries (:class:`ScopeProblem` for 403, ...), with
    its headers (``WWW-Authenticate`` for 401, ``Retry-After`` for 503)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, description in described.items():
        entry: dict[str, Any] = {
            "model": _MODEL_FOR_STATUS.get(status, Problem),
            "description": description,
        }
        if status in _HEADERS_FOR_STATUS:
            entry["headers"] = _HEADERS_FOR_STATUS[status]
        out[status] = entry
    return out


_REF = "#/components/schemas/"
_FASTAPI_422 = {"HTTPValidationError", "ValidationError"}


def document_problems(doc: dict[str, Any]) -> dict[str, Any]:
    """Rewrites a FastAPI OpenAPI document in place so that it tells how errors look:
    every problem schema is served as ``application/problem+json``, FastAPI's own
    422 (``HTTPValidationError``) becomes the :class:`ValidationProblem` it really is,
    and a route with a body declares the 400 FastAPI answers when it cannot read it."""
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in PROBLEM_MODELS:
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas.setdefault(model.__name__, schema)
    names = {_REF + m.__name__ for m in PROBLEM_MODELS}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:
                # FastAPI's answer to a body it cannot decode (not UTF-8, say)
                operation["responses"].setdefault(
                    "400",
                    {
                        "description": "the body could not be read",
                        "content": {PROBLEM_JSON: {"schema": {"$ref": _REF + "Problem"}}},
                    },
                )
            for status, response in operation.get("responses", {}).items():
                if not status[:1].isdigit() or int(status) < 400:
                    continue
                content = response.get("content", {})
                for media in list(content):
                    ref = content[media].get("schema", {}).get("$ref")
                    if ref == _REF + "HTTPValidationError":
                        del content[media]
                        content[PROBLEM_JSON] = {"schema": {"$ref": _REF + "ValidationProblem"}}
                        response["description"] = "invalid parameters or body (errors name each)"
                    elif ref in names:
                        content[PROBLEM_JSON] = content.pop(media)
    text = json.dumps(doc.get("paths", {}))
    for name in _FASTAPI_422:
        if f'"{_REF}{name}"' not in text:
            schemas.pop(name, None)
    return doc
