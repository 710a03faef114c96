"""The Celery entry point: `celery -A worker.celery_app worker -Q train,generate`.

This module is an entry point, so it is the one place on the worker side that reads the environment
(`Settings.from_env()`, `DCGAN_THREADS`). `make_celery(settings)` builds an app from a settings object
for anything that already has one (tests, the CLI); the tasks find that object again as
`app.conf.dcgan_settings`.

The database row is the truth about a job, so Celery keeps no results. Messages are acknowledged after
the task returns (`task_acks_late`) and a message whose worker died is redelivered; the job's lease and
fencing token (core.jobs) make a second delivery harmless. The broker's visibility timeout is longer
than the longest allowed job, or Redis would hand a running job's message to a second worker.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown
from kombu import Queue

from core import webhooks
from core.queue import REAP, TASKS, TRAIN
from core.settings import Settings, SettingsError, env_int


def make_celery(settings: Settings, threads: int | None = None) -> Celery:
    """A Celery app on `settings.redis_url` that runs worker.tasks; `threads` caps torch's CPU threads."""
    if not settings.redis_url:
        raise SettingsError("REDIS_URL: not set; the worker needs a Redis broker "
                            "(`dcgan up` starts one and sets it)")
    # The outbox writer (core.webhooks) runs inside core.jobs' transitions, where no settings are passed.
    webhooks.configure(settings.webhook_progress_seconds)
    app = Celery("dcgan", broker=settings.redis_url, include=["worker.tasks", "worker.sampling", "worker.webhooks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # Ack after the task ran, and requeue if the worker process died: a job is never lost, and
        # claim_job turns the duplicate delivery into a no-op.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job at a time per process: a prefetched message would wait behind a long training run.
        worker_prefetch_multiplier=1,
        # The solo pool runs the job in the process that gets SIGTERM, so a deploy makes it checkpoint and
        # hand the job back at once; a prefork child would not hear the signal, and the job would wait out
        # its lease. A plain `celery -A worker.celery_app worker` gets it too; --pool still overrides it.
        worker_pool="solo",
        # Queues and routes from core.queue's table, the one the publishers read too. The reaper's queue is
        # its own, so housekeeping never waits behind a training run: `dcgan reaper` runs beat and the
        # reaper on it in one small process.
        task_queues=[Queue(queue) for queue in dict.fromkeys(task.queue for task in TASKS)],
        task_default_queue=TRAIN.queue,
        task_routes={task.name: {"queue": task.queue} for task in TASKS},
        # Celery beat sends the reaper pass; a pass that could not run in time is dropped, not piled up.
        beat_schedule={"reap": {"task": REAP.name, "schedule": float(settings.reap_seconds),
                                "options": {"queue": REAP.queue, "expires": float(settings.reap_seconds)}}},
        broker_transport_options={"visibility_timeout": settings.max_job_seconds + 3600},
        broker_connection_retry_on_startup=True,
        dcgan_settings=settings,
        dcgan_threads=threads,
    )
    return app


@worker_init.connect
def _serve_metrics(sender=None, **_: object) -> None:
    """The worker's own series on DCGAN_WORKER_METRICS_PORT (worker.metrics), from its main process."""
    from worker.metrics import serve

    serve(sender.app.conf.dcgan_settings)


@worker_process_shutdown.connect
def _forget_pool_child(pid=None, **_: object) -> None:
    """A prefork child ends: its multiprocess gauge files go (worker.metrics)."""
    from worker.metrics import mark_process_dead

    mark_process_dead(app.conf.dcgan_settings, pid or os.getpid())


def _threads_from_env() -> int | None:
    return env_int(os.environ, "DCGAN_THREADS", 0) or None


app = make_celery(Settings.from_env(), threads=_threads_from_env())
