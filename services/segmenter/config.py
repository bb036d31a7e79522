"""segmenter settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.runtime.config import Settings


class SegmenterSettings(Settings):
    """``LOYALTY_SEGMENTER_CLOCK``: ``live`` advances stream time with the wall clock
    too (production); ``event`` uses event time only (replays, tests, backfills).
    ``LOYALTY_SEGMENTER_TICK_S``: how often live mode checks for a new stream day."""

    segmenter_clock: Literal["live", "event"] = "live"
    segmenter_tick_s: float = Field(default=10.0, gt=0)
