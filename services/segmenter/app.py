"""segmenter app: wiring, lifespan and the live-mode stream clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI

from services.runtime.periodic import Periodic
from services.runtime.program_file import read_program
from services.runtime.service import ServiceRuntime, ServiceSpec, base_app
from services.runtime.worker import FaultHook, UnitOfWork
from services.segmenter.adapters.db import PostgresAccountRepository
from services.segmenter.api import router
from services.segmenter.config import SegmenterSettings
from services.segmenter.domain.days import day_of
from services.segmenter.domain.program import SegmenterProgram, load_program
from services.segmenter.handlers import SegmenterHandler, tick_tenant

TOPICS = ("events.product", "events.billing", "events.support")


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


class StreamClock:
    """Live mode: every tick, rolls over tenants whose stream day ended by the wall
    clock, so that time-driven transitions happen without new events."""

    def __init__(
        self, runtime: ServiceRuntime, program: SegmenterProgram, interval_s: float
    ) -> None:
        self.runtime = runtime
        self.program = program
        self.interval_s = interval_s
        self.job = Periodic("segmenter-clock", interval_s, lambda: self.tick(wall_clock()))

    async def tick(self, now: datetime) -> int:
        """Rolls over the tenants whose stream day ended, moving time only as far as
        every partition of the input topics has been read to its end (by whichever
        instance owns it): a backlog is applied before time-driven transitions."""
        rt = self.runtime
        await rt.worker.record_progress(now)
        safe = await rt.worker.caught_up_everywhere(TOPICS)
        if safe is None:
            return 0
        now = min(now, safe) if safe < now - timedelta(seconds=self.interval_s * 3) else now
        published = 0
        async with rt.engine.connect() as conn:
            due = await PostgresAccountRepository(conn).clocks_due(
                day_of(now - self.program.allowed_lateness)
            )
        for tenant in due:
            async with rt.engine.begin() as conn:
                uow = UnitOfWork(conn, rt.names, rt.spec.name)
                published += await tick_tenant(uow, self.program, tenant, now)
                await uow.flush()
        if published:
            rt.relay.wake()
        return published


def create_app(
    settings: SegmenterSettings | None = None, fault: FaultHook | None = None
) -> FastAPI:
    settings = settings or SegmenterSettings()
    program = load(settings)
    live = settings.segmenter_clock == "live"
    runtime = ServiceRuntime(spec(program, wall_clock if live else None), settings, fault=fault)
    clock = StreamClock(runtime, program, settings.segmenter_tick_s)
    app = base_app(
        runtime,
        title="loyalty segmenter",
        extra_lifespan=clock.job.start if live else None,
        extra_shutdown=clock.job.stop if live else None,
    )
    app.state.program = program
    app.state.stream_clock = clock
    app.include_router(router)
    return app
