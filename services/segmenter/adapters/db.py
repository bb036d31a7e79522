"""Segmenter state in Postgres: account documents and tenant clocks, read and
written in bulk (one round trip each per batch)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.domain.due import TenantIndex
from services.segmenter.domain.features import AccountState
from services.segmenter.domain.fold import AccountKey, TenantClock, build_index
from services.segmenter.domain.program import SegmenterProgram
from services.segmenter.domain.rfm import RfmBreakpoints

_DATETIMES = (
    "last_login_at",
    "last_key_action_at",
    "last_activity_at",
    "seats_used_at",
    "subscription_at",
    "onboarding_completed_at",
    "cancellation_requested_at",
    "last_nps_at",
)
_DAY_BUCKETS = ("key_actions", "rfm_frequency", "paid")


def dump_state(state: AccountState) -> str:
    """State -> JSON, in pydantic-core (this runs for every account a batch changed):
    times as RFC 3339, day buckets with their day as the key."""
    return to_json(state.__dict__).decode()


def load_state(raw: Any) -> AccountState:
    doc: dict[str, Any] = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
    for name in _DATETIMES:
        if doc.get(name) is not None:
            doc[name] = datetime.fromisoformat(doc[name])
    for name in _DAY_BUCKETS:
        doc[name] = {int(k): v for k, v in doc.get(name, {}).items()}
    if doc.get("renewal_date") is not None:
        doc["renewal_date"] = date.fromisoformat(doc["renewal_date"])
    doc["segments"] = {k: datetime.fromisoformat(v) for k, v in doc.get("segments", {}).items()}
    return AccountState(**doc)


_CLOCKS = (
    "SELECT tenant, watermark, stream_day, breakpoints, accounts, scored_accounts,"
    " moved_accounts, rescored_at FROM tenant_clocks"
)


@dataclass(frozen=True)
class PreparedSave:
    """Clocks and accounts serialised for a write (the states may change after)."""

    clocks: list[dict[str, Any]]
    accounts: dict[str, list[Any]]
    states: dict[AccountKey, AccountState]


def prepare_save(
    clocks: Iterable[TenantClock], states: dict[AccountKey, AccountState]
) -> PreparedSave:
    clock_rows = [
        {
            "t": c.tenant,
            "w": c.watermark,
            "d": c.stream_day,
            "b": json.dumps(c.breakpoints.to_json()),
            "n": c.accounts,
            "sn": c.scored_accounts,
            "mv": c.moved_accounts,
            "ra": c.rescored_at,
        }
        for c in clocks
    ]
    ordered = sorted(states.items())
    accounts: dict[str, list[Any]] = {
        "t": [k[0] for k, _ in ordered],
        "a": [k[1] for k, _ in ordered],
        "s": [dump_state(st) for _, st in ordered],
        "segs": [",".join(sorted(st.segments)) or None for _, st in ordered],
        "d": [st.evaluated_day for _, st in ordered],
    }
    return PreparedSave(clock_rows, accounts, dict(states))


class StateCache:
    """The account states this process last wrote, with the row version it wrote.

    A batch reads an account's row version (cheap) and its JSON state only when
    the version is not the one kept here: another instance (a rebalance), a
    rollover or a backfill wrote it since. The version is the writing
    transaction's id, which no other write ever has: a write that did not commit
    leaves a version the table never shows, so its entries reload by themselves.
    A batch that fails inside the fold may have changed kept objects before
    writing them: :meth:`clear` then."""

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self._entries: dict[AccountKey, tuple[int, AccountState]] = {}

    def version(self, key: AccountKey) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def state(self, key: AccountKey, version: int) -> AccountState | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == version else None

    def put(self, key: AccountKey, version: int, state: AccountState) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (version, state)
        if len(self._entries) > self.limit:  # the oldest written go first
            for old in list(self._entries)[: self.limit // 10]:
                del self._entries[old]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PostgresAccountRepository:
    def __init__(self, conn: AsyncConnection, cache: StateCache | None = None) -> None:
        self.conn = conn
        self.cache = cache

    async def load_clocks(self, tenants: Iterable[str]) -> dict[str, TenantClock]:
        """Locks (creating if needed) the clocks of ``tenants``, in a fixed order."""
        wanted = sorted(set(tenants))
        if not wanted:
            return {}
        await self.conn.execute(
            text(
                "INSERT INTO tenant_clocks (tenant) SELECT unnest(CAST(:t AS text[]))"
                " ON CONFLICT DO NOTHING"
            ),
            {"t": wanted},
        )
        rows = await self.conn.execute(
            text(_CLOCKS + " WHERE tenant = ANY(:t) ORDER BY tenant FOR UPDATE"),
            {"t": wanted},
        )
        return {row[0]: _clock(*row) for row in rows.all()}

    async def get_clock(self, tenant: str) -> TenantClock | None:
        return await self._one_clock(tenant, "")

    async def _one_clock(self, tenant: str, locking: str) -> TenantClock | None:
        row = (
            await self.conn.execute(text(_CLOCKS + " WHERE tenant = :t" + locking), {"t": tenant})
        ).first()
        return None if row is None else _clock(*row)

    async def load_accounts(self, keys: Iterable[AccountKey]) -> dict[AccountKey, AccountState]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        cache = self.cache
        known = [(cache.version(k) if cache is not None else None) for k in wanted]
        rows = await self.conn.execute(
            text(
                "SELECT a.tenant, a.account, a.version,"
                " CASE WHEN a.version IS NOT DISTINCT FROM k.known THEN NULL ELSE a.state END"
                " FROM accounts a"
                " JOIN unnest(CAST(:t AS text[]), CAST(:a AS text[]), CAST(:v AS bigint[]))"
                " AS k(tenant, account, known)"
                " ON a.tenant = k.tenant AND a.account = k.account"
                " ORDER BY a.tenant, a.account FOR UPDATE OF a"
            ),
            {"t": [k[0] for k in wanted], "a": [k[1] for k in wanted], "v": known},
        )
        return {(t, a): self._state((t, a), v, s) for t, a, v, s in rows.all()}

    def _state(self, key: AccountKey, version: int, raw: Any) -> AccountState:
        if raw is None and self.cache is not None:
            kept = self.cache.state(key, version)
            if kept is not None:
                return kept
        if raw is None:
            raise RuntimeError(f"account {key}: no state kept for version {version}")
        return load_state(raw)

    def index_if_held(self, tenant: str) -> TenantIndex | None:
        return None  # built from the stored accounts when a batch needs it

    async def load_index(
        self,
        program: SegmenterProgram,
        clock: TenantClock,
        states: dict[AccountKey, AccountState],
    ) -> TenantIndex:
        """Loads (and locks) the tenant's other accounts into ``states`` and indexes
        them all: a read of the whole tenant, once per batch that needs it."""
        states.update(await self.load_tenant_accounts(clock.tenant, set(states)))
        return build_index(program, clock, states)

    async def load_tenant_accounts(
        self, tenant: str, exclude: set[AccountKey]
    ) -> dict[AccountKey, AccountState]:
        cache = self.cache
        if cache is None:
            rows = await self.conn.execute(
                text(
                    "SELECT account, state FROM accounts WHERE tenant = :t"
                    " ORDER BY account FOR UPDATE"
                ),
                {"t": tenant},
            )
            return {(tenant, a): load_state(s) for a, s in rows.all() if (tenant, a) not in exclude}
        # versions first (no JSON), then the states this process does not hold
        rows = await self.conn.execute(
            text(
                "SELECT account, version FROM accounts WHERE tenant = :t"
                " ORDER BY account FOR UPDATE"
            ),
            {"t": tenant},
        )
        out: dict[AccountKey, AccountState] = {}
        missing = []
        for a, v in rows.all():
            key = (tenant, a)
            if key in exclude:
                continue
            kept = cache.state(key, v)
            if kept is None:
                missing.append(a)
            else:
                out[key] = kept
        if missing:
            stored = await self.conn.execute(
                text("SELECT account, state FROM accounts WHERE tenant = :t AND account = ANY(:a)"),
                {"t": tenant, "a": missing},
            )
            out.update({(tenant, a): load_state(s) for a, s in stored.all()})
        return out

    async def save(
        self, clocks: Iterable[TenantClock], states: dict[AccountKey, AccountState]
    ) -> None:
        await self.write(prepare_save(clocks, states))

    async def write(self, prepared: PreparedSave) -> None:
        """Writes clocks and accounts serialised by :func:`prepare_save`."""
        if prepared.clocks:
            await self.conn.execute(
                text(
                    "UPDATE tenant_clocks SET watermark = :w, stream_day = :d,"
                    " breakpoints = CAST(:b AS jsonb), accounts = :n, scored_accounts = :sn,"
                    " moved_accounts = :mv, rescored_at = :ra,"
                    " updated_at = now() WHERE tenant = :t"
                ),
                prepared.clocks,
            )
        if prepared.accounts["t"]:
            # one statement with arrays, not one row per round trip
            written = await self.conn.execute(
                text(
                    "INSERT INTO accounts (tenant, account, state, segments, evaluated_day,"
                    " version)"
                    " SELECT t, a, CAST(s AS jsonb), coalesce(string_to_array(segs, ','), '{}'),"
                    " d, CAST(CAST(pg_current_xact_id() AS text) AS bigint)"
                    " FROM unnest(CAST(:t AS text[]), CAST(:a AS text[]), CAST(:s AS text[]),"
                    " CAST(:segs AS text[]), CAST(:d AS integer[])) AS x(t, a, s, segs, d)"
                    " ON CONFLICT (tenant, account) DO UPDATE SET state = EXCLUDED.state,"
                    " segments = EXCLUDED.segments, evaluated_day = EXCLUDED.evaluated_day,"
                    " version = EXCLUDED.version, updated_at = now()"
                    " RETURNING tenant, account, version"
                ),
                prepared.accounts,
            )
            if self.cache is not None:
                for t, a, v in written.all():
                    self.cache.put((t, a), v, prepared.states[(t, a)])

    # ------------------------------------------------------------ read side

    async def account(self, tenant: str, account: str) -> AccountState | None:
        raw = (
            await self.conn.execute(
                text("SELECT state FROM accounts WHERE tenant = :t AND account = :a"),
                {"t": tenant, "a": account},
            )
        ).scalar_one_or_none()
        return None if raw is None else load_state(raw)

    async def segment_sizes(self, tenant: str) -> dict[str, int]:
        rows = await self.conn.execute(
            text(
                "SELECT s, count(*) FROM accounts, unnest(segments) AS s WHERE tenant = :t"
                " GROUP BY s"
            ),
            {"t": tenant},
        )
        return {s: int(n) for s, n in rows.all()}

    async def members(
        self, tenant: str, segment: str, after: str | None, limit: int
    ) -> list[tuple[str, str | None]]:
        rows = await self.conn.execute(
            text(
                "SELECT account, state->'segments'->>:s FROM accounts"
                " WHERE tenant = :t AND segments @> ARRAY[CAST(:s AS text)]"
                " AND (CAST(:after AS text) IS NULL OR account > :after)"
                " ORDER BY account LIMIT :n"
            ),
            {"t": tenant, "s": segment, "after": after, "n": limit},
        )
        return [(a, since) for a, since in rows.all()]


def _clock(
    tenant: str,
    watermark: Any,
    day: Any,
    bps: Any,
    accounts: int = 0,
    scored: int = 0,
    moved: int = 0,
    rescored_at: Any = None,
) -> TenantClock:
    raw = json.loads(bps) if isinstance(bps, str) else bps
    return TenantClock(
        tenant=tenant,
        watermark=watermark,
        stream_day=day,
        breakpoints=RfmBreakpoints.from_json(raw),
        accounts=accounts,
        scored_accounts=scored,
        moved_accounts=moved,
        rescored_at=rescored_at,
    )
