"""Fakes for unit tests of the pure cores and their service layers."""

from __future__ import annotations

from services.segmenter.memory import MemoryAccountRepository as FakeAccountRepository

__all__ = ["FakeAccountRepository"]
