"""Which failures are transient: the database or the broker was briefly out of reach (a
killed connection, a restarting server, a full connection pool, a busy SQLite file), so
the same request, retried a moment later with the same idempotency key, can succeed.

Every layer asks `is_transient` before deciding how a failure is answered: UNAVAILABLE
(HTTP 503 with Retry-After) for these, INTERNAL for anything else."""

from __future__ import annotations

import errno
import socket
import sqlite3

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Seconds a client is asked to wait before retrying (the Retry-After header).
RETRY_AFTER_SECONDS = 1

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    # the connection was lost or could not be made (class 08), or the server is shutting
    # down, restarting or cancelled the statement to do so (class 57)
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # too many connections, out of memory (class 53)
    asyncpg.InsufficientResourcesError,
    # a deadlock or serialization failure that outlived the ledger's own retries: the
    # transaction rolled back whole (class 40)
    asyncpg.TransactionRollbackError,
    # a refused, reset or broken socket (Tortoise's DBConnectionError is a ConnectionError),
    # a connect or a pool's acquire timed out, a host name not resolved
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    RedisConnectionError,
    RedisTimeoutError,
)
_TRANSIENT_INTERFACE = ("connection was closed", "connection is closed", "pool is closing")
# A pooled connection whose server process was terminated, taken between the termination
# notice and the socket's close: its protocol still waits for the end of that notice.
_TERMINATED_STATE = "cannot switch to state"
# Network failures that arrive as a plain OSError (not every OSError: a missing file is not
# transient).
_NETWORK_ERRNOS = frozenset(
    (errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ETIMEDOUT)
)
_SQLITE_BUSY = ("database is locked", "database table is locked")
_MAX_CHAIN = 10


def _transient_itself(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    if isinstance(error, OSError):
        return error.errno in _NETWORK_ERRNOS
    text = str(error).lower()
    if isinstance(error, asyncpg.InterfaceError):
        return any(marker in text for marker in _TRANSIENT_INTERFACE)
    if isinstance(error, asyncpg.InternalClientError):
        return text.startswith(_TERMINATED_STATE)
    if isinstance(error, sqlite3.OperationalError):
        return any(marker in text for marker in _SQLITE_BUSY)
    return False


def is_transient(error: BaseException | None) -> bool:
    """True when `error`, or a failure it wraps (Tortoise's and GraphQL's wrappers keep it
    as their cause), is a transient database or broker failure."""
    for _ in range(_MAX_CHAIN):
        if error is None:
            return False
        if _transient_itself(error):
            return True
        original = getattr(error, "original_error", None)  # a GraphQLError's
        error = original if original is not None else (error.__cause__ or error.__context__)
    return False
