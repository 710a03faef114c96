"""Which queued job a worker takes next: priorities that never starve, and a cap on one tenant's running jobs.

Order. A job has a priority from 0 to 9 (default 5) and a `queue_key`: the time it was queued less one
`priority_step_seconds` (default 600) per priority level. A worker takes the queued job of its queue with the
lowest key, so among jobs queued close together a higher priority goes first, while a job can only be passed
over by jobs queued less than 9 steps after it: with the default step no job waits behind newer ones queued
more than 90 minutes after it, whatever their priority. That is aging without a background pass: the key is
fixed when the job is queued and kept when a job goes back to the queue (a lost lease, a warm shutdown), so a
requeued job is taken again before the ones queued after it.

The database holds the order; a task message is a doorbell. A worker woken by any message of its queue takes
the best claimable job of that queue, which may be another one: every queued job has its own message, so there
are never fewer doorbells than queued jobs, and a doorbell whose job was taken meanwhile takes the next one
instead of doing nothing. Nothing is lost with a Redis restart or flush: the reaper rings again for jobs still
queued (core.reaper), and the order and the cap are read from the database each time.

Cap. With `max_running_jobs_per_tenant` set, a worker passes over the queued jobs of tenants already at their
cap. The check is part of the claim's conditional UPDATE (core.jobs.claim_job), and on PostgreSQL the tenant's
row is locked first, so two workers claiming for one tenant at once cannot both pass it. When a job of a capped
tenant ends, its worker rings for that tenant's next queued job (`waiting_for_tenant`), which would otherwise
wait for the reaper.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from core.db import Job, JobStatus, UTCDateTime

MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 5


def queue_key(queued_at: datetime, priority: int, step_seconds: float) -> datetime:
    """The key a job queued at `queued_at` with `priority` is taken in (lowest first)."""
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority: must be {MIN_PRIORITY}-{MAX_PRIORITY}, got {priority}")
    return queued_at - timedelta(seconds=priority * step_seconds)


def running_count(tenant_id):
    """A scalar subquery: how many jobs of `tenant_id` (a value or a column) are running now."""
    running = aliased(Job)
    return (select(func.count()).select_from(running)
            .where(running.tenant_id == tenant_id, running.status == JobStatus.RUNNING).scalar_subquery())


def candidates(session: Session, job_type: str, max_running_per_tenant: int = 0, limit: int = 20) -> list[uuid.UUID]:
    """The next queued jobs of `job_type`'s queue a worker should try to claim, best first: those whose
    tenant is under its cap (when there is one) and whose cancellation was not requested."""
    query = (select(Job.id).where(Job.status == JobStatus.QUEUED, Job.type == job_type,
                                  Job.cancel_requested.is_(False))
             .order_by(Job.queue_key, Job.id).limit(limit))
    if max_running_per_tenant:
        query = query.where(running_count(Job.tenant_id) < max_running_per_tenant)
    return list(session.scalars(query))


def queue_position(session: Session, job: Job) -> int | None:
    """1 for the queued job its queue takes next, 2 for the one after, ...; None when it is not queued.

    Counted over the whole queue, every tenant's jobs included; a tenant at its running cap is passed over,
    so its jobs may start later than their position says."""
    if job.status != JobStatus.QUEUED or job.queue_key is None:
        return None
    key = literal(job.queue_key, UTCDateTime())
    ahead = session.scalar(
        select(func.count()).select_from(Job)
        .where(Job.status == JobStatus.QUEUED, Job.type == job.type, Job.cancel_requested.is_(False),
               or_(Job.queue_key < key, and_(Job.queue_key == key, Job.id < job.id))))
    return int(ahead or 0) + 1


def waiting_for_tenant(session: Session, tenant_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """The best queued job of each queue of `tenant_id`, (id, type): what to ring for when one of its jobs
    ends while it has a running cap, so its next job does not wait for the reaper."""
    rows = session.execute(select(Job.id, Job.type)
                           .where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED,
                                  Job.cancel_requested.is_(False))
                           .order_by(Job.queue_key, Job.id)).all()
    best: dict[str, uuid.UUID] = {}
    for job_id, job_type in rows:
        best.setdefault(job_type, job_id)
    return [(job_id, job_type) for job_type, job_id in best.items()]

