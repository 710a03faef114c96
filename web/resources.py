"""What a request reaches besides Flask: the database session, the job queue and the artifact store.

Built once per app from its Settings (`attach`), reached through `db()`, `queue()` and `store()`; /readyz
checks each of them (`readiness_checks`). The queue sends Celery tasks *by name* over the broker, so the
API never imports the worker (or torch).
"""

from __future__ import annotations

from typing import Callable

from flask import Flask, current_app, g
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import make_engine, make_session_factory
from core.queue import CeleryQueue, JobQueue
from core.settings import Settings
from core.storage import ArtifactStore, open_store


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
