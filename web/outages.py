"""Which errors mean the database cannot be reached right now -- answered 503, worth retrying -- rather than
a bug such as bad SQL or a violated constraint, which stays a 500."""

from __future__ import annotations

import sys

from sqlalchemy import exc as sa_exc


# PostgreSQL SQLSTATEs that say the server cannot serve anyone right now, not that the request was wrong:
# class 08 (connection exception), class 53 (insufficient resources: too many connections, disk full) and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now: starting up or shutting down).
_POSTGRES_UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")
# SQLite reports a bad statement and a busy or missing file with the same exception class: tell them apart
# by message.
_SQLITE_UNAVAILABLE_MESSAGES = ("database is locked", "database table is locked", "unable to open database",
                                "disk i/o error")


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` (or an exception it was raised from) means the database cannot be reached or used
    at the moment -- answered 503, worth retrying -- rather than a bug such as bad SQL or a violated
    constraint, which stays a 500."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.TimeoutError):  # every pooled connection busy for pool_timeout
            return True
        if isinstance(current, sa_exc.DBAPIError):
            if current.connection_invalidated:  # the dialect recognised a lost connection
                return True
            current = current.orig
            continue
        if _driver_unavailable(current):
            return True
        current = current.__cause__
    return False


def _driver_unavailable(error: BaseException) -> bool:
    # Only drivers already imported can have raised: look them up instead of importing them.
    sqlite3, psycopg = sys.modules.get("sqlite3"), sys.modules.get("psycopg")
    if sqlite3 is not None and isinstance(error, sqlite3.OperationalError):
        return any(message in str(error).lower() for message in _SQLITE_UNAVAILABLE_MESSAGES)
    if psycopg is not None and isinstance(error, psycopg.Error):
        if error.sqlstate is None:  # no answer from a server at all: refused, reset, timed out, closed
            return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
        return error.sqlstate.startswith(_POSTGRES_UNAVAILABLE_SQLSTATES)
    return False
