"""ingest app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.ingest.adapters.kafka import KafkaEventPublisher
from services.ingest.api import router
from services.ingest.config import IngestSettings
from services.ingest.dead_letters import router as dead_letters_router
from services.ingest.keys import router as keys_router
from services.runtime.batch import FaultHook
from services.runtime.dlq import DeadLetterLog
from services.runtime.service import ServiceRuntime, ServiceSpec, base_app
from services.runtime.topics import TENANTS

SPEC_NAME = "ingest"
MIGRATIONS = Path(__file__).parent / "migrations"
"""ingest's own tables (the dead letters' status and audit)."""


def create_app(settings: IngestSettings | None = None, fault: FaultHook | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    runtime = ServiceRuntime(
        ServiceSpec(name=SPEC_NAME, migrations=MIGRATIONS), settings, fault=fault
    )
    publisher = KafkaEventPublisher(runtime.kafka, runtime.names, settings.ingest_ack_timeout_s)
    app = base_app(
        runtime,
        title="loyalty ingest",
        extra_lifespan=publisher.start,
        extra_shutdown=publisher.stop,
        extra_ready=lambda: publisher.connected and runtime.worker.caught_up(TENANTS),
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.dead_letter_log = DeadLetterLog()  # listings read only what is new
    app.include_router(router)
    app.include_router(keys_router)
    app.include_router(dead_letters_router)
    return app
