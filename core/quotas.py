"""Per-tenant quotas and checkpoint retention: what a tenant may create and keep (issue 11).

- Jobs created per hour (`Settings.max_jobs_per_hour`): every job a tenant created in the last hour counts,
  whatever became of it, so a create-and-cancel loop meets the cap as surely as a create-and-wait one. Counted
  on the jobs table's (tenant_id, created_at, id) index; `hourly_job_wait` says how long until one more fits.
- Stored bytes (`Settings.tenant_storage_bytes`): the sizes the database recorded for the tenant's objects --
  its jobs' artifacts (artifacts.size), its uploaded datasets (datasets.size_bytes) and its registry versions whose
  weights are not a job's artifact (uploads, and a deleted job's versions, moved out of it; a live job's
  registered generators are that job's artifacts, counted once as such; core.usage). The API refuses a job
  whose estimate would pass the quota, counting what the tenant's queued and running jobs are still expected
  to store (`reserved_bytes`), and an upload that would; the worker refuses an upload that would
  (`check_storage` -> `StorageQuotaExceeded`, the job fails as `storage_quota`).
- Checkpoint retention (`Settings.keep_checkpoints`): `checkpoints_to_delete` says which of a job's recorded
  checkpoints may go once a new one landed.

The counts read committed rows, so two requests of one tenant racing each other may both pass a cap by one
job or one upload; the API takes a lock on the tenant's row for job submissions (web.jobs), which closes that
race for the hourly cap. Torch-free.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timedelta
from typing import Callable, Iterable

from sqlalchemy import BigInteger, case, cast, func, select
from sqlalchemy.orm import Session

from core.db import Artifact, Job, JobStatus, utcnow
from core.usage import stored_bytes_by_kind

HOUR = timedelta(hours=1)
_CHECKPOINT_KEY = re.compile(r"/checkpoints/step-(\d+)\.pt$")


class StorageQuotaExceeded(Exception):
    """Storing `adding` more bytes would take the tenant past its quota; the message says used and quota (and
    what the tenant's unfinished jobs are expected to add, `reserved`)."""

    def __init__(self, used: int, adding: int, quota: int, what: str, reserved: int = 0) -> None:
        pending = f" and its unfinished jobs are expected to add {reserved}" if reserved else ""
        super().__init__(f"{what} needs {adding} bytes; the tenant stores {used} of its quota of {quota} bytes"
                         f"{pending} ({max(quota - used - reserved, 0)} left)")
        self.used, self.adding, self.quota, self.reserved = used, adding, quota, reserved


def hourly_job_wait(session: Session, tenant_id: uuid.UUID, limit: int, now: datetime | None = None,
                    pending: int = 0) -> float | None:
    """Seconds until the tenant may have created one more job within an hour (None: it may now).

    `pending`: jobs of this transaction that are flushed but not counted against the cap (the one being
    created). The wait is until enough of the oldest jobs in the window leave it for the tenant to be under
    `limit` again.
    """
    now = now or utcnow()
    since = now - HOUR
    in_window = Job.tenant_id == tenant_id, Job.created_at > since
    created = session.scalar(select(func.count()).select_from(Job).where(*in_window)) - pending
    if created < limit:
        return None
    # The (created - limit + 1)-th oldest job in the window has to leave it before one more fits.
    leaving = session.scalar(select(Job.created_at).where(*in_window)
                             .order_by(Job.created_at, Job.id).offset(created - limit).limit(1))
    return max((leaving + HOUR - now).total_seconds(), 0.0) if leaving is not None else 0.0


def retry_after(seconds: float) -> str:
    """An HTTP Retry-After value (whole seconds, at least 1) for a wait of `seconds`."""
    return str(max(1, math.ceil(seconds)))


def stored_bytes(session: Session, tenant_id: uuid.UUID) -> int:
    """The bytes the tenant keeps in the artifact store, as the database recorded them (core.usage counts them
    by kind; a registry version is counted once, as a job's artifact while its weights are one)."""
    return sum(stored_bytes_by_kind(session, tenant_id).values())


def reserved_bytes(session: Session, tenant_id: uuid.UUID, estimate: Callable[[Job], int],
                   besides: uuid.UUID | None = None) -> int:
    """What the tenant's queued and running jobs (but `besides`) are still expected to store: each one's
    estimate less what it has stored so far.

    A job whose request keeps its estimate (`request.estimate.storage_bytes`, every training job) is summed by
    the database; only the others are loaded and given to `estimate`. The API asks this under the tenant's
    lock for every submission, and loading each queued job there made a burst of 110 submissions wait on one
    another for seconds (bench/load_test.py, issue 12)."""
    unfinished = (Job.tenant_id == tenant_id, Job.id != besides, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
    kept = cast(Job.request[("estimate", "storage_bytes")].as_string(), BigInteger)
    stored_of_job = (select(func.coalesce(func.sum(Artifact.size), 0)).where(Artifact.job_id == Job.id)
                     .correlate(Job).scalar_subquery())
    summed, without_estimate = session.execute(
        select(func.coalesce(func.sum(case((kept > stored_of_job, kept - stored_of_job), else_=0)), 0),
               func.coalesce(func.sum(case((kept.is_(None), 1), else_=0)), 0))
        .where(*unfinished)).one()
    if not without_estimate:
        return int(summed)
    others = list(session.scalars(select(Job).where(*unfinished, kept.is_(None))))
    stored = dict(session.execute(select(Artifact.job_id, func.sum(Artifact.size))
                                  .where(Artifact.job_id.in_([job.id for job in others]))
                                  .group_by(Artifact.job_id)).all())
    return int(summed) + sum(max(estimate(job) - int(stored.get(job.id) or 0), 0) for job in others)


def check_storage(session: Session, tenant_id: uuid.UUID, adding: int, quota: int, what: str,
                  replacing_key: str | None = None, reserved: int = 0) -> None:
    """StorageQuotaExceeded unless the tenant may store `adding` more bytes (besides `reserved`, what its
    unfinished jobs are expected to store). `replacing_key`: an artifact that the new object overwrites (a
    job's live grid.png), whose recorded size is freed by it."""
    used = stored_bytes(session, tenant_id)
    if replacing_key is not None:
        used -= session.scalar(select(func.coalesce(func.sum(Artifact.size), 0))
                               .where(Artifact.key == replacing_key)) or 0
    if used + reserved + adding > quota:
        raise StorageQuotaExceeded(used, adding, quota, what, reserved)


def checkpoint_step(key: str) -> int | None:
    """The step of a checkpoint's store key (core.storage.checkpoint_key's `.../step-0001200.pt`), else None."""
    match = _CHECKPOINT_KEY.search(key)
    return int(match.group(1)) if match else None


def checkpoints_to_delete(newest_first: Iterable[tuple[str, int]], keep: int, final: bool,
                          protected_keys: Iterable[str] = (), protected_steps: Iterable[int] = ()
                          ) -> list[tuple[str, int]]:
    """Which of a job's checkpoints, (key, step) newest first, may be deleted once the newest one landed: all
    but the newest `keep` intermediate ones, the newest itself when it is the run's final one (`final`), and
    the protected ones (the one the job's row points at for resuming, the best evaluated step's)."""
    kept = keep + (1 if final else 0)
    protected_keys, protected_steps = set(protected_keys), set(protected_steps)
    return [(key, step) for key, step in list(newest_first)[kept:]
            if key not in protected_keys and step not in protected_steps]
