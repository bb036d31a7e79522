"""segmenter settings."""

from __future__ import annotations

from typing import Literal

from services.runtime.config import Settings


class SegmenterSettings(Settings):
    """``LOYALTY_SEGMENTER_CLOCK``: ``live`` judges lateness on arrival and rolls
    days over by clock ticks (production; ``LOYALTY_TICK_INTERVAL`` sets how often
    they come); ``event`` uses event time only (replays, tests, backfills)."""

    segmenter_clock: Literal["live", "event"] = "live"
