"""What a request reaches besides Flask: the database session, the job queue and the artifact store.

Built once per app from its Settings (`attach`), reached through `db()`, `queue()` and `store()`; /readyz
checks each of them (`readiness_checks`). The queue sends Celery tasks *by name* over the broker, so the
API never imports the worker (or torch).
"""

from __future__ import annotations

from typing import Callable

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import make_engine, make_session_factory
from core.queue import CeleryQueue, JobQueue
from core.settings import Settings
from core.storage import ArtifactStore, open_store


# Database connections one API process keeps open: as many as it opened at most before (SQLAlchemy's 5 kept
# plus 10 made and closed again per request), now all kept, since its request threads (8) and event streams
# use them at once. Opening one costs PostgreSQL a process; at 400 polls/s the old pool opened ~40 a second.
DATABASE_CONNECTIONS = 15


def attach(app: Flask, settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool_size=DATABASE_CONNECTIONS)
    app.extensions["dcgan"] = {
        "engine": engine,
        "sessions": make_session_factory(engine),
        # GET requests read only; each statement in autocommit sees what READ COMMITTED would show it inside a
        # transaction, without the BEGIN and ROLLBACK round trips (two of a poll's four to PostgreSQL).
        "read_sessions": make_session_factory(engine.execution_options(isolation_level="AUTOCOMMIT")),
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


# No view of these writes; one that did would have each statement committed on its own.
READING_METHODS = frozenset({"GET", "HEAD"})


def db() -> Session:
    """The request's session: in a transaction for a request that may write, in autocommit for one that reads."""
    if "db_session" not in g:
        kind = "read_sessions" if has_request_context() and request.method in READING_METHODS else "sessions"
        g.db_session = current_app.extensions["dcgan"][kind]()
    return g.db_session


def queue() -> JobQueue:
    configured = current_app.extensions["dcgan"]["queue"]
    if configured is None:
        raise RuntimeError("no broker configured: set REDIS_URL (dcgan up sets it for the embedded platform)")
    return configured


def store() -> ArtifactStore:
    return current_app.extensions["dcgan"]["store"]
