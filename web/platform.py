"""What a request reaches besides Flask: the database session, the job queue and the artifact store.

Built once per app from its Settings (`attach`), reached through `db()`, `queue()` and `store()`.
The queue sends Celery tasks *by name* over the broker, so the API never imports the worker (or torch).
"""

from __future__ import annotations

import uuid
from typing import Callable, Protocol, TypeVar

from flask import Flask, current_app, g
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import ensure_default_tenant, make_engine, make_session_factory
from core.settings import Settings
from core.storage import ArtifactStore, open_store

T = TypeVar("T")
TASKS = {"train": ("dcgan.train", "train"), "generate": ("dcgan.generate", "generate")}  # type -> (task, queue)


class JobQueue(Protocol):
    def enqueue(self, job_type: str, job_id: str) -> None: ...


class CeleryQueue:
    """Publishes `dcgan.train` / `dcgan.generate` with the job id as the only argument."""

    def __init__(self, broker_url: str):
        from celery import Celery

        self.client = Celery("dcgan-api", broker=broker_url, set_as_current=False)
        self.client.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry=False,
                                broker_transport_options={"max_retries": 1})

    def enqueue(self, job_type: str, job_id: str) -> None:
        name, queue = TASKS[job_type]
        self.client.send_task(name, args=[job_id], queue=queue)

    def check(self) -> None:
        with self.client.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)


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


def get_by_id(model: type[T], raw_id: str, belongs: Callable[[T], bool]) -> T | None:
    """The row of `model` with id `raw_id` if it exists and `belongs` (its tenant, its job) says it is
    visible here; None for a malformed id, a missing row or someone else's row alike (no existence oracle)."""
    try:
        row = db().get(model, uuid.UUID(str(raw_id)))
    except ValueError:
        return None
    return row if row is not None and belongs(row) else None


def tenant_id() -> uuid.UUID:
    """The tenant a request acts for -- the default one until API keys land -- looked up once per request."""
    if "tenant_id" not in g:
        g.tenant_id = ensure_default_tenant(db()).id
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
