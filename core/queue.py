"""Job task messages: the one table of task names and queues, and the one way a job's message is published.

The database is the truth about jobs; a message only says which row to look at, so losing one (a Redis
restart or flush) delays a job until the reaper sends it again, and sending one twice is harmless
(`core.jobs.claim_job` lets exactly one delivery run it). Tasks are sent *by name*, so the API and the
reaper never import the worker or torch. The Celery app (queues, routes, beat), the task decorators and
every publisher read names and queues from `TASKS` here.

`publish` is the only code that sends a job's message: the API after it commits a new job, a worker that
hands a job back, and the reaper. One policy for all three: a broker that cannot be reached is a warning
and a job left queued for the reaper; anything else is a bug and propagates.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.orm import Session

from core import jobs
from core.error_text import first_line

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str  # the stable task name messages carry
    queue: str  # the broker queue it is routed to


TRAIN = Task("dcgan.train", "train")
GENERATE = Task("dcgan.generate", "generate")
# Evaluation jobs have a queue of their own, consumed by a separate, low-priority worker (`dcgan worker
# --queues evaluate --nice 10`; `dcgan up` runs one): a long FID run never holds up a training job.
EVALUATE = Task("dcgan.evaluate", "evaluate")
# Synchronous sampling (GET /v1/generators/<ref>/images): a warm sampling worker answers while the API waits.
SAMPLE = Task("dcgan.sample", "sample")
# Housekeeping has a queue of its own, so it never waits behind a training run.
REAP = Task("dcgan.reap", "maintenance")
# Webhook deliveries (core.webhook_delivery) have a queue of their own: the worker that consumes it runs the
# sender's loop (worker/webhooks.py), and a slow receiver never holds up a job or housekeeping.
WEBHOOKS = Task("dcgan.deliver_webhooks", "webhooks")
TASKS = (TRAIN, GENERATE, EVALUATE, SAMPLE, REAP, WEBHOOKS)
# job type -> the task that runs it
JOB_TASKS = {"train": TRAIN, "generate": GENERATE, "evaluate": EVALUATE}
# What `dcgan worker` consumes; `dcgan reaper` consumes REAP.queue.
WORKER_QUEUES = (TRAIN.queue, GENERATE.queue)
# What sending raises when the broker is away: kombu's wrapper of the transport's connection errors, and a
# socket error that escaped it.
BROKER_UNAVAILABLE = (BrokerOperationalError, OSError)


class JobQueue(Protocol):
    def enqueue(self, job_type: str, job_id: str) -> None: ...


def send_job_task(app: Celery, job_type: str, job_id: str) -> None:
    """Send the job's task message through `app`, once (no retry: the reaper sends it again)."""
    task = JOB_TASKS[job_type]
    app.send_task(task.name, args=[job_id], queue=task.queue, retry=False)


def publish(queue: JobQueue, session: Session, job_type: str, job_id: uuid.UUID) -> bool:
    """Send the queued job's task message, then note on its row that it was sent (committed in `session`).

    False, with a warning, when the broker cannot be reached: the job stays queued and unpublished, and the
    reaper sends it once the broker is back."""
    try:
        queue.enqueue(job_type, str(job_id))
    except BROKER_UNAVAILABLE as exc:
        log.warning("job %s is queued but its task was not published (broker: %s); the reaper will send it",
                    job_id, first_line(exc))
        return False
    jobs.mark_published(session, job_id)
    session.commit()
    return True


class CeleryQueue:
    """Publishes job tasks with the job id as the only argument, from a process that is not a worker.

    Fails fast (one connection retry) when the broker is down: the caller has already committed the job
    row, and the reaper publishes it once the broker is back.
    """

    def __init__(self, broker_url: str):
        from celery import Celery

        self.client = Celery("dcgan-publisher", broker=broker_url, set_as_current=False)
        self.client.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry=False,
                                broker_transport_options={"max_retries": 1})

    def enqueue(self, job_type: str, job_id: str) -> None:
        send_job_task(self.client, job_type, job_id)

    def check(self) -> None:
        with self.client.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)

    def close(self) -> None:
        self.client.close()
