"""What a request reaches besides Flask: the database session, the job queue and the artifact store.

Built once per app from its Settings (`attach`), reached through `db()`, `queue()` and `store()`.
The queue sends Celery tasks *by name* over the broker, so the API never imports the worker (or torch).
"""

from __future__ import annotations

import sys
import uuid
from typing import Callable, TypeVar

from flask import Flask, current_app, g, request
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.db import make_engine, make_session_factory
from core.queue import CeleryQueue, JobQueue
from core.settings import Settings
from core.storage import ArtifactStore, open_store

T = TypeVar("T")


def attach(app: Flask, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    app.extensions["dcgan"] = {
        "engine": engine,
        "sessions": make_session_factory(engine),
        "queue": CeleryQueue(settings.redis_url) if settings.redis_url else None,
        "store": open_store(settings),
    }

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def readiness_checks(app: Flask) -> dict[str, Callable[[], None]]:
    """/readyz: the database answers, the broker accepts connections, the artifact store is reachable."""
    parts = app.extensions["dcgan"]

    def database() -> None:
        with parts["engine"].connect() as connection:
            connection.execute(text("SELECT 1"))

    def broker() -> None:
        if parts["queue"] is None:
            raise RuntimeError("REDIS_URL is not set")
        parts["queue"].check()

    return {"database": database, "broker": broker, "storage": parts["store"].check}


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


def get_by_id(model: type[T], raw_id: str, belongs: Callable[[T], bool]) -> T | None:
    """The row of `model` with id `raw_id` if it exists and `belongs` (its tenant, its job) says it is
    visible here; None for a malformed id, a missing row or someone else's row alike (no existence oracle)."""
    try:
        row = db().get(model, uuid.UUID(str(raw_id)))
    except ValueError:
        return None
    return row if row is not None and belongs(row) else None


def newest_of_tenant(model: type[T], limit: int = 200) -> list[T]:
    """The request's tenant's rows of `model` (datasets, generators), newest first."""
    return list(db().scalars(select(model).where(model.tenant_id == tenant_id())
                             .order_by(model.created_at.desc(), model.id.desc()).limit(limit)))


def tenant_id() -> uuid.UUID:
    """The tenant a request acts for: the owner of its API key, set by web.auth before the view runs."""
    if "tenant_id" not in g:
        raise RuntimeError(f"{request.path} acts for a tenant but is not behind web.auth's API key check")
    return g.tenant_id


def db() -> Session:
    if "db_session" not in g:
        g.db_session = current_app.extensions["dcgan"]["sessions"]()
    return g.db_session


def queue() -> JobQueue:
    configured = current_app.extensions["dcgan"]["queue"]
    if configured is None:
        raise RuntimeError("no broker configured: set REDIS_URL (dcgan up sets it for the embedded platform)")
    return configured


def store() -> ArtifactStore:
    return current_app.extensions["dcgan"]["store"]
