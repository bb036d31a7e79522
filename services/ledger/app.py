"""ledger app: wiring and lifespan."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.ledger.api import router
from services.ledger.domain.program import LedgerProgram, load_ledger_program
from services.ledger.handlers import LedgerHandler
from services.runtime.batch import FaultHook
from services.runtime.config import Settings
from services.runtime.program_file import read_program
from services.runtime.service import ServiceSpec, consuming_app

TOPICS = ("offers.decisions", "events.billing", "segments.changes")


def load(settings: Settings) -> LedgerProgram:
    return load_ledger_program(read_program(settings.program))


def spec(program: LedgerProgram | None = None) -> ServiceSpec:
    handler = LedgerHandler(program or LedgerProgram())
    return ServiceSpec(
        name="ledger",
        migrations=Path(__file__).parent / "migrations",
        handlers=dict.fromkeys(TOPICS, handler),
    )


def create_app(settings: Settings | None = None, fault: FaultHook | None = None) -> FastAPI:
    settings = settings or Settings()
    program = load(settings)
    return consuming_app(spec(program), settings, program, router, fault)
