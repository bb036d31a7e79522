"""insights app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.insights.api import router
from services.insights.domain.program import InsightsProgram, load_insights_program
from services.insights.handlers import SIGNALS, InsightsHandler
from services.runtime.batch import FaultHook
from services.runtime.config import Settings
from services.runtime.program_file import read_program
from services.runtime.service import ServiceSpec, consuming_app
from services.runtime.topics import ACCOUNT_TOPICS

TOPICS = tuple(t for t in ACCOUNT_TOPICS if t != SIGNALS)
"""Every account topic but the one it writes."""


def load(settings: Settings) -> InsightsProgram:
    return load_insights_program(read_program(settings.program))


def spec(program: InsightsProgram) -> ServiceSpec:
    handler = InsightsHandler(program)
    return ServiceSpec(
        name="insights",
        migrations=Path(__file__).parent / "migrations",
        handlers=dict.fromkeys(TOPICS, handler),
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    settings = settings or Settings()
    program = load(settings)
    return consuming_app(spec(program), settings, program, router, fault)
