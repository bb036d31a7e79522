"""Engine creation and versioned migrations.

Each service owns one Postgres schema. Migrations are plain SQL files named
``NNNN_description.sql``, applied in order, each in its own transaction, under an
advisory lock so that several instances starting at once apply each file once.
Applied versions are recorded in ``<schema>.schema_migrations`` per component
(``runtime`` for the shared tables, then the service's own).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.runtime.config import Settings
from services.runtime.connections import postgres_connect_args

log = logging.getLogger(__name__)

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def create_engine(
    url: str, schema: str, pool_size: int = 5, *, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An asyncpg engine whose connections use ``schema`` as search path;
    ``connect_args`` go to ``asyncpg.connect`` (TLS: ``postgres_connect_args``)."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        connect_args={**(connect_args or {}), "server_settings": {"search_path": schema}},
    )


def engine_for(settings: Settings, schema: str, pool_size: int = 5) -> AsyncEngine:
    """The engine of ``schema`` as ``settings`` say: their URL and their TLS options."""
    return create_engine(
        settings.async_database_url(),
        schema,
        pool_size,
        connect_args=postgres_connect_args(settings),
    )


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    path: Path


def discover(component: str, folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path} is not named NNNN_description.sql")
        found.append(Migration(component, int(match.group(1)), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}")
    return found


async def migrate(engine: AsyncEngine, schema: str, components: dict[str, Path]) -> list[str]:
    """Applies the pending migrations of each component; returns what it applied."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
        await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        await conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                " component text NOT NULL, version integer NOT NULL,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (component, version))"
            )
        )
        done = {
            (c, v)
            for c, v in (
                await conn.execute(
                    text(f"SELECT component, version FROM {schema}.schema_migrations")
                )
            ).all()
        }
        for component, folder in components.items():
            for mig in discover(component, folder):
                if (mig.component, mig.version) in done:
                    continue
                await conn.execute(text(f"SET LOCAL search_path TO {schema}"))
                # a file may hold several statements: use asyncpg's simple-query path
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute(mig.path.read_text())  # type: ignore[union-attr]
                await conn.execute(
                    text(
                        f"INSERT INTO {schema}.schema_migrations (component, version, name)"
                        " VALUES (:c, :v, :n)"
                    ),
                    {"c": mig.component, "v": mig.version, "n": mig.path.name},
                )
                applied.append(f"{schema}:{mig.path.name}")
                log.info("applied migration %s to schema %s", mig.path.name, schema)
    return applied
