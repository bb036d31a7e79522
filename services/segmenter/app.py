"""segmenter app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime, ServiceSpec, base_app
from services.runtime.worker import FaultHook
from services.segmenter.handlers import apply_account_events


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="segmenter",
        migrations=Path(__file__).parent / "migrations",
        handlers={"events.product": apply_account_events, "events.billing": apply_account_events},
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    runtime = ServiceRuntime(spec(), settings or Settings(), fault=fault)
    return base_app(runtime, title="loyalty segmenter")
