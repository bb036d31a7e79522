"""Segmenter storage in memory, with the same JSON round trip as Postgres: for the
offers simulator and for unit tests of :func:`services.segmenter.handlers.process`."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from services.segmenter.adapters.db import dump_state, load_state
from services.segmenter.domain.due import TenantIndex
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import AccountKey, TenantClock, build_index
from services.segmenter.domain.program import SegmenterProgram


class MemoryAccountRepository:
    """In memory, with the same round trip through JSON as Postgres."""

    def __init__(self) -> None:
        self.clocks: dict[str, TenantClock] = {}
        self.accounts: dict[AccountKey, str] = {}
        self.round_trips = 0

    async def load_clocks(self, tenants: Iterable[str]) -> dict[str, TenantClock]:
        self.round_trips += 1
        return {t: copy.deepcopy(self.clocks.get(t, TenantClock(t))) for t in set(tenants)}

    async def load_accounts(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountState]:
        self.round_trips += 1
        return {k: load_state(self.accounts[k]) for k in set(keys) if k in self.accounts}

    def index_if_held(self, tenant: str) -> TenantIndex | None:
        return None  # built from the stored accounts when a batch needs it

    async def load_index(
        self,
        program: SegmenterProgram,
        clock: TenantClock,
        states: dict[AccountKey, AccountState],
    ) -> TenantIndex:
        self.round_trips += 1
        states.update(
            {
                k: load_state(v)
                for k, v in self.accounts.items()
                if k[0] == clock.tenant and k not in states
            }
        )
        return build_index(program, clock, states)

    async def save(
        self, clocks: Iterable[TenantClock], states: dict[AccountKey, AccountState]
    ) -> None:
        self.round_trips += 1
        for c in clocks:
            self.clocks[c.tenant] = copy.deepcopy(c)
        for k, s in states.items():
            self.accounts[k] = dump_state(s)

    def state(self, tenant: str, account: str) -> AccountState:
        return load_state(self.accounts[(tenant, account)])
