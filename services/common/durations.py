"""Durations in program files: ``90s``, ``30m``, ``6h``, ``2d``."""

from __future__ import annotations

from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``2d`` -> timedelta (for program settings)."""
    text = text.strip()
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 6h or 2d")
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
