"""segmenter app: wiring and lifespan.

In live mode the days of a tenant roll over when a round of clock ticks has been
read on every input partition (``services/runtime/ticks.py``): time moves
without traffic, and a replay of the topics, ticks included, rolls over at the
same places."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from services.runtime.batch import FaultHook
from services.runtime.program_file import read_program
from services.runtime.service import ServiceSpec, consuming_app
from services.runtime.ticks import TICKED_TOPICS
from services.segmenter.api import router
from services.segmenter.config import SegmenterSettings
from services.segmenter.domain.program import SegmenterProgram, load_program
from services.segmenter.handlers import SegmenterHandler

TOPICS = TICKED_TOPICS
"""The segmenter reads every ticked topic: a round completes only where all are read."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


def spec(program: SegmenterProgram, clock: Callable[[], datetime] | None) -> ServiceSpec:
    handler = SegmenterHandler(program, clock)
    return ServiceSpec(
        name="segmenter",
        migrations=Path(__file__).parent / "migrations",
        handlers=dict.fromkeys(TOPICS, handler),
    )


def load(settings: SegmenterSettings) -> SegmenterProgram:
    return load_program(read_program(settings.program))


def create_app(
    settings: SegmenterSettings | None = None, fault: FaultHook | None = None
) -> FastAPI:
    settings = settings or SegmenterSettings()
    program = load(settings)
    live = settings.segmenter_clock == "live"
    return consuming_app(
        spec(program, wall_clock if live else None), settings, program, router, fault
    )
