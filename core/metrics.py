"""What Prometheus sees of the platform's state, read from the database when it scrapes, and the
multi-process plumbing the serving processes share.

The database is the truth about jobs, so the series that describe them are read from it at scrape time by
`DatabaseCollector` (a prometheus_client custom collector; five small GROUP BY queries, no per-job labels):
jobs by type and status, queue depth and the age of the oldest queued job per queue, running jobs and their
training speed per worker, lease expiries, resumes and retries (counted from `job_events`), and webhook
deliveries (from the outbox tables). Counting transitions from `job_events` rather than with in-process
counters in core.jobs / core.reaper is deliberate: those transitions happen in whichever process runs the
reaper or claims the job (a worker, `dcgan reaper`, a thread of `dcgan up`), so process counters would be
scattered over endpoints and reset by every restart, while the event rows are multi-process safe,
survive restarts and need no code in the transitions themselves. The price is a scan of the event kinds
(an index on `job_events.kind` would make it an index-only count).

What happens inside one process (HTTP requests in the API, uploads and training steps in a worker) is
counted there, with prometheus_client's multiprocess mode when a server forks several processes: the entry
point gives each server a fresh directory (cli.metrics_dir) and sets PROMETHEUS_MULTIPROC_DIR to it before
prometheus_client is imported, and `registry_for` merges every process's files at scrape time.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import Job, JobEvent, JobStatus, WebhookAttempt, WebhookMessage
from core.queue import JOB_TASKS

# Exposition format 0.0.4, what Prometheus asks for by default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# job_events kinds counted as transitions: the counter each one feeds.
EVENT_COUNTERS = {
    "lease_expired": ("dcgan_job_lease_expiries", "Leases that ran out before their worker renewed them "
                                                  "(worker killed, frozen or cut off)"),
    "resumed": ("dcgan_job_resumes", "Attempts that resumed a job from its checkpoint"),
    "requeued": ("dcgan_job_retries", "Jobs sent back to the queue for another attempt (lease expired, "
                                      "worker shut down, storage unavailable)"),
}


def registry_for(multiprocess_dir: str, local: Iterable[Collector] = (),
                 extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry for one scrape: every process's files when `multiprocess_dir` is set (the process's own
    metric objects then write there), else the `local` metric objects of this process; plus `extra`
    collectors (the database's), which are asked once per scrape, in the process that answers it."""
    registry = CollectorRegistry(auto_describe=True)
    if multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        for collector in local:
            registry.register(collector)
    for collector in extra:
        registry.register(collector)
    return registry


class DatabaseCollector(Collector):
    """The platform's state, read from the database at each scrape (see the module docstring)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def describe(self) -> list[Metric]:
        return []  # the families depend on the rows; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self.session_factory() as session:
            yield from self._jobs(session)
            yield from self._running(session)
            yield from self._events(session)
            yield from self._webhooks(session)

    def _jobs(self, session: Session) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("dcgan_jobs", "Jobs in the database by type and status", labels=["type", "status"])
        depth = GaugeMetricFamily("dcgan_queue_depth", "Queued jobs waiting for a worker, per queue",
                                  labels=["queue"])
        oldest = GaugeMetricFamily("dcgan_queue_oldest_job_age_seconds",
                                   "Age of the oldest queued job per queue (since it was created); 0 when empty",
                                   labels=["queue"])
        # A deleted job's row is a tombstone (core.deletion): it left the user's lists, and leaves these counts.
        rows = session.execute(select(Job.type, Job.status, func.count(), func.min(Job.created_at))
                               .where(Job.deleted_at.is_(None)).group_by(Job.type, Job.status)).all()
        now = time.time()
        queued: dict[str, tuple[int, float]] = {task.queue: (0, now) for task in JOB_TASKS.values()}
        for job_type, status, count, created in rows:
            jobs.add_metric([job_type, status], count)
            if status == JobStatus.QUEUED and job_type in JOB_TASKS:
                queue = JOB_TASKS[job_type].queue
                depth_so_far, oldest_so_far = queued[queue]
                queued[queue] = (depth_so_far + count, min(oldest_so_far, created.timestamp()))
        for queue, (count, created) in sorted(queued.items()):
            depth.add_metric([queue], count)
            oldest.add_metric([queue], max(0.0, now - created))
        session.rollback()
        yield from (jobs, depth, oldest)

    def _running(self, session: Session) -> Iterator[Metric]:
        running = GaugeMetricFamily("dcgan_running_jobs", "Running jobs per worker (host:pid) and type",
                                    labels=["worker", "type"])
        speed = GaugeMetricFamily("dcgan_training_images_per_second",
                                  "Training throughput per worker: the sum over its running train jobs, as "
                                  "their latest progress reported it", labels=["worker"])
        steps = GaugeMetricFamily("dcgan_training_step",
                                  "Training steps done by the running train jobs of a worker (their latest "
                                  "progress, summed)", labels=["worker"])
        per_worker: dict[tuple[str, str], int] = {}
        training: dict[str, tuple[float, int]] = {}
        rows = session.execute(select(Job.worker, Job.type, Job.progress)
                               .where(Job.status == JobStatus.RUNNING)).all()
        for worker, job_type, progress in rows:
            worker = worker or "unknown"
            per_worker[(worker, job_type)] = per_worker.get((worker, job_type), 0) + 1
            if job_type == "train":
                rate, step = training.get(worker, (0.0, 0))
                progress = progress or {}
                training[worker] = (rate + float(progress.get("images_per_second") or 0.0),
                                    step + int(progress.get("step") or 0))
        for (worker, job_type), count in sorted(per_worker.items()):
            running.add_metric([worker, job_type], count)
        for worker, (rate, step) in sorted(training.items()):
            speed.add_metric([worker], rate)
            steps.add_metric([worker], step)
        session.rollback()
        yield from (running, speed, steps)

    def _events(self, session: Session) -> Iterator[Metric]:
        counts = dict(session.execute(select(JobEvent.kind, func.count())
                                      .where(JobEvent.kind.in_(EVENT_COUNTERS)).group_by(JobEvent.kind)).all())
        session.rollback()
        for kind, (name, documentation) in EVENT_COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=counts.get(kind, 0))

    def _webhooks(self, session: Session) -> Iterator[Metric]:
        messages = GaugeMetricFamily("dcgan_webhook_messages",
                                     "Webhook messages in the outbox by status (pending, delivered, failed)",
                                     labels=["status"])
        attempts = CounterMetricFamily("dcgan_webhook_deliveries",
                                       "Webhook delivery attempts by outcome: success (a 2xx came back) or "
                                       "failure (another status, a timeout or a connection error)",
                                       labels=["outcome"])
        by_status = dict(session.execute(select(WebhookMessage.status, func.count())
                                         .group_by(WebhookMessage.status)).all())
        succeeded = case((WebhookAttempt.status_code.between(200, 299), 1), else_=0)
        total, ok = session.execute(select(func.count(), func.coalesce(func.sum(succeeded), 0))
                                    .select_from(WebhookAttempt)).one()
        session.rollback()
        for status in ("pending", "delivered", "failed"):
            messages.add_metric([status], by_status.get(status, 0))
        attempts.add_metric(["success"], ok)
        attempts.add_metric(["failure"], total - ok)
        yield from (messages, attempts)
