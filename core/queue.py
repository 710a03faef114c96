"""Publishing job task messages to the broker: the doorbell that tells a worker "look at job X".

The database is the truth about jobs; a message only says which row to look at, so losing one (a Redis
restart or flush) delays a job until the reaper sends it again, and sending one twice is harmless
(`core.jobs.claim_job` lets exactly one delivery run it). Tasks are sent *by name*, so the API and the
reaper never import the worker or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from celery import Celery

# job type -> (task name, queue)
TASKS = {"train": ("dcgan.train", "train"), "generate": ("dcgan.generate", "generate")}


class JobQueue(Protocol):
    def enqueue(self, job_type: str, job_id: str) -> None: ...


def send_job_task(app: Celery, job_type: str, job_id: str) -> None:
    """Publish the job's task message through `app`, once (no retry: the reaper sends it again)."""
    name, queue = TASKS[job_type]
    app.send_task(name, args=[job_id], queue=queue, retry=False)


class CeleryQueue:
    """Publishes `dcgan.train` / `dcgan.generate` with the job id as the only argument.

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
