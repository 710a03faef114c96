"""Deleting what a tenant no longer needs: a finished job's artifacts, a dataset, a generator version.

Nothing a queued or running job needs is ever deleted. Each delete checks who needs the row and removes it in
one transaction that first locks the row the way a concurrent submission or claim would have to touch it:

- PostgreSQL: `SELECT ... FOR UPDATE` on the row. A job submission's foreign key to a dataset, a generator or a
  parent job holds a KEY SHARE lock on that row until it commits, and FOR UPDATE conflicts with it, so the
  delete waits for a submission in flight and then (READ COMMITTED: each statement sees what was committed
  before it began) finds its job in the check that follows. A submission that comes second waits for the
  delete instead, and its lookup (`lock_reference`, the same KEY SHARE lock taken when the reference is
  resolved) then finds the row gone, or the job deleted: a 4xx, not a job that points at nothing. A claim only
  ever takes a queued job, which already blocks the delete; a finished job is never claimed again.
- SQLite: the first statement is a write to the row, which takes the database's single write lock, so no
  other writer can commit between the check and the delete.

Objects are deleted from the store only after the rows are gone and committed: a crash in between leaves
objects that no row refers to, which the orphan reaper (core.orphans) deletes once they are old enough, and
never a row whose objects are missing.

What a deleted training job takes with it: every object under its prefix (checkpoints, samples, grid, metrics
files, its generators), its artifact and metric rows and its timeline; its row stays as a tombstone
(`deleted_at`) so its id answers 410 ever after. The registry versions it registered stay usable: a registry
is where a user promotes a generator, and deleting the run that made the `champion` must not delete the
champion. Their weights are copied to the tenant's generator keys (`uploaded_generator_key`, where uploads
live) before the job's prefix goes. The generate and evaluate jobs made from it keep their own outputs. A job
cannot be deleted while a queued or running job needs its generator (a generate job made from it, or a
generate / evaluate job of one of its registry versions): 409, cancel or wait for those first.

Torch-free; the API calls it (web.deletion).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from core import registry
from core.db import (FINISHED_STATUSES, Artifact, Dataset, Generator, Job, JobEvent, JobStatus, MetricPoint,
                     utcnow)
from core.error_text import first_line
from core.storage import ArtifactStore, ObjectNotFound, StorageError, job_prefix, uploaded_generator_key

log = logging.getLogger(__name__)
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


class NotFound(Exception):
    """No such row for this tenant (or another tenant's: they answer alike)."""


class Gone(Exception):
    """The job was deleted before: its tombstone answers the same way ever after."""


class NotFinished(Exception):
    """The job is queued or running: cancel it first."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the job is {status}: cancel it (or wait for it to finish) before deleting it")
        self.status = status


class InUse(Exception):
    """Queued or running jobs need what was to be deleted; `job_ids` says which (at most 20)."""

    def __init__(self, what: str, job_ids: list[uuid.UUID]) -> None:
        shown = ", ".join(str(job_id) for job_id in job_ids[:5])
        more = f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else ""
        super().__init__(f"{what} is needed by queued or running jobs ({shown}{more}); cancel them or wait "
                         "for them to finish, then delete it")
        self.job_ids = job_ids


@dataclass(frozen=True)
class Deleted:
    """What a delete removed from the store (`objects_deleted` is None when the store failed: the orphan
    reaper deletes what is left) and, for a job, the registry versions whose weights moved."""

    objects_deleted: int | None
    generators_moved: list[uuid.UUID]


def delete_job(session: Session, store: ArtifactStore, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Deleted:
    """Delete a finished job's objects and artifact rows and keep its row as a tombstone. Commits.

    NotFound, Gone (deleted before), NotFinished (queued or running) or InUse (a queued or running job needs
    its generator); the session is rolled back on each."""
    try:
        _lock(session, Job, Job.id == job_id, Job.tenant_id == tenant_id)
        status, deleted_at = session.execute(select(Job.status, Job.deleted_at).where(
            Job.id == job_id, Job.tenant_id == tenant_id)).one_or_none() or (None, None)
        if status is None:
            raise NotFound(f"no job {job_id}")
        if deleted_at is not None:
            raise Gone(f"job {job_id} was deleted at {deleted_at.isoformat()}")
        if status not in FINISHED_STATUSES:
            raise NotFinished(status)
        prefix = job_prefix(tenant_id, job_id)
        registered = session.execute(
            select(Generator.id, Generator.storage_key).where(Generator.tenant_id == tenant_id,
                                                              Generator.storage_key.startswith(prefix, autoescape=True))
            .with_for_update()).all()
        needing = list(session.scalars(select(Job.id).where(
            Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED),
            or_(Job.parent_job_id == job_id, Job.generator_id.in_([row.id for row in registered])))
            .order_by(Job.created_at).limit(20)))
        if needing:
            raise InUse(f"job {job_id}'s generator", needing)
        # Copy before the commit: a failed copy leaves the rows as they were (and an orphan the reaper takes).
        for generator_id, key in registered:
            moved = uploaded_generator_key(tenant_id, generator_id)
            try:
                with store.open(key) as source:
                    store.put_stream(moved, source)
            except ObjectNotFound:  # lost already: nothing to keep, and its row says so as it did before
                log.warning("job %s: registry version %s has no weights at %s to move", job_id, generator_id, key)
                continue
            session.execute(update(Generator).where(Generator.id == generator_id).values(storage_key=moved))
        for model in (Artifact, MetricPoint, JobEvent):
            session.execute(delete(model).where(model.job_id == job_id))
        session.execute(update(Job).where(Job.id == job_id).values(
            deleted_at=utcnow(), checkpoint_key=None, checkpoint_step=None))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return Deleted(_delete_prefix(store, prefix), [generator_id for generator_id, _ in registered])


def delete_dataset(session: Session, store: ArtifactStore, tenant_id: uuid.UUID, dataset_id: uuid.UUID) -> Deleted:
    """Delete a dataset's row and objects; NotFound, or InUse while a queued or running job uses it. Commits."""
    try:
        _lock(session, Dataset, Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
        prefix = session.scalar(select(Dataset.storage_prefix).where(Dataset.id == dataset_id,
                                                                     Dataset.tenant_id == tenant_id))
        if prefix is None:
            raise NotFound(f"no dataset {dataset_id}")
        needing = list(session.scalars(select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(UNFINISHED))
                                       .order_by(Job.created_at).limit(20)))
        if needing:
            raise InUse(f"dataset {dataset_id}", needing)
        # Finished jobs that used it keep their rows; their dataset_id becomes NULL (ON DELETE SET NULL).
        session.execute(delete(Dataset).where(Dataset.id == dataset_id))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return Deleted(_delete_prefix(store, prefix), [])


def delete_generator(session: Session, store: ArtifactStore, tenant_id: uuid.UUID, ref: str) -> Deleted:
    """Delete the registry version `ref` names (id, name:version or name@alias) with the aliases on it, and its
    weights unless a job's artifact row still lists them (a live training job's own generator). NotFound, or
    InUse while a queued or running job samples or evaluates it. Commits."""
    try:
        found = registry.resolve(session, tenant_id, ref)
        if found is None:
            raise NotFound(f"no generator {ref[:200]!r}")
        generator_id = found.id
        _lock(session, Generator, Generator.id == generator_id)
        key = session.scalar(select(Generator.storage_key).where(Generator.id == generator_id))
        if key is None:  # deleted while the reference was resolved
            raise NotFound(f"no generator {ref[:200]!r}")
        needing = list(session.scalars(select(Job.id).where(Job.generator_id == generator_id,
                                                            Job.status.in_(UNFINISHED))
                                       .order_by(Job.created_at).limit(20)))
        if needing:
            raise InUse(f"generator {ref[:200]!r}", needing)
        still_used = session.scalar(select(
            exists().where(Artifact.key == key) | exists().where(Generator.storage_key == key,
                                                                 Generator.id != generator_id)))
        # The aliases go with it (ON DELETE CASCADE); finished jobs of it keep their rows, generator_id NULL.
        session.execute(delete(Generator).where(Generator.id == generator_id))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if still_used:
        return Deleted(0, [])
    try:
        store.delete(key)
    except StorageError as exc:
        log.warning("generator %s deleted; its weights %s stay for the orphan reaper: %s", generator_id, key,
                    first_line(exc))
        return Deleted(None, [])
    return Deleted(1, [])


def lock_reference(session: Session, model: type, row_id: uuid.UUID) -> bool:
    """Whether a dataset, generator or (not deleted) job that a new job is about to refer to is still there,
    holding it (PostgreSQL: FOR KEY SHARE, what the new job's foreign key takes anyway) until the commit, so a
    concurrent delete either finishes first (and this is False) or waits for the new job and sees it."""
    conditions = [model.id == row_id]
    if model is Job:
        conditions.append(Job.deleted_at.is_(None))
    return session.scalar(select(model.id).where(*conditions).with_for_update(key_share=True)) is not None


def _lock(session: Session, model: type, *where) -> None:
    """Lock the row for the rest of the transaction (see the module docstring for each backend)."""
    if session.get_bind().dialect.name == "sqlite":
        # A write that changes nothing takes SQLite's write lock. A Core update also sets a column's onupdate
        # (jobs.updated_at) unless it is given, so that is written back as it was too.
        unchanged = {"id": model.id, **({"updated_at": model.updated_at} if hasattr(model, "updated_at") else {})}
        session.execute(update(model).where(*where).values(**unchanged).execution_options(synchronize_session=False))
    else:
        session.execute(select(model.id).where(*where).with_for_update())


def _delete_prefix(store: ArtifactStore, prefix: str) -> int | None:
    try:
        keys = store.list(prefix)
        store.delete_prefix(prefix)
    except StorageError as exc:
        log.warning("rows deleted; the objects under %s stay for the orphan reaper: %s", prefix, first_line(exc))
        return None
    return len(keys)
