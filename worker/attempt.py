"""One claimed attempt at a job, as the worker's tasks see it: its fencing token, its lease, and writes
and uploads that stop the moment another attempt holds the job.

`Attempt.write` runs a fenced core.jobs transition and commits it, raising `FencedOut` when the database
refuses it; `Attempt.upload` checks the tenant's storage quota (`StorageQuotaExceeded`, core.quotas) and the
fence, then uploads with retries (`StorageUnavailable` when the store stays down), then records the artifact;
`Attempt.delete_checkpoints` applies Settings.keep_checkpoints. `LeaseKeeper` renews the lease from a thread
of its own. A database that is briefly away is waited out (`Attempt.retry_db`). Imports no torch.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from celery import Celery
from tenacity import (RetryCallState, Retrying, retry_if_exception, retry_if_exception_type, stop_after_attempt,
                      wait_chain, wait_fixed)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import jobs, quotas
from core.db import Job, JobStatus, utcnow
from core.error_text import first_line
from core.queue import publish, send_job_task
from core.settings import Settings
from core.storage import ArtifactStore, ObjectNotFound, StorageError, job_prefix

from worker.metrics import UPLOAD_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")


class FencedOut(Exception):
    """This attempt no longer holds the job (its lease was taken over, or the job is gone): stop now."""


class StorageUnavailable(Exception):
    """The artifact store kept failing after every retry; the job goes back to the queue (an attempt)."""


@dataclass(frozen=True)
class Context:
    """What a worker process's tasks share: settings, database sessions, the artifact store and the app
    (which publishes task messages: this is a core.queue.JobQueue for the reaper too)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    app: Celery

    def enqueue(self, job_type: str, job_id: str) -> None:
        send_job_task(self.app, job_type, job_id)

    def publish(self, job_type: str, job_id: uuid.UUID) -> None:
        """Send the job's task message again (after a release); the reaper does it if the broker is away."""
        with self.session_factory() as session:
            publish(self, session, job_type, job_id)


class LeaseKeeper(threading.Thread):
    """Extends the attempt's lease every third of its length, on a session of its own, for as long as
    the attempt runs -- through dataset downloads, long steps and uploads alike. It stops extending when
    the process is frozen or killed (so the lease runs out and the reaper hands the job on), and sets
    `lost` when the database says this attempt no longer holds the job."""

    def __init__(self, context: Context, job_id: uuid.UUID, attempt: int) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.context, self.job_id, self.attempt = context, job_id, attempt
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        lease = self.context.settings.lease_seconds
        with self.context.session_factory() as session:
            while not self._halt.wait(max(lease / 3, 0.2)):
                try:
                    held = jobs.heartbeat(session, self.job_id, self.attempt, lease)
                    session.commit()
                except SQLAlchemyError as exc:  # the database is away: keep trying until the lease ends
                    session.rollback()
                    log.warning("job %s: heartbeat failed: %s", self.job_id, first_line(exc))
                    continue
                if not held:
                    self.lost.set()
                    return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def runtime_limit(job_request: dict[str, Any] | None, server_limit: int) -> int:
    """A job's runtime limit in seconds: its request's `max_runtime_seconds` when it gives a valid one,
    never more than the server's limit now (which may have been lowered since the job was submitted)."""
    asked = (job_request or {}).get("max_runtime_seconds")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return min(asked, server_limit)
    return server_limit


class Attempt:
    """One claimed attempt at a job: its session, its fencing token, and writes that stop when fenced."""

    def __init__(self, context: Context, session: Session, job_id: uuid.UUID, attempt: int) -> None:
        self.context, self.session, self.job_id, self.attempt = context, session, job_id, attempt
        self.store = context.store
        job = self.job()
        self.tenant_id, self.job_type = job.tenant_id, job.type
        # The runtime limit: the job's own (a train request's max_runtime_seconds) within the server's,
        # counted from the job's first start, across attempts.
        self.runtime_limit = runtime_limit(job.request, context.settings.max_job_seconds)
        started = job.started_at or utcnow()
        remaining = (started - utcnow()).total_seconds() + self.runtime_limit
        self.deadline = time.monotonic() + remaining
        self.lease = LeaseKeeper(context, job_id, attempt)
        # The attempt's running seconds and device kind, added to the job's as it ends (`account`).
        self.began = time.monotonic()
        self.device: str | None = None
        self._accounted = False

    def job(self) -> Job:
        job = self.session.get(Job, self.job_id, populate_existing=True)
        if job is None:
            raise FencedOut(f"job {self.job_id} is gone")
        return job

    def write(self, transition: Callable[..., bool], *args: Any, **kwargs: Any) -> None:
        """Run a fenced core.jobs transition and commit it; FencedOut when it no longer holds the job."""

        def attempt_write() -> bool:
            held = transition(self.session, self.job_id, self.attempt, *args, **kwargs)
            if held:
                self.session.commit()
            return held

        if not self.retry_db(attempt_write):
            self.session.rollback()
            raise FencedOut(f"job {self.job_id}: attempt {self.attempt} no longer holds it "
                            f"({transition.__name__} refused)")

    def retry_db(self, operation: Callable[[], T]) -> T:
        """Run `operation`, waiting out a database that is briefly away (about a minute in all). Longer,
        the error propagates, the lease runs out meanwhile, and the reaper gives the job to a later attempt
        once the database is back."""

        def waiting(state: RetryCallState) -> None:
            log.warning("job %s: database unavailable (%s); retrying in %g s", self.job_id,
                        first_line(state.outcome.exception()), state.next_action.sleep)

        return Retrying(retry=retry_if_exception_type(OperationalError), wait=_pauses(DB_RETRY_PAUSES),
                        stop=stop_after_attempt(len(DB_RETRY_PAUSES) + 1), reraise=True,
                        after=lambda _: self.session.rollback(), before_sleep=waiting)(operation)

    def heartbeat(self) -> None:
        """The lease itself is kept by `LeaseKeeper`; here the attempt learns that it was lost."""
        if self.lease.lost.is_set():
            raise FencedOut(f"job {self.job_id}: attempt {self.attempt} lost its lease")

    def should_stop(self) -> bool:
        def check() -> bool:
            stop = jobs.should_stop(self.session, self.job_id, self.attempt)
            self.session.commit()  # end the read transaction: the next check must see new commits
            return stop

        return self.retry_db(check)

    def ensure_holds(self) -> None:
        """Checked right before each upload, so a fenced-out attempt does not overwrite its successor's
        objects in the store (its database writes are refused anyway)."""
        self.heartbeat()
        if self.should_stop() and not self.cancel_requested():
            raise FencedOut(f"job {self.job_id}: attempt {self.attempt} no longer holds it")

    def cancel_requested(self) -> bool:
        job = self.retry_db(self.job)
        return job.cancel_requested and job.attempt == self.attempt and job.status == JobStatus.RUNNING

    def upload(self, key: str, path: Path, step: int | None = None) -> None:
        self.check_quota(key, path.stat().st_size)
        self._record(self._put(lambda: self.store.put_file(key, path), key), step)

    def upload_bytes(self, key: str, data: bytes) -> None:
        self.check_quota(key, len(data))
        self._record(self._put(lambda: self.store.put_bytes(key, data), key), None)

    def check_quota(self, key: str, size: int) -> None:
        """StorageQuotaExceeded (the job fails as `storage_quota`, not retried) when storing `size` bytes at
        `key` would take the tenant past Settings.tenant_storage_bytes; nothing is uploaded then."""
        name = key.removeprefix(job_prefix(self.tenant_id, self.job_id))

        def check() -> None:
            quotas.check_storage(self.session, self.tenant_id, size, self.context.settings.tenant_storage_bytes,
                                 f"uploading {name}", replacing_key=key)
            self.session.commit()  # end the read transaction: the next check must see new commits

        self.retry_db(check)

    def delete_checkpoints(self, keep: int, final: bool) -> None:
        """Checkpoint retention (Settings.keep_checkpoints): delete all but the newest `keep` intermediate
        checkpoints, the final one and the protected ones (the row's resume checkpoint, the best step's).

        Rows first, in a fenced transaction, then objects: a crash in between leaves objects without rows,
        which no resume or download can find; the next pass deletes every object under the job's
        checkpoints/ older than every kept one that no row names (so does a failed delete, logged and left to
        that pass). Only older ones: a newer object without a row may be a successor's upload in flight."""

        def read() -> tuple[list[tuple[str, int]], list[str], list[int]]:
            job = self.job()
            recorded = [(a.key, a.step) for a in jobs.checkpoints_newest_first(self.session, self.job_id)]
            protected = ([job.checkpoint_key] if job.checkpoint_key else [],
                         [job.best_step] if job.best_step is not None else [])
            self.session.commit()
            return recorded, *protected

        recorded, protected_keys, protected_steps = self.retry_db(read)
        doomed = [key for key, _ in quotas.checkpoints_to_delete(recorded, keep, final, protected_keys,
                                                                  protected_steps)]
        oldest_kept = min((step for key, step in recorded if key not in doomed), default=0)
        try:
            stored = self.store.list(job_prefix(self.tenant_id, self.job_id) + "checkpoints/")
            leftovers = [key for key in stored if (step := quotas.checkpoint_step(key)) is not None
                         and step < oldest_kept and key not in dict(recorded)]
            if doomed or leftovers:
                # Fenced even with no row to delete: a fenced-out attempt must not delete objects either.
                self.write(jobs.forget_artifacts, doomed)
                for key in doomed + leftovers:
                    self.store.delete(key)
        except StorageError as exc:
            log.warning("job %s: could not delete old checkpoints (%s); the next checkpoint tries again",
                        self.job_id, exc)

    def _put(self, put: Callable[[], Any], key: str):
        """Upload with retries and a growing pause: an S3 outage of up to half a minute costs nothing. This
        stacks on boto3's own retries on purpose: those (S3Store's, a few within a second) ride out a
        dropped connection inside one call; these ride out the store being away, and check before each
        try that this attempt still holds the job."""

        def attempt_put():
            self.ensure_holds()
            try:
                return put()
            except StorageError:
                UPLOAD_ERRORS.inc()  # every failed try: an outage shows even when a retry gets through
                raise

        def waiting(state: RetryCallState) -> None:
            log.warning("job %s: upload of %s failed (%s); retrying in %g s", self.job_id, key,
                        state.outcome.exception(), state.next_action.sleep)

        retryable = retry_if_exception(lambda e: isinstance(e, StorageError) and not isinstance(e, ObjectNotFound))
        try:
            return Retrying(retry=retryable, wait=_pauses(UPLOAD_RETRY_PAUSES),
                            stop=stop_after_attempt(len(UPLOAD_RETRY_PAUSES) + 1), reraise=True,
                            before_sleep=waiting)(attempt_put)
        except ObjectNotFound:
            raise
        except StorageError as exc:
            raise StorageUnavailable(f"could not upload {key}: {exc}") from exc

    def _record(self, stored, step: int | None) -> None:
        # Keys are <job prefix><name>; the name is what a user sees in the artifact list.
        name = stored.key.removeprefix(job_prefix(self.tenant_id, self.job_id))
        self.write(jobs.record_artifact, name, stored.key, stored.size, stored.sha256, stored.content_type,
                   step=step)

    def finish(self, status: str, error_type: str | None = None, detail: str | None = None) -> None:
        self.write(jobs.finish_job, status, error_type, detail)

    def fail(self, error_type: str, detail: str) -> None:
        """Record FAILED; a fenced-out attempt has nothing left to record, which is not an error."""
        self.session.rollback()  # the failure may have left the session mid-transaction
        try:
            self.finish(JobStatus.FAILED, error_type, detail)
        except FencedOut:
            log.warning("job %s: failed with %s, but attempt %s no longer holds it", self.job_id, error_type,
                        self.attempt)

    def account(self) -> None:
        """Add this attempt's running seconds to the job's, once (a requeue or release already did, in its own
        transaction: a successor may claim the job the moment it is queued)."""
        if self._accounted:
            return
        try:
            self.session.rollback()
            self._accounted = self._add_compute()
            self.session.commit()
        except SQLAlchemyError as exc:  # usage loses this attempt's seconds; the job's state is already recorded
            self.session.rollback()
            log.warning("job %s: attempt %s's compute seconds not recorded (database unavailable): %s",
                        self.job_id, self.attempt, first_line(exc))

    def _add_compute(self) -> bool:
        return jobs.add_compute_seconds(self.session, self.job_id, self.attempt, time.monotonic() - self.began,
                                        self.device or "cpu")

    def release(self) -> None:
        """Graceful stop: hand the job back to the queue now (not when the lease runs out) and ring the bell."""
        self.session.rollback()
        counted = self._add_compute()
        if jobs.release_lease(self.session, self.job_id, self.attempt):
            self.session.commit()
            self._accounted = counted
            log.info("job %s: released on shutdown; published again", self.job_id)
            self.context.publish(self.job_type, self.job_id)

    def requeue(self, error_type: str, detail: str) -> None:
        self.session.rollback()
        counted = self._add_compute()
        status = jobs.requeue_for_retry(self.session, self.job_id, self.attempt, error_type, detail)
        self.session.commit()
        self._accounted = counted
        if status == JobStatus.QUEUED:
            self.context.publish(self.job_type, self.job_id)


def _pauses(pauses: tuple[float, ...]):
    return wait_chain(*(wait_fixed(pause) for pause in pauses))


# A database write waits this long in all (about a default lease) before the attempt gives up.
DB_RETRY_PAUSES = (0.5, 1, 2, 4, 8, 16, 30)
# Pauses between tries of one upload: 0.5 + 1 + 2 + 4 + 8 + 16 = 31.5 s of S3 outage absorbed.
UPLOAD_RETRY_PAUSES = (0.5, 1, 2, 4, 8, 16)
