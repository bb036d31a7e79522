"""offers app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.offers.api import router
from services.offers.domain.program import OffersProgram, load_offers_program
from services.offers.handlers import OffersHandler
from services.runtime.batch import FaultHook
from services.runtime.config import Settings
from services.runtime.program_file import read_program
from services.runtime.service import ServiceSpec, consuming_app

TOPICS = (
    "segments.changes",
    "events.product",
    "events.billing",
    "events.support",
    "insights.signals",
)
"""What the offers service reads: segment transitions, the account events (for
event triggers and redemptions) and insights' signals (``bundle.ready``)."""


def load(settings: Settings) -> OffersProgram:
    return load_offers_program(read_program(settings.program))


def spec(program: OffersProgram) -> ServiceSpec:
    handler = OffersHandler(program)
    return ServiceSpec(
        name="offers",
        migrations=Path(__file__).parent / "migrations",
        handlers=dict.fromkeys(TOPICS, handler),
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    settings = settings or Settings()
    program = load(settings)
    return consuming_app(spec(program), settings, program, router, fault)
