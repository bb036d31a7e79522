"""Which errors are the infrastructure's (retry the batch) and which the data's (the
record is poison), told by SQLSTATE class; and an error on one line for a reason."""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc

TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
"""Connection exception, transaction rollback (serialization failure, deadlock),
insufficient resources, operator intervention: the infrastructure, not the data."""

DATA_SQLSTATE_CLASSES = ("22", "23")
"""Data exception (e.g. 22021: a NUL character in a text) and integrity constraint
violation: the same record fails the same way however often it is retried."""


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, wrapped by SQLAlchemy or raised by asyncpg
    itself; None for any other error."""
    errs: list[object] = [exc]
    if isinstance(exc, sa_exc.DBAPIError):
        errs += [exc.orig, getattr(exc.orig, "__cause__", None)]
    for err in errs:
        state = getattr(err, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def is_data_error(exc: BaseException) -> bool:
    """Postgres refused a value or a constraint (SQLSTATE class 22 or 23): the record
    that carries the value is poison, never a reason to retry."""
    state = sqlstate_of(exc)
    return state is not None and state[:2] in DATA_SQLSTATE_CLASSES


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the same batch for: the infrastructure, not the data."""
    if is_data_error(exc):
        return False  # even when asyncpg reports it as an interface (client-side) error
    if isinstance(exc, (OSError, asyncio.TimeoutError, sa_exc.TimeoutError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = sqlstate_of(exc)
        if state is not None and state[:2] in TRANSIENT_SQLSTATE_CLASSES:
            return True
        name = type(getattr(exc.orig, "__cause__", None)).__name__
        return "Connection" in name
    return False


def describe_error(exc: BaseException) -> str:
    """``<type>: <message>`` on one line; for a database error, the driver's own
    error and SQLSTATE rather than SQLAlchemy's wrapper with the whole statement."""
    inner: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError):
        cause = getattr(exc.orig, "__cause__", None)
        inner = cause if isinstance(cause, BaseException) else exc.orig or exc
    message = " ".join(str(inner).split())
    state = sqlstate_of(exc)
    suffix = f" (SQLSTATE {state})" if state is not None and state not in message else ""
    return f"{type(inner).__name__}: {message}{suffix}"
