"""The reaper: makes the database, not the broker, decide that every job gets run.

Each pass (every `settings.reap_seconds`, from Celery beat's `dcgan.reap` task or `dcgan up`'s loop):
1. running jobs whose lease expired (their worker was killed, frozen or lost its network) go back to the
   queue, or fail with `worker_lost` once their attempts are spent (`core.jobs.requeue_expired`), and
   the re-queued ones are published at once;
2. queued jobs that no worker has claimed for a while are published again (`core.jobs.due_for_publish`):
   this is what survives a Redis restart or flush, and an API that could not reach the broker;
3. Idempotency-Key records older than `settings.idempotency_hours` are deleted;
4. given the artifact store, the next `settings.orphan_batch` objects of the store are looked at and those no
   row refers to, older than `settings.orphan_grace_seconds`, are deleted (core.orphans).

Publishing goes through `core.queue.publish`; when the broker is down the job stays queued with its old
`published_at`, this pass stops publishing, and a later pass tries again. Several reapers may run at once;
every transition is a conditional UPDATE, so they cannot double-count, and a duplicate message is a no-op
for the worker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.db import IdempotencyRecord, Job, utcnow
from core.error_text import first_line
from core.orphans import OrphanScan, reap_orphans
from core.queue import JobQueue, publish
from core.settings import Settings
from core.storage import ArtifactStore, StorageError

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    published: list[uuid.UUID] = field(default_factory=list)
    publish_failures: int = 0
    idempotency_records_deleted: int = 0
    orphans_deleted: int = 0


def reap_once(session_factory: sessionmaker[Session], queue: JobQueue, settings: Settings,
              store: ArtifactStore | None = None, orphans: OrphanScan | None = None) -> ReapReport:
    """One pass; the orphan step (4.) runs when a `store` is given, walking on from `orphans` (the caller keeps
    it between passes; a new one starts at the first key)."""
    report = ReapReport()
    with session_factory() as session:
        report.requeued = jobs.requeue_expired(session)
        session.commit()
        due = jobs.due_for_publish(session, settings.republish_seconds)
        types = dict(session.execute(
            select(Job.id, Job.type).where(Job.id.in_(report.requeued))).all()) if report.requeued else {}
        session.commit()
        todo = [(job_id, types[job_id]) for job_id in report.requeued if job_id in types]
        todo += [(job_id, job_type) for job_id, job_type in due if job_id not in types]
        for job_id, job_type in todo:
            if not publish(queue, session, job_type, job_id):  # the broker is down: the next pass tries again
                report.publish_failures += 1
                break
            report.published.append(job_id)
        report.idempotency_records_deleted = delete_expired_idempotency_records(session,
                                                                                settings.idempotency_hours)
        session.commit()
        if store is not None:
            try:
                report.orphans_deleted = len(reap_orphans(session, store, orphans or OrphanScan(),
                                                          settings.orphan_grace_seconds, settings.orphan_batch))
            except StorageError as exc:  # the store is down: the next pass looks again
                log.warning("reaper: cannot reap orphaned objects, will retry: %s", first_line(exc))
    if report.requeued or report.published or report.publish_failures or report.idempotency_records_deleted:
        log.info("reaper: requeued %d, published %d, publish failures %d, idempotency records deleted %d",
                 len(report.requeued), len(report.published), report.publish_failures,
                 report.idempotency_records_deleted)
    return report


def delete_expired_idempotency_records(session: Session, hours: int, now: datetime | None = None) -> int:
    """Delete the Idempotency-Key records made more than `hours` ago; how many went. The caller commits.

    A client retrying within the window gets its first answer; after it, the key is free again."""
    cutoff = (now or utcnow()) - timedelta(hours=hours)
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return result.rowcount or 0


def run_reaper(session_factory: sessionmaker[Session], queue: JobQueue, settings: Settings,
               stop: threading.Event, store: ArtifactStore | None = None) -> None:
    """Reap every `settings.reap_seconds` until `stop` is set (`dcgan up` runs this in a thread).

    A database outage is logged and retried on the next pass; it never ends the loop.
    """
    orphans = OrphanScan()
    while not stop.is_set():
        try:
            reap_once(session_factory, queue, settings, store, orphans)
        except SQLAlchemyError as exc:
            log.warning("reaper: database unavailable, will retry: %s", first_line(exc))
        stop.wait(settings.reap_seconds)
