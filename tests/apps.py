"""Running service apps in-process with their real lifespans (real broker, real DB)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from services.runtime.config import Settings
from services.runtime.service import ServiceRuntime


@asynccontextmanager
async def running(*apps: FastAPI) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Starts each app's lifespan; yields an HTTP client per app."""
    async with AsyncExitStack() as stack:
        clients = []
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://test"
                    )
                )
            )
        yield clients


def runtime_of(app: FastAPI) -> ServiceRuntime:
    rt: ServiceRuntime = app.state.runtime
    return rt


AppFactory = Callable[[Settings], FastAPI]
