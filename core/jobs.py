"""Job state transitions: the only code that changes a job's status, lease or fencing token.

    queued --claim--> running --finish--> succeeded | failed | cancelled
    queued --cancel--> cancelled
    queued --refused by a worker--> failed            (a job no worker's device can hold: refuse_queued)
    running --lease expired / release--> queued      (or failed: worker_lost, after max_attempts)

Every transition is one conditional UPDATE whose WHERE clause states what must still be true (status,
attempt, lease), checked by its row count, so two workers racing for a job cannot both win and a worker
that lost its lease cannot write over its successor. A worker's writes carry the `attempt` its claim
returned (the fencing token); when they no longer match the row, they return False and change nothing.

Functions run inside the caller's transaction and never commit: the caller commits after each one (the
worker) or together with its own rows (the API, with the idempotency record). `now` parameters exist for
tests; times are taken from the calling process's clock, in UTC.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session

from core import webhooks
from core.db import (FINISHED_STATUSES, Artifact, Job, JobEvent, JobStatus, JobType, MetricPoint, Tenant,
                     UTCDateTime, upsert_insert, utcnow)
from core.scheduling import DEFAULT_PRIORITY, queue_key, running_count

# Events a job's stream carries that are not part of its timeline (GET /v1/jobs/<id>/events): the progress
# of every second, each sample grid and checkpoint, and the `completed` that ends the stream.
STREAM_ONLY_KINDS = frozenset({"progress", "sample", "checkpoint", "completed"})


# Event details only operators see: which host and process ran an attempt (worker names are host:pid). The
# database and the workers' logs keep them; the API's events and streams leave them out (tenant_view).
OPERATOR_ONLY_DETAILS = frozenset({"worker", "reclaimed_by"})


def tenant_view(detail: dict[str, Any] | None) -> dict[str, Any]:
    """An event's detail as a tenant may see it: without the workers' host names."""
    return {key: value for key, value in (detail or {}).items() if key not in OPERATOR_ONLY_DETAILS}


class IllegalTransition(Exception):
    """The job is not in a state that allows the requested change (the API answers 409)."""


class JobNotFound(LookupError):
    """No job with that id (for that tenant)."""


class BadCursor(ValueError):
    """A list cursor that this module did not produce."""


def create_job(session: Session, tenant_id: uuid.UUID, type: str, config: dict[str, Any],
               request: dict[str, Any], *, max_attempts: int = 3, dataset_id: uuid.UUID | None = None,
               parent_job_id: uuid.UUID | None = None, generator_id: uuid.UUID | None = None,
               idempotency_key: str | None = None, priority: int = DEFAULT_PRIORITY,
               priority_step_seconds: float = 600, now: datetime | None = None) -> Job:
    """Insert a queued job and its "queued" event; `priority` and `priority_step_seconds` place it in its
    queue (core.scheduling)."""
    now = now or utcnow()
    if type not in set(JobType):
        raise ValueError(f"type: expected one of {sorted(JobType)}, got {type!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts: must be positive, got {max_attempts}")
    job = Job(id=uuid.uuid4(), tenant_id=tenant_id, type=type, status=JobStatus.QUEUED, config=config,
              request=request, progress={}, attempt=0, max_attempts=max_attempts, cancel_requested=False,
              dataset_id=dataset_id, parent_job_id=parent_job_id, generator_id=generator_id,
              idempotency_key=idempotency_key, priority=priority,
              queue_key=queue_key(now, priority, priority_step_seconds), created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    _event(session, job.id, "queued", 0, now)
    return job


def claim_job(session: Session, job_id: uuid.UUID, worker: str, lease_seconds: float,
              now: datetime | None = None, max_running_per_tenant: int = 0) -> int | None:
    """Take a queued job, or a running one whose lease expired, for `worker`; return the new attempt.

    None when the job is not claimable: someone else holds a live lease, it is finished, cancellation
    was requested, its attempts are spent, or (a queued job, with `max_running_per_tenant`) its tenant already
    runs that many jobs. The first UPDATE takes a queued job; only if that misses does the second take over
    an expired lease (a job that already counts as running), so the event log can say which happened.
    """
    now = now or utcnow()
    claimable = and_(Job.id == job_id, Job.cancel_requested.is_(False), Job.attempt < Job.max_attempts)
    values = dict(status=JobStatus.RUNNING, attempt=Job.attempt + 1, worker=worker,
                  lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now, updated_at=now,
                  started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())))
    returning = (Job.attempt, Job.checkpoint_step)
    queued = and_(claimable, Job.status == JobStatus.QUEUED)
    if max_running_per_tenant:
        # PostgreSQL: one claim per tenant at a time, so the count below sees the other's commit (SQLite runs
        # one writer at a time anyway; it leaves FOR UPDATE out).
        tenant = select(Job.tenant_id).where(Job.id == job_id).scalar_subquery()
        session.execute(select(Tenant.id).where(Tenant.id == tenant).with_for_update())
        queued = and_(queued, running_count(Job.tenant_id) < max_running_per_tenant)
    row = session.execute(update(Job).where(queued).values(**values).returning(*returning)).one_or_none()
    if row is None:
        row = session.execute(update(Job).where(claimable, _lease_expired(now)).values(**values)
                              .returning(*returning)).one_or_none()
        if row is None:
            return None
        _event(session, job_id, "lease_expired", row.attempt - 1, now, {"reclaimed_by": worker})
    if row.checkpoint_step is None:
        _event(session, job_id, "claimed", row.attempt, now, {"worker": worker})
    else:
        _event(session, job_id, "resumed", row.attempt, now,
               {"worker": worker, "resumed_from_step": row.checkpoint_step})
    return row.attempt


def heartbeat(session: Session, job_id: uuid.UUID, attempt: int, lease_seconds: float,
              now: datetime | None = None) -> bool:
    """Extend the lease of the attempt that holds the job; False means it no longer does: stop."""
    now = now or utcnow()
    return _fenced_update(session, job_id, attempt, heartbeat_at=now, updated_at=now,
                          lease_expires_at=now + timedelta(seconds=lease_seconds))


def record_progress(session: Session, job_id: uuid.UUID, attempt: int, progress: dict[str, Any],
                    points: list[tuple[int, dict[str, Any]]] = ()) -> bool:
    """Replace the job's progress document (step, losses, ...), add its `progress` event and the logged
    steps `points` ((step, values), kept in job_metrics), if `attempt` still holds the job.

    A step already recorded is replaced: a resumed attempt rewriting it leaves one row per step.
    """
    now = utcnow()
    if not _fenced_update(session, job_id, attempt, progress=progress, updated_at=now):
        return False
    if points:
        rows = [{"job_id": job_id, "step": step, "values": values, "at": now} for step, values in points]
        statement = upsert_insert(session)(MetricPoint).values(rows)
        session.execute(statement.on_conflict_do_update(
            index_elements=[MetricPoint.job_id, MetricPoint.step],
            set_={"values": statement.excluded["values"], "at": statement.excluded.at}))
    _event(session, job_id, "progress", attempt, now, progress)
    return True


def discard_metrics_after(session: Session, job_id: uuid.UUID, attempt: int, step: int) -> bool:
    """Forget the logged steps past `step` (where this attempt resumes): they belong to a run the new
    attempt does not continue, and it logs those steps again itself."""
    if not _fenced_update(session, job_id, attempt, updated_at=utcnow()):
        return False
    session.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step))
    return True


def metric_points(session: Session, job_id: uuid.UUID) -> list[MetricPoint]:
    """The job's logged steps, in step order."""
    return list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step)))


def record_best(session: Session, job_id: uuid.UUID, attempt: int, step: int, fid: float, kid: float | None) -> bool:
    """Note the job's new best evaluated generator (its artifact is already recorded) and say so on its
    timeline, if `attempt` still holds the job."""
    now = utcnow()
    if not _fenced_update(session, job_id, attempt, best_step=step, best_fid=fid, best_kid=kid, updated_at=now):
        return False
    _event(session, job_id, "best", attempt, now, {"step": step, "fid": fid, "kid": kid})
    return True


def record_result(session: Session, job_id: uuid.UUID, attempt: int, result: dict[str, Any]) -> bool:
    """Keep an evaluate job's result document on its row, if `attempt` still holds the job."""
    return _fenced_update(session, job_id, attempt, result=result, updated_at=utcnow())


def add_compute_seconds(session: Session, job_id: uuid.UUID, attempt: int, seconds: float, device: str) -> bool:
    """Add an ending attempt's running seconds to the job's and note its device kind (GET /v1/usage). Fenced
    by the attempt number alone, not the status: it is written as the attempt ends, after it finished the job,
    and an attempt that another one took over from counts nothing."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt)
                             .values(compute_seconds=Job.compute_seconds + max(seconds, 0.0), device=device)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def set_checkpoint(session: Session, job_id: uuid.UUID, attempt: int, key: str, step: int) -> bool:
    """Point the job at a checkpoint that is fully written; a reclaimed job resumes from it.

    Not required to move forward: an attempt that found the checkpoint unusable starts over from 0.
    """
    now = utcnow()
    if not _fenced_update(session, job_id, attempt, checkpoint_key=key, checkpoint_step=step, updated_at=now):
        return False
    _event(session, job_id, "checkpoint", attempt, now, {"step": step})
    return True


def record_artifact(session: Session, job_id: uuid.UUID, attempt: int, name: str, key: str, size: int,
                    sha256: str, content_type: str, step: int | None = None) -> bool:
    """Record an uploaded artifact if `attempt` still holds the job.

    Idempotent on `key`: recording it again (a retried upload, or a resumed attempt rewriting the same
    step) updates the row to describe what the store now holds. The fencing UPDATE comes first, so the
    job row stays locked until commit and the artifact cannot appear for a fenced-out attempt.
    """
    now = utcnow()
    if not _fenced_update(session, job_id, attempt, updated_at=now):
        return False
    existing = session.scalars(select(Artifact).where(Artifact.key == key)).one_or_none()
    if existing is not None and existing.job_id != job_id:
        raise ValueError(f"artifact key {key!r} already belongs to job {existing.job_id}")
    artifact = existing or Artifact(id=uuid.uuid4(), job_id=job_id, key=key, created_at=now)
    artifact.name, artifact.size, artifact.sha256 = name, size, sha256
    artifact.content_type, artifact.step, artifact.attempt = content_type, step, attempt
    session.add(artifact)
    session.flush()
    return True


def forget_artifacts(session: Session, job_id: uuid.UUID, attempt: int, keys: list[str]) -> bool:
    """Delete the rows of the job's artifacts at `keys` if `attempt` still holds the job (checkpoint retention).

    The rows go before the objects (the caller deletes those after the commit): a crash between the two leaves
    an object no row names, never a row that a resume or a download would find without its object. The fencing
    UPDATE comes first, so a resuming attempt's claim waits for this commit and then no longer lists them.
    """
    if not _fenced_update(session, job_id, attempt, updated_at=utcnow()):
        return False
    session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.key.in_(keys)))
    return True


def finish_job(session: Session, job_id: uuid.UUID, attempt: int, status: str, error_type: str | None = None,
               error_detail: str | None = None, now: datetime | None = None) -> bool:
    """Move a running job to succeeded, failed or cancelled; False if `attempt` no longer holds it."""
    if status not in FINISHED_STATUSES:
        raise IllegalTransition(f"a running job can finish as {sorted(FINISHED_STATUSES)}, not {status!r}")
    now = now or utcnow()
    if not _fenced_update(session, job_id, attempt, status=status, error_type=error_type,
                          error_detail=error_detail, lease_expires_at=None, finished_at=now, updated_at=now):
        return False
    detail = {"error_type": error_type} if error_type else {}
    _event(session, job_id, status, attempt, now, detail)
    return True


def release_lease(session: Session, job_id: uuid.UUID, attempt: int, now: datetime | None = None) -> bool:
    """Give a running job back to the queue on a graceful stop (worker shutdown), or cancel it if that
    was requested meanwhile.

    The attempt number never goes down (it is the fencing token), so the job gets one more allowed
    attempt instead: a graceful stop does not spend the retry budget.
    """
    now = now or utcnow()
    row = session.execute(
        update(Job).where(*_holds(job_id, attempt))
        .values(status=case((Job.cancel_requested, JobStatus.CANCELLED), else_=JobStatus.QUEUED),
                finished_at=case((Job.cancel_requested, literal(now, UTCDateTime())), else_=None),
                max_attempts=case((Job.cancel_requested, Job.max_attempts), else_=Job.max_attempts + 1),
                worker=None, lease_expires_at=None, updated_at=now)
        .returning(Job.status)).one_or_none()
    if row is None:
        return False
    kind = "cancelled" if row.status == JobStatus.CANCELLED else "requeued"
    _event(session, job_id, kind, attempt, now, {"reason": "released"})
    return True


def request_cancel(session: Session, job_id: uuid.UUID, now: datetime | None = None) -> Job:
    """Cancel a queued job now, or ask the worker running it to stop at its next step.

    Raises JobNotFound, or IllegalTransition when the job has already finished. Asking twice for a
    running job is not an error and records one event.
    """
    now = now or utcnow()
    queued = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
        .returning(Job.attempt)).one_or_none()
    if queued is not None:
        _event(session, job_id, "cancelled", queued.attempt, now)
    else:
        running = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
            .values(cancel_requested=True, updated_at=now).returning(Job.attempt)).one_or_none()
        if running is not None:
            _event(session, job_id, "cancel_requested", running.attempt, now)
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(f"job {job_id} not found")
    if queued is None and job.status in FINISHED_STATUSES:
        raise IllegalTransition(f"job {job_id} has already finished ({job.status})")
    return job


def should_stop(session: Session, job_id: uuid.UUID, attempt: int) -> bool:
    """True when the worker holding `attempt` should stop: cancellation was requested, or it was fenced
    out (its lease expired and another attempt took the job), or the job is gone."""
    row = session.execute(select(Job.status, Job.attempt, Job.cancel_requested)
                          .where(Job.id == job_id)).one_or_none()
    return row is None or row.cancel_requested or row.attempt != attempt or row.status != JobStatus.RUNNING


def requeue_expired(session: Session, now: datetime | None = None) -> list[uuid.UUID]:
    """Deal with every running job whose lease expired; return the ids put back in the queue.

    The caller re-sends those to the broker. Jobs whose attempts are spent fail with error_type
    'worker_lost'; jobs whose cancellation was requested are cancelled, since nobody is left to do it.
    """
    now = now or utcnow()
    expired = session.execute(select(Job.id, Job.attempt, Job.max_attempts, Job.cancel_requested)
                              .where(_lease_expired(now)).order_by(Job.lease_expires_at)).all()
    requeued = []
    for job_id, attempt, max_attempts, cancel_requested in expired:
        if cancel_requested:
            values, kind = dict(status=JobStatus.CANCELLED, finished_at=now), "cancelled"
        elif attempt < max_attempts:
            values, kind = dict(status=JobStatus.QUEUED, worker=None), "requeued"
        else:
            values, kind = dict(status=JobStatus.FAILED, finished_at=now, error_type="worker_lost",
                                error_detail=f"the worker stopped heartbeating on attempt {attempt} of "
                                             f"{max_attempts}"), "failed"
        # Conditioned on what was read: a heartbeat or a claim in between wins over the reaper.
        result = session.execute(update(Job).where(*_holds(job_id, attempt), _lease_expired(now))
                                 .values(lease_expires_at=None, updated_at=now, **values))
        if result.rowcount != 1:
            continue
        _event(session, job_id, "lease_expired", attempt, now)
        _event(session, job_id, kind, attempt, now, {"error_type": "worker_lost"} if kind == "failed" else {})
        if kind == "requeued":
            requeued.append(job_id)
    return requeued


def requeue_for_retry(session: Session, job_id: uuid.UUID, attempt: int, error_type: str, detail: str,
                      now: datetime | None = None) -> str | None:
    """Give a running job back to the queue after a failure that another attempt may not meet (the
    artifact store was unreachable for longer than the upload retries lasted); it costs an attempt.

    Returns the new status (queued, or failed with `error_type` when the attempts are spent, or cancelled
    when that was requested), or None when `attempt` no longer holds the job.
    """
    now = now or utcnow()
    row = session.execute(select(Job.max_attempts, Job.cancel_requested).where(*_holds(job_id, attempt))
                          .with_for_update()).one_or_none()
    if row is None:
        return None
    if row.cancel_requested:
        values, kind = dict(status=JobStatus.CANCELLED, finished_at=now), "cancelled"
    elif attempt < row.max_attempts:
        values, kind = dict(status=JobStatus.QUEUED, worker=None), "requeued"
    else:
        values, kind = dict(status=JobStatus.FAILED, finished_at=now, error_type=error_type,
                            error_detail=detail), "failed"
    if not _fenced_update(session, job_id, attempt, lease_expires_at=None, updated_at=now, **values):
        return None
    _event(session, job_id, kind, attempt, now, {"error_type": error_type, "reason": detail})
    return values["status"]


def refuse_queued(session: Session, job_id: uuid.UUID, error_type: str, detail: str,
                  now: datetime | None = None) -> bool:
    """Fail a queued job without claiming it: one a worker found it could never run (worker.capacity); False
    when it is no longer queued (claimed, cancelled or finished meanwhile)."""
    now = now or utcnow()
    attempt = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .values(status=JobStatus.FAILED, error_type=error_type, error_detail=detail, finished_at=now, updated_at=now)
        .returning(Job.attempt)).scalar_one_or_none()
    if attempt is None:
        return False
    _event(session, job_id, JobStatus.FAILED, attempt, now, {"error_type": error_type})
    return True


def note_queued(session: Session, job_id: uuid.UUID, kind: str, detail: dict[str, Any]) -> bool:
    """Add an event to a queued job's timeline (why it still waits), unless its newest event already is one of
    `kind`: a job declined again each time it is sent says so once. False when it is not queued."""
    now = utcnow()
    attempt = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                              .values(updated_at=now).returning(Job.attempt)).scalar_one_or_none()
    if attempt is None:
        return False
    newest = session.scalar(select(JobEvent.kind).where(JobEvent.job_id == job_id)
                            .order_by(JobEvent.id.desc()).limit(1))
    if newest != kind:
        _event(session, job_id, kind, attempt, now, detail)
    return True


def record_event(session: Session, job_id: uuid.UUID, attempt: int, kind: str,
                 detail: dict[str, Any] | None = None) -> bool:
    """Add a note to the job's timeline (e.g. resumed_from_step) if `attempt` still holds the job."""
    now = utcnow()
    if not _fenced_update(session, job_id, attempt, updated_at=now):
        return False
    _event(session, job_id, kind, attempt, now, detail)
    return True


def checkpoints_newest_first(session: Session, job_id: uuid.UUID) -> list[Artifact]:
    """The job's recorded checkpoints, newest step first: where a re-queued attempt looks for one to
    resume from (each recorded with the sha256 the store must still match)."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.name.like("checkpoints/%"),
                                                       Artifact.step.is_not(None))
                                .order_by(Artifact.step.desc())))


def samples_oldest_first(session: Session, job_id: uuid.UUID) -> list[Artifact]:
    """The job's recorded sample grids (samples/step-*.png), in step order: its timeline of pictures."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.name.like("samples/%"),
                                                       Artifact.step.is_not(None))
                                .order_by(Artifact.step)))


def due_for_publish(session: Session, republish_seconds: float, max_pause_seconds: float = 3600,
                    now: datetime | None = None, limit: int = 500) -> list[tuple[uuid.UUID, str]]:
    """Queued jobs whose task message should be sent (again): (id, type), oldest first.

    A job waits `republish_seconds` after it was created or last published, then twice that, four times,
    ... up to `max_pause_seconds`: a message lost with a Redis restart or flush is replaced within a minute,
    while a job that simply waits behind a long training run adds few duplicates (which `claim_job` turns
    into no-ops anyway).
    """
    now = now or utcnow()
    since = literal(now - timedelta(seconds=republish_seconds), UTCDateTime())
    rows = session.execute(
        select(Job.id, Job.type, Job.created_at, Job.published_at, Job.publish_count)
        .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
               func.coalesce(Job.published_at, Job.created_at) < since)
        .order_by(Job.created_at).limit(limit)).all()
    due = []
    for job_id, job_type, created_at, published_at, count in rows:
        pause = min(republish_seconds * 2 ** max(count - 1, 0), max_pause_seconds)
        if (published_at or created_at) <= now - timedelta(seconds=pause):
            due.append((job_id, job_type))
    return due


def mark_published(session: Session, job_id: uuid.UUID, now: datetime | None = None) -> None:
    """Note that the job's task message was just sent (by the API or the reaper)."""
    now = now or utcnow()
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(published_at=now, publish_count=Job.publish_count + 1))


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The job as the database has it now, or None if it does not exist for this tenant."""
    return session.scalars(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
                           .execution_options(populate_existing=True)).one_or_none()


def list_jobs(session: Session, tenant_id: uuid.UUID, status: str | None = None, type: str | None = None,
              limit: int = 50, cursor: str | None = None, sort: str = "newest") -> tuple[list[Job], str | None]:
    """One page of the tenant's jobs, newest first, and the cursor of the next page (None on the last).

    Keyset pagination on (created_at, id): pages stay consistent while jobs are being created. `sort=
    "best_fid"` ranks the jobs that have an evaluated best generator, lowest FID first (keyset on
    (best_fid, id)); jobs without one are not in that ranking.
    """
    if limit < 1:
        raise ValueError(f"limit: must be positive, got {limit}")
    query = select(Job).where(Job.tenant_id == tenant_id, Job.deleted_at.is_(None))  # tombstones are not listed
    if status is not None:
        query = query.where(Job.status == status)
    if type is not None:
        query = query.where(Job.type == type)
    if sort == "best_fid":
        return _ranked_by_fid(session, query, limit, cursor)
    if sort != "newest":
        raise ValueError(f"sort: newest or best_fid, got {sort!r}")
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(literal(created_at, UTCDateTime()),
                                                                    literal(last_id, Job.id.type)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = list(session.scalars(query.execution_options(populate_existing=True)))
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    return jobs, encode_cursor(jobs[-1].created_at, jobs[-1].id)


def _ranked_by_fid(session: Session, query, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    query = query.where(Job.best_fid.is_not(None))
    if cursor is not None:
        fid, last_id = _decode_fid_cursor(cursor)
        query = query.where(tuple_(Job.best_fid, Job.id) > tuple_(literal(fid, Job.best_fid.type),
                                                                  literal(last_id, Job.id.type)))
    query = query.order_by(Job.best_fid, Job.id).limit(limit + 1)
    jobs = list(session.scalars(query.execution_options(populate_existing=True)))
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    raw = f"fid|{jobs[-1].best_fid.hex()}|{jobs[-1].id}"
    return jobs, base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_fid_cursor(cursor: str) -> tuple[float, uuid.UUID]:
    try:
        kind, fid, job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        value = float.fromhex(fid)
        if kind != "fid" or not math.isfinite(value):
            raise ValueError(kind)
        return value, uuid.UUID(job_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise BadCursor(f"cursor: not a cursor from a previous page sorted by best_fid: {cursor!r}") from None


def list_artifacts(session: Session, job_id: uuid.UUID) -> list[Artifact]:
    """The artifacts the job's attempts recorded, in key order (steps in order: keys carry them padded)."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.key)))


def list_events(session: Session, job_id: uuid.UUID, up_to: int | None = None) -> list[JobEvent]:
    """The job's timeline: state changes and notes, oldest first (not the stream's progress, samples,
    checkpoints and `completed`); with `up_to`, only events up to that id."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind.not_in(STREAM_ONLY_KINDS))
    if up_to is not None:
        query = query.where(JobEvent.id <= up_to)
    return list(session.scalars(query.order_by(JobEvent.id)))


def newest_event_id(session: Session, job_id: uuid.UUID) -> int:
    """The id of the job's newest event of any kind (0 when it has none): where a stream opened now starts."""
    return session.scalar(select(func.coalesce(func.max(JobEvent.id), 0)).where(JobEvent.job_id == job_id))


def events_after(session: Session, job_id: uuid.UUID, after_id: int, limit: int = 500) -> list[JobEvent]:
    """Every event of the job with an id above `after_id`, oldest first, at most `limit`: what a stream
    that has delivered `after_id` sends next."""
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
                                .order_by(JobEvent.id).limit(limit)))


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, id_text = raw.split("|")
        created_at, job_id = datetime.fromisoformat(created_text), uuid.UUID(id_text)
        if created_at.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        # The query compares in UTC: a time that has none (year 1 at +14:00) is no cursor of ours either.
        created_at = created_at.astimezone(timezone.utc)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise BadCursor(f"cursor: not a cursor from a previous page: {cursor!r}") from None
    return created_at, job_id


def _holds(job_id: uuid.UUID, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The fence: the job is running under exactly this attempt."""
    return Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING


def _lease_expired(now: datetime) -> ColumnElement[bool]:
    return and_(Job.status == JobStatus.RUNNING,
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))


def _fenced_update(session: Session, job_id: uuid.UUID, attempt: int, **values: Any) -> bool:
    result = session.execute(update(Job).where(*_holds(job_id, attempt)).values(**values)
                             .execution_options(synchronize_session="fetch"))
    return result.rowcount == 1


def _event(session: Session, job_id: uuid.UUID, kind: str, attempt: int, at: datetime,
           detail: dict[str, Any] | None = None) -> None:
    """Add an event; a finished status is followed by `completed`, the stream's last event.

    Callers have already updated the job's row in this transaction (or created it): that row lock is what
    keeps event ids in commit order for the job (core.db.JobEvent).
    """
    session.add(JobEvent(job_id=job_id, kind=kind, attempt=attempt, at=at, detail=detail or {}))
    if kind in FINISHED_STATUSES:
        session.add(JobEvent(job_id=job_id, kind="completed", attempt=attempt, at=at, detail={"status": kind}))
    # The webhook outbox: its messages commit or roll back with the change they report.
    webhooks.write_job_event(session, job_id, kind, attempt, at)
    session.flush()
