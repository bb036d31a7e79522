"""Account state owned in memory by its one writer.

The fold's storage when a single process owns a tenant for the whole run (the
backfill): reads hand out the live objects (no copy, no JSON), the tenant index
is built once and kept current, and what changed is remembered until the caller
writes it to Postgres in bulk (:meth:`take_dirty`)."""

from __future__ import annotations

from collections.abc import Iterable

from services.segmenter.domain.due import TenantIndex
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import AccountKey, TenantClock, build_index
from services.segmenter.domain.program import SegmenterProgram


class OwnedAccountRepository:
    """In memory, live objects; see the module docstring."""

    def __init__(
        self,
        clocks: dict[str, TenantClock] | None = None,
        states: dict[AccountKey, AccountState] | None = None,
    ) -> None:
        self.clocks = clocks or {}
        self.states = states or {}
        self.indexes: dict[str, TenantIndex] = {}
        self._dirty: set[AccountKey] = set()
        self._dirty_clocks: set[str] = set()

    async def load_clocks(self, tenants: Iterable[str]) -> dict[str, TenantClock]:
        out = {}
        for t in set(tenants):
            clock = self.clocks.get(t)
            if clock is None:
                clock = self.clocks[t] = TenantClock(t)
            out[t] = clock
        return out

    async def load_accounts(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountState]:
        return {k: self.states[k] for k in set(keys) if k in self.states}

    async def load_index(
        self,
        program: SegmenterProgram,
        clock: TenantClock,
        states: dict[AccountKey, AccountState],
    ) -> TenantIndex:
        assert clock.stream_day is not None
        index = self.indexes.get(clock.tenant)
        if index is None:
            index = self.indexes[clock.tenant] = build_index(program, clock, self.states)
        for (tenant, account), state in states.items():
            if tenant == clock.tenant:  # this batch's accounts, maybe changed or new
                index.sync(account, state, clock.stream_day)
        return index

    def index_if_held(self, tenant: str) -> TenantIndex | None:
        return self.indexes.get(tenant)

    async def save(
        self, clocks: Iterable[TenantClock], states: dict[AccountKey, AccountState]
    ) -> None:
        # the indexes held here were kept current by the fold, event by event
        self._dirty_clocks.update(c.tenant for c in clocks)
        self.states.update(states)
        self._dirty.update(states)

    def take_dirty(self) -> tuple[list[TenantClock], dict[AccountKey, AccountState]]:
        """What changed since the last call: the clocks and accounts to write back."""
        clocks = [self.clocks[t] for t in sorted(self._dirty_clocks)]
        states = {k: self.states[k] for k in self._dirty}
        self._dirty, self._dirty_clocks = set(), set()
        return clocks, states
