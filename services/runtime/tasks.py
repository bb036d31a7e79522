"""Ending background loops and clients within a time limit, even when a dependency
is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)


async def finish_task(task: asyncio.Task[None] | None, what: str, timeout_s: float = 15) -> None:
    """Lets a background loop end by itself, cancelling it after ``timeout_s``. A loop
    that already died (a crash) counts as finished; its error is logged here."""
    if task is None:
        return
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    elif not task.cancelled() and task.exception() is not None:
        log.error("%s: the loop had died: %r", what, task.exception())


async def stop_quietly(closing: Awaitable[object], what: str, timeout_s: float = 10) -> None:
    """Awaits a client's ``stop()`` within a time limit, even when its broker is gone:
    shutting down must not hang or fail because a dependency is down."""
    try:
        await asyncio.wait_for(closing, timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        log.warning("%s: stop was interrupted by its own cancelled tasks", what)
    except Exception as exc:
        log.warning("%s: unclean stop: %r", what, exc)
