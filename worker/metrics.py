"""A worker's own Prometheus series: training steps and images it ran, failed uploads, and how long the jobs
it finished took; served on DCGAN_WORKER_METRICS_PORT (0: not served) by prometheus_client's HTTP server.

These are counted where they happen, in the worker's process: the database knows a job's latest progress
(core.metrics reads that at the API's scrape), but not every step a worker ran between two progress
writes, nor a failed upload that a retry then got through. With a forking pool (`--pool prefork`) each child
writes prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, which `dcgan worker` sets before
Celery starts) and the server in the parent merges them; with the default solo or threads pool there is one
process and the series are read from it directly.
"""

from __future__ import annotations

import logging
import threading
import uuid

from prometheus_client import Counter, Histogram
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db import FINISHED_STATUSES, Job
from core.metrics import registry_for
from core.settings import Settings

log = logging.getLogger(__name__)

# Not in prometheus_client's global registry: `serve` builds the registry the HTTP server reads.
TRAINING_STEPS = Counter("dcgan_worker_training_steps", "Training steps this worker ran", registry=None)
TRAINING_IMAGES = Counter("dcgan_worker_training_images", "Real images this worker's training steps consumed "
                          "(steps x batch size)", registry=None)
UPLOAD_ERRORS = Counter("dcgan_storage_upload_errors", "Uploads to the artifact store that failed (each failed "
                        "try; a retry that then succeeds still counts the failure)", registry=None)
# Seconds to a day: a tiny CPU job takes seconds, a GPU training run hours.
JOB_DURATION = Histogram("dcgan_job_duration_seconds", "Jobs finished by this worker: seconds from their first "
                         "start to their end, by type and final status", ["type", "status"], registry=None,
                         buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400))
LOCAL_METRICS = (TRAINING_STEPS, TRAINING_IMAGES, UPLOAD_ERRORS, JOB_DURATION)


def serve(settings: Settings) -> None:
    """Serve the worker's series on settings.worker_metrics_port (all interfaces: Prometheus scrapes the
    worker's container), when the port is set; in a daemon thread, for the life of the process."""
    if not settings.worker_metrics_port:
        return
    from prometheus_client import start_http_server

    registry = registry_for(settings.metrics_multiproc_dir, local=LOCAL_METRICS)
    try:
        start_http_server(settings.worker_metrics_port, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"DCGAN_WORKER_METRICS_PORT={settings.worker_metrics_port}: cannot serve "
                                 f"metrics there ({exc.strerror}); give each worker on a machine its own port") from exc
    log.info("metrics on port %d", settings.worker_metrics_port)


def mark_process_dead(settings: Settings, pid: int) -> None:
    """A pool child is gone: drop its live-gauge files (its counters stay in the totals)."""
    if settings.metrics_multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, settings.metrics_multiproc_dir)


class TrainingCounter:
    """Counts the steps of one attempt's progress reports: each report adds the steps since the one before,
    starting from the step the attempt resumed at, so a resumed job does not count its old steps again."""

    def __init__(self, start_step: int, batch_size: int) -> None:
        self.last_step, self.batch_size = start_step, batch_size
        self._lock = threading.Lock()

    def count(self, step: int) -> None:
        with self._lock:
            done, self.last_step = max(0, step - self.last_step), max(step, self.last_step)
        if done:
            TRAINING_STEPS.inc(done)
            TRAINING_IMAGES.inc(done * self.batch_size)


def observe_attempt_end(session_factory: sessionmaker[Session], job_id: uuid.UUID, attempt: int) -> None:
    """After an attempt: if that attempt finished the job, observe its duration under its type and final status.

    A job handed back to the queue is not finished; one a later attempt finished is that attempt's to
    observe. The observation is dropped, with a warning, when the database cannot be read: the job's own
    state is already recorded, and one missing sample in a histogram is all that is lost."""
    try:
        with session_factory() as session:
            row = session.execute(select(Job.type, Job.status, Job.attempt, Job.started_at, Job.finished_at)
                                  .where(Job.id == job_id)).one_or_none()
    except SQLAlchemyError as exc:
        log.warning("job %s: duration not observed (database: %s)", job_id, exc)
        return
    if (row is not None and row.attempt == attempt and row.status in FINISHED_STATUSES
            and row.started_at is not None and row.finished_at is not None):
        JOB_DURATION.labels(row.type, row.status).observe((row.finished_at - row.started_at).total_seconds())
