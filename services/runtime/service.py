"""Wiring shared by the services: engine, migrations, incarnation check,
consumer worker, outbox relay, metrics, and the base FastAPI app (``/health``,
``/ready``, ``/metrics``; every error an RFC 9457 problem, see ``problems.py``)
with what the services' routes share: the scoped-key dependencies and the
responses they add, path-id and free-text types, CSV answers."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import Scope
from services.runtime.batch import FaultHook, Handler
from services.runtime.config import Settings
from services.runtime.connections import kafka_connection
from services.runtime.db import RUNTIME_MIGRATIONS, engine_for, migrate
from services.runtime.housekeeping import housekeeper
from services.runtime.http_metrics import HttpMetrics
from services.runtime.metrics import RuntimeMetrics
from services.runtime.problems import (
    MISSING_SCOPE,
    ProblemError,
    document_problems,
    install_problem_handlers,
    problems,
)
from services.runtime.relay import OutboxRelay
from services.runtime.tenants import ALLOWED, Caller, TenantKeys, fold_tenant_keys
from services.runtime.ticks import Ticker
from services.runtime.topics import TENANTS, TopicNames, broker_incarnation, ensure_topics
from services.runtime.worker import ConsumerWorker

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    """What makes a service: its name, schema, migrations and topic handlers."""

    name: str
    migrations: Path | None = None
    handlers: dict[str, Handler] = field(default_factory=dict)
    schema: str | None = None

    @property
    def db_schema(self) -> str:
        return self.schema or self.name


class ServiceRuntime:
    """Starts and stops everything a service runs besides its HTTP routes."""

    def __init__(
        self, spec: ServiceSpec, settings: Settings, fault: FaultHook | None = None
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.metrics = RuntimeMetrics(spec.name)
        self.kafka = kafka_connection(settings)
        self.engine: AsyncEngine = engine_for(settings, spec.db_schema)
        self.tenant_keys = TenantKeys(self.engine)
        self.fault = fault
        self.relay = OutboxRelay(
            service=spec.name,
            schema=spec.db_schema,
            engine=self.engine,
            kafka=self.kafka,
            metrics=self.metrics,
            fault=fault,
            topic_prefix=settings.topic_prefix,
        )
        handlers = {TENANTS: fold_tenant_keys, **spec.handlers}
        self.worker = ConsumerWorker(
            service=spec.name,
            engine=self.engine,
            kafka=self.kafka,
            names=self.names,
            handlers=handlers,
            metrics=self.metrics,
            on_committed=self.relay.wake,
            fault=fault,
            session_timeout_ms=settings.session_timeout_ms,
            max_records=settings.batch_max_records,
            poll_ms=settings.consumer_poll_ms,
            linger_ms=settings.batch_linger_ms,
            max_clock_skew=settings.max_clock_skew,
            max_attempts=settings.max_attempts,
        )
        self.housekeeper = housekeeper(spec.name, self.engine, settings.dedupe_retention_days)
        # every instance of every service competes for the one ticker lock
        self.ticker = Ticker(
            service=spec.name,
            engine=self.engine,
            kafka=self.kafka,
            names=self.names,
            interval=settings.tick_interval,
            metrics=self.metrics,
        )
        self.started = False

    async def start(self) -> None:
        components = {"runtime": RUNTIME_MIGRATIONS}
        if self.spec.migrations is not None:
            components[self.spec.name] = self.spec.migrations
        await _retry(
            lambda: migrate(self.engine, self.spec.db_schema, components),
            f"{self.spec.name}: database",
        )
        await _retry(
            lambda: ensure_topics(self.kafka, self.names, self.settings.partitions),
            f"{self.spec.name}: broker",
        )
        await self.check_incarnation()
        await self.housekeeper.start()
        await self.relay.start()
        await self.worker.start()
        await self.ticker.start()
        self.started = True

    async def stop(self) -> None:
        await self.ticker.stop()
        await self.housekeeper.stop()
        await self.worker.stop()
        await self.relay.stop()
        await self.engine.dispose()

    async def check_incarnation(self) -> None:
        """Drops stored offsets that belong to a topic set the broker no longer has."""
        current = await broker_incarnation(self.kafka, self.names)
        key = f"incarnation:{self.names.prefix}"
        async with self.engine.begin() as conn:
            stored = (
                await conn.execute(
                    text("SELECT value FROM runtime_meta WHERE name = :n FOR UPDATE"), {"n": key}
                )
            ).scalar_one_or_none()
            if stored == current:
                return
            if stored is not None:
                dropped = (
                    await conn.execute(
                        text("DELETE FROM consumer_offsets WHERE topic LIKE :p"),
                        {"p": self.names.prefix.replace("%", r"\%") + "%"},
                    )
                ).rowcount
                log.warning(
                    "%s: the broker's topics were recreated (incarnation %s -> %s);"
                    " dropped %d stored offsets, reading the new topics from the start",
                    self.spec.name,
                    stored,
                    current,
                    dropped,
                )
            await conn.execute(
                text(
                    "INSERT INTO runtime_meta (name, value) VALUES (:n, :v)"
                    " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
                ),
                {"n": key, "v": current},
            )

    @property
    def ready(self) -> bool:
        return self.started and self.worker.alive and self.relay.alive


async def _retry(step: Callable[[], Awaitable[object]], what: str, attempts: int = 30) -> None:
    delay = 0.2
    for attempt in range(attempts):
        try:
            await step()
            return
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            log.warning("%s not ready (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def current_caller(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of the bearer API key (any scope), or 401."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(401, "missing bearer API key", headers=_CHALLENGE)
    keys: TenantKeys = request.app.state.tenant_keys
    caller = await keys.caller_for(creds.credentials)
    if caller is None:
        raise HTTPException(401, "unknown or revoked API key", headers=_CHALLENGE)
    return caller


def scoped(route_scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, if its key's scope may use a ``route_scope``
    route; otherwise 403 saying which scope the route needs (``required_scope``)."""

    async def dependency(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if not caller.may(route_scope):
            raise ProblemError(
                403,
                f"this needs a key with the {route_scope!r} scope (or one that includes it:"
                f" {', '.join(sorted(ALLOWED[route_scope]))}); this key's scope is"
                f" {caller.scope!r}",
                type=MISSING_SCOPE,
                required_scope=route_scope,
            )
        return caller

    return dependency


async def _read_tenant(caller: Annotated[Caller, Depends(scoped("read"))]) -> str:
    return caller.tenant


TenantDep = Annotated[str, Depends(_read_tenant)]
"""The tenant of a key that may read (``read``, ``approve`` or ``admin``)."""
IngestDep = Annotated[Caller, Depends(scoped("ingest"))]


async def _ingest_tenant(caller: IngestDep) -> str:
    return caller.tenant


IngestTenantDep = Annotated[str, Depends(_ingest_tenant)]
"""The tenant of a key that may post events (``ingest`` or ``admin``)."""
ApproverDep = Annotated[Caller, Depends(scoped("approve"))]
AdminDep = Annotated[Caller, Depends(scoped("admin"))]

TENANT_PROBLEMS = problems(
    {
        401: "missing, unknown or revoked API key",
        403: "the key's scope may not use this route (required_scope names the one it needs)",
        503: "the database did not answer; retry after Retry-After seconds",
    }
)
"""What every tenant-scoped route can answer besides its own errors: the
``responses`` of each service's router."""

_ID_CHAR = r"[^\x00-\x20\x7f/\ufffd]"
PathId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=200,
        pattern=rf"^{_ID_CHAR}*[^\x00-\x20\x7f/\ufffd.]{_ID_CHAR}*$",
        description="An id as the events carry it: 1-200 characters, no space, control"
        " character, '/' or U+FFFD (what an undecodable byte becomes), not only dots.",
    ),
]
"""A path parameter naming an account, offer, approval or segment: bounded and
without what no id has (so a NUL never reaches Postgres, which refuses it, and an
undecodable or dot-only segment is a 422, not a lookup)."""

PlainText = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
"""Free text of a request body (a comment, a reason): what Postgres can store (no
NUL; a lone surrogate is refused by the pattern check as well)."""

Format = Literal["json", "csv"]
"""``?format=``: the JSON document, or its rows as CSV (``text/csv``)."""


def csv_response(rows: list[dict[str, Any]]) -> Response:
    """Rows as a ``text/csv`` body, the first row's keys as the header."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv")


def with_csv(description: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that answers its 200 as JSON or, with
    ``?format=csv``, as ``text/csv`` (the rows, a header line first)."""
    return {
        200: {
            "description": description,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


def consuming_app(
    spec: ServiceSpec,
    settings: Settings,
    program: object,
    router: APIRouter,
    fault: FaultHook | None = None,
) -> FastAPI:
    """A consuming service's app: its runtime, the base routes, its compiled
    program (``app.state.program``, for its routes) and its own routes."""
    runtime = ServiceRuntime(spec, settings, fault=fault)
    app = base_app(runtime, title=f"loyalty {spec.name}")
    app.state.program = program
    app.include_router(router)
    return app


class Health(BaseModel):
    status: Literal["ok"]
    service: str


class Readiness(BaseModel):
    """Ready: migrated, consuming and relaying (and the service's own checks)."""

    ready: bool
    consumer: bool
    relay: bool
    partitions: int = Field(ge=0, description="Partitions assigned to this instance.")


class Whoami(BaseModel):
    """The caller of a key: what audits name it (``holder``) and what it may do."""

    tenant: str
    scope: Scope
    holder: str
    key_id: str = Field(description="The key's public id (as ``GET /v1/keys`` lists it).")


class ServiceApp(FastAPI):
    """A service's FastAPI app, whose OpenAPI document tells how its errors look."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = document_problems(super().openapi())
        return self.openapi_schema


def base_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    extra_lifespan: Callable[[], Awaitable[None]] | None = None,
    extra_shutdown: Callable[[], Awaitable[None]] | None = None,
    extra_ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """A FastAPI app whose lifespan runs ``runtime``, with health, readiness and
    metrics, and whose every error is a problem (``services.runtime.problems``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if extra_lifespan is not None:
            await extra_lifespan()
        try:
            yield
        finally:
            if extra_shutdown is not None:
                await extra_shutdown()
            await runtime.stop()

    app = ServiceApp(
        title=title,
        lifespan=lifespan,
        responses=problems({500: "an internal error (logged)"}),
    )
    install_problem_handlers(app)
    app.add_middleware(HttpMetrics, metrics=runtime.metrics)
    app.state.runtime = runtime
    app.state.tenant_keys = runtime.tenant_keys

    def is_ready() -> bool:
        return runtime.ready and (extra_ready is None or extra_ready())

    runtime.metrics.ready.set_function(lambda: float(is_ready()))

    @app.get("/health", tags=["ops"])
    async def health() -> Health:
        """The process answers (liveness)."""
        return Health(status="ok", service=runtime.spec.name)

    @app.get(
        "/ready",
        tags=["ops"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready (yet)"}},
    )
    async def ready() -> JSONResponse:
        """Ready to serve (200) or not (503), with what is and is not running."""
        ok = is_ready()
        body = Readiness(
            ready=ok,
            consumer=runtime.worker.alive,
            relay=runtime.relay.alive,
            partitions=len(runtime.worker.assigned),
        )
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition format"}},
    )
    async def metrics() -> Response:
        """The service's Prometheus metrics (topic throughput, lag, errors, dead letters)."""
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/whoami", tags=["keys"], responses=TENANT_PROBLEMS)
    async def whoami(caller: Annotated[Caller, Depends(current_caller)]) -> Whoami:
        """Who the bearer key says the caller is: its tenant, scope and holder (any
        scope may ask; a console learns from it what to offer)."""
        return Whoami(
            tenant=caller.tenant, scope=caller.scope, holder=caller.holder, key_id=caller.key_id
        )

    return app
