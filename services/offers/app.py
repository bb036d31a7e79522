"""offers app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.offers.handlers import apply_segment_changes
from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime, ServiceSpec, base_app
from services.runtime.worker import FaultHook


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="offers",
        migrations=Path(__file__).parent / "migrations",
        handlers={"segments.changes": apply_segment_changes},
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    runtime = ServiceRuntime(spec(), settings or Settings(), fault=fault)
    return base_app(runtime, title="loyalty offers")
