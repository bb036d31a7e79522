"""ledger app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.ledger.handlers import apply_offer_decisions
from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime, ServiceSpec, base_app
from services.runtime.worker import FaultHook


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="ledger",
        migrations=Path(__file__).parent / "migrations",
        handlers={"offers.decisions": apply_offer_decisions},
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    runtime = ServiceRuntime(spec(), settings or Settings(), fault=fault)
    return base_app(runtime, title="loyalty ledger")
