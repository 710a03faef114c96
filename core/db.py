"""The platform's SQL schema (SQLAlchemy 2.0 typed models) and how to connect to it.

The database is the truth about tenants, datasets, jobs and their artifacts; Celery messages only say
"look at job X". The same models run on PostgreSQL (production) and SQLite (the embedded default), so
only portable types are used: `Uuid`, `JSON` (JSONB on PostgreSQL) and `UTCDateTime`, which stores UTC
and always hands back timezone-aware UTC datetimes. Status and type columns are short strings with CHECK
constraints rather than native enums, so adding a value is one migration on both backends.

The MetaData carries a naming convention so every constraint name is the same on both backends and
Alembic migrations can refer to them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, Engine, Float, ForeignKey, Index,
                        Integer, MetaData, String, Text, UniqueConstraint, create_engine, event, select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator, Uuid

from core.job_states import FINISHED_STATUSES, JobStatus, JobType  # noqa: F401  (the schema's vocabulary)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware timestamp stored as UTC; naive datetimes are refused rather than guessed.

    PostgreSQL keeps `timestamptz` but returns it in the session's TimeZone; SQLite keeps text without an
    offset. Normalising to UTC on the way in makes SQLite's text comparisons correct, and on the way out
    gives both backends the same values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; store timezone-aware UTC")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: the stored text is UTC by construction
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
AutoIncrementId = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid(), dict[str, Any]: JSONDocument}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # sha256 hex of the secret; the secret itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, so a user can tell their keys apart in listings.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_id_created_at_id", "tenant_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    # "upload" or "builtin:<name>" (e.g. "builtin:digits").
    source: Mapped[str] = mapped_column(String(100))
    storage_prefix: Mapped[str] = mapped_column(String(512))
    num_images: Mapped[int] = mapped_column(default=0)
    # Files in an upload that were not usable images (counted, not stored).
    num_rejected: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Generator(Base):
    """One version in the tenant's generator registry: safetensors weights with the config they were checked
    against, under `name` with an increasing `version` (core.registry). Uploaded ones (POST /v1/generators)
    and the final and best generators of every succeeded training job, whose lineage (job, step, dataset and
    its content hash, FID) is kept here."""

    __tablename__ = "generators"
    __table_args__ = (Index("ix_generators_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
                      UniqueConstraint("tenant_id", "name", "version"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    # The validated TrainConfig.to_dict() the weights were checked against.
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    storage_key: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)
    # "upload", or "final" / "best": the generator a training job ended with / scored best with.
    source: Mapped[str] = mapped_column(String(16), default="upload")
    # Lineage of a job's generator. The job id is not a foreign key: a registry entry is a record of where
    # it came from, and must not tie the jobs table into a cycle with this one.
    job_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    step: Mapped[int | None]
    dataset: Mapped[str | None] = mapped_column(String(100))  # the job's reference: builtin:<name> or an id
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))  # the images' content hash
    fid: Mapped[float | None] = mapped_column(Float)
    kid: Mapped[float | None] = mapped_column(Float)


class GeneratorAlias(Base):
    """A movable label (`champion`, `staging`, ...) on one version of a registry name: `name@alias`."""

    __tablename__ = "generator_aliases"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    generator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("generators.id", ondelete="CASCADE"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One train or generate request and everything the platform knows about its execution.

    `attempt` is the fencing token: every claim bumps it, and every write a worker makes is conditioned
    on the attempt it claimed, so a worker that lost its lease cannot overwrite its successor's state.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("type", JobType), name="type"),
        CheckConstraint(_in("status", JobStatus), name="status"),
        # No unique constraint on (tenant_id, idempotency_key): the key is unique through its
        # IdempotencyRecord, which expires; after that the same key may make a new job.
        # Newest-first listing per tenant; a B-tree scans backwards, so ascending columns serve DESC too.
        Index("ix_jobs_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # The reaper looks for running jobs whose lease has expired.
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        # ... and for queued jobs whose message was published long ago (lost with a Redis wipe).
        Index("ix_jobs_status_published_at", "status", "published_at"),
        # GET /v1/jobs?sort=best_fid ranks a tenant's evaluated runs.
        Index("ix_jobs_tenant_id_best_fid_id", "tenant_id", "best_fid", "id"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority"),
        # The scheduler takes a queue's queued jobs in queue_key order (core.scheduling).
        Index("ix_jobs_status_type_queue_key", "status", "type", "queue_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    # The validated config (TrainConfig.to_dict() for train jobs), enough to rebuild it in the worker.
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The rest of the request: dataset reference, seeds, generator job, ...
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The latest checkpoint known to be complete; a reclaimed job resumes from it.
    checkpoint_key: Mapped[str | None] = mapped_column(String(1024))
    checkpoint_step: Mapped[int | None]
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"),
                                                         index=True)
    # For generate jobs: the train job whose generator they sample.
    parent_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                                            index=True)
    # For generate jobs that sample an uploaded generator (POST /v1/generators) instead of a train job.
    generator_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("generators.id", ondelete="SET NULL"),
                                                           index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # When the job's task message was last sent to the broker, and how often: the reaper sends it again,
    # with a growing pause, while the job stays queued (the broker is a doorbell and may lose messages).
    published_at: Mapped[datetime | None]
    publish_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Train jobs with eval_every: the evaluated step with the lowest FID, whose generator is kept as the
    # job's best-generator artifact. A resumed attempt starts from it, so a job keeps its best so far.
    best_step: Mapped[int | None]
    best_fid: Mapped[float | None] = mapped_column(Float)
    best_kid: Mapped[float | None] = mapped_column(Float)
    # Evaluate jobs: the scores and how they were made (network, its hash, samples, preprocessing).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    # 0-9, higher first among the queued jobs of one queue (core.scheduling says how none waits forever).
    priority: Mapped[int] = mapped_column(default=5, server_default="5")
    # The order queued jobs are taken in, lowest first: the time queued less a step per priority level.
    queue_key: Mapped[datetime | None]
    # A deleted finished job: its artifacts are gone, the row stays as a tombstone so its id answers the same
    # way ever after.
    deleted_at: Mapped[datetime | None]
    # Seconds its attempts ran, added as each one ends, and the device kind of the last one (GET /v1/usage).
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    device: Mapped[str | None] = mapped_column(String(32))


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # What the artifact is to a user: "grid.png", "checkpoint", "samples/step-0001200.png", ...
    name: Mapped[str] = mapped_column(String(255))
    # The artifact store key (jobs/<id>/...); unique, so recording the same upload twice is a no-op.
    key: Mapped[str] = mapped_column(String(1024), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(100))
    step: Mapped[int | None]
    # Which attempt wrote it (the fencing token it held).
    attempt: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """Everything that happens to one job, in the order it happened: the job's event stream.

    State changes and notes (`log`) make its timeline; `progress` (at most one a SYNC_SECONDS), `sample`,
    `checkpoint` and the final `completed` are there too, so a client of GET /v1/jobs/<id>/stream that
    reconnects is replayed exactly what it missed. The id is that stream's event id. Ids are given out in
    commit order for one job because every insert follows an UPDATE of the job's row in the same
    transaction (core.jobs), whose lock orders the writers: a reader that has seen id N never later finds
    a new row of that job below N.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),
                      # GET /metrics counts the rare kinds (lease_expired, requeued, resumed) at every scrape, in
                      # a table with a progress row per second of every job's training.
                      Index("ix_job_events_kind", "kind"))

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # queued, claimed, resumed, started, resumed_from_step, succeeded, failed, cancel_requested, cancelled,
    # requeued, lease_expired, log, best (the timeline); progress, sample, checkpoint, completed (the stream only)
    kind: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MetricPoint(Base):
    """One logged training step of a job: its losses, D's outputs and speed (and evaluation results,
    when a step has them). One row per (job, step): a resumed attempt that logs a step again replaces it,
    and its start deletes the steps past the checkpoint it resumed from, so the history is the one run
    that produced the final weights."""

    __tablename__ = "job_metrics"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    # loss_d, loss_g, d_real, d_fake, images_per_second (and fid, kid, ... from evaluation)
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """A tenant's webhook receiver (Standard Webhooks): where to send which events, and the secret that signs
    them. During a rotation the previous secret signs too, until `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    secret: Mapped[str] = mapped_column(String(128))  # whsec_<base64>
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None]
    # Set when the receiver answered 410 Gone (or an operator turned it off): nothing more is sent.
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookMessage(Base):
    """The outbox: one event for one endpoint, written in the transaction of the change it reports, so no
    event is lost with a process and none is sent for a change that rolled back. The id is the
    `webhook-id` header of every attempt to send it; the payload is frozen when it is written."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        # The sender's due messages.
        Index("ix_webhook_messages_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_messages_endpoint_id_created_at", "endpoint_id", "created_at"),
        # job.progress is throttled per job: the newest one of a job is looked up.
        Index("ix_webhook_messages_job_id_event_type", "job_id", "event_type"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # msg_<random>
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None]
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # pending (to send, at next_attempt_at), delivered (a 2xx came back), failed (retries spent, or the
    # endpoint is disabled or gone)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookAttempt(Base):
    """One attempt to send a webhook message: what came back (status, latency) or what went wrong."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_id_at", "endpoint_id", "at"),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), ForeignKey("webhook_messages.id", ondelete="CASCADE"),
                                            index=True)
    endpoint_id: Mapped[uuid.UUID]
    attempt: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    # scheduled (the sender's own), manual (POST .../deliveries/<id>/retry)
    trigger: Mapped[str] = mapped_column(String(16), default="scheduled", server_default="scheduled")


class IdempotencyRecord(Base):
    """The stored answer to a POST with an Idempotency-Key, replayed when the same request comes again."""

    __tablename__ = "idempotency_records"
    # The reaper deletes records past their retention by age.
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of the request (method, path, body): the same key with another request is a conflict.
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int]
    response_body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if missing.

    Safe to call from several processes at once: the insert ignores a conflict with a concurrent one.
    The caller commits (core.auth checks the name first).
    """
    session.execute(upsert_insert(session)(Tenant).values(id=uuid.uuid4(), name=name, created_at=utcnow())
                    .on_conflict_do_nothing())
    return session.scalars(select(Tenant).where(Tenant.name == name)).one()


def upsert_insert(session: Session):
    """The `insert` of the session's database that has `on_conflict_do_nothing` / `_do_update` (both
    backends spell ON CONFLICT the same way, but SQLAlchemy's generic insert has neither)."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {dialect!r}: use PostgreSQL or SQLite")
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def engine_url(database_url: str) -> URL:
    """The URL to connect with: a bare postgresql:// means psycopg 3, the driver the platform ships
    (SQLAlchemy would otherwise look for psycopg2)."""
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg") if url.drivername in ("postgresql", "postgres") else url


POSTGRES_CONNECT_TIMEOUT_SECONDS = 10


def make_engine(database_url: str, idle_in_transaction_seconds: int | None = None,
                pool_size: int | None = None) -> Engine:
    """An engine for PostgreSQL or SQLite with the settings each needs to be correct under concurrency.

    SQLite: foreign keys on for every connection (off by default), WAL so readers don't block the
    writer, a busy timeout so concurrent writers wait instead of failing, and connections usable from the
    worker's heartbeat thread. PostgreSQL: connections are checked before use, so a database restart
    costs one reconnect rather than one failed request, and connecting gives up after
    POSTGRES_CONNECT_TIMEOUT_SECONDS (unless the URL sets connect_timeout) instead of libpq's default of
    waiting forever, so a request to an unreachable server fails in seconds, not minutes.

    `idle_in_transaction_seconds` (PostgreSQL; the worker sets it): the server ends a session that sits in an
    open transaction that long, so a frozen worker (SIGSTOP, a stuck VM) cannot keep a job's row locked
    and block the worker taking its job over.

    `pool_size` (PostgreSQL; the API sets it): keep up to this many connections open and never make more.
    SQLAlchemy's default keeps 5 and opens up to 10 more that it closes again when returned, so a server with
    more threads than 5 busy opened a new PostgreSQL connection per request under load (bench/load_test.py).
    """
    url = engine_url(database_url)
    if url.get_backend_name() != "sqlite":
        connect_args = {}
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
        if url.get_backend_name() == "postgresql" and idle_in_transaction_seconds:
            connect_args["options"] = f"-c idle_in_transaction_session_timeout={idle_in_transaction_seconds * 1000}"
        pool = {"pool_size": pool_size, "max_overflow": 0} if pool_size else {}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool)
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # One shared connection for an in-memory database, or each connection would see an empty one.
    pool = {"poolclass": StaticPool} if in_memory else {}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes in WAL mode
        cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose ORM objects are expired on commit, so a long-lived worker session never reads a
    job row it loaded before another process changed it."""
    return sessionmaker(bind=engine)
