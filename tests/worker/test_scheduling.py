"""Scheduling with real workers (core.scheduling): a worker woken by any message of its queue takes the queued
job with the best place, so priorities hold however the messages arrive, and a tenant at its running cap
waits while other tenants' jobs run. Real `celery worker` processes, PostgreSQL, Redis and S3 (moto)."""

from __future__ import annotations

import time

from cli.servers import worker_command
from core import jobs
from core.db import Job, ensure_tenant
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_tasks import TINY, create, send, wait_finished, wait_until

LONG = dict(TINY, steps=100_000, checkpoint_every=0)  # runs until it is cancelled
SHORT = dict(TINY, steps=10)
DIGITS = {"dataset": "builtin:digits"}


def cancel(session_factory, job_id) -> None:
    with session_factory() as session:
        jobs.request_cancel(session, job_id)
        session.commit()


def test_with_the_worker_busy_a_priority_9_job_queued_last_starts_before_three_at_priority_1(
        settings, celery_client, session_factory, tenant_id, tmp_path, request):
    # Each test starts its own worker: a module-wide one would take the other test's messages.
    handle = start_worker(settings, tmp_path / "worker.log")
    request.node.started_workers = [handle]
    try:
        busy = create(session_factory, tenant_id, "train", LONG, DIGITS)
        send(celery_client, busy)
        wait_until(session_factory, busy, lambda job: job.status == "running")
        low = [create(session_factory, tenant_id, "train", SHORT, DIGITS, priority=1) for _ in range(3)]
        urgent = create(session_factory, tenant_id, "train", SHORT, DIGITS, priority=9)
        for job_id in (*low, urgent):  # the messages arrive in the order the jobs were queued
            send(celery_client, job_id)
        cancel(session_factory, busy)
        assert wait_finished(session_factory, busy).status == "cancelled"
        finished = {job_id: wait_finished(session_factory, job_id) for job_id in (*low, urgent)}
    finally:
        stop_worker(handle)
    assert {job.status for job in finished.values()} == {"succeeded"}
    started = sorted(finished, key=lambda job_id: finished[job_id].started_at)
    assert started[0] == urgent and started[1:] == low


def test_with_a_cap_of_one_a_tenants_second_job_waits_while_another_tenants_job_runs(
        settings, celery_client, session_factory, tenant_id, tmp_path, request):
    with session_factory() as session:
        other = ensure_tenant(session, "another-tenant").id
        session.commit()
    handle = start_worker(settings, tmp_path / "worker.log", command=worker_command("train", jobs_per_gpu=2),
                          env={"DCGAN_MAX_RUNNING_JOBS_PER_TENANT": "1"})
    request.node.started_workers = [handle]
    try:
        first = create(session_factory, tenant_id, "train", LONG, DIGITS)
        send(celery_client, first)
        wait_until(session_factory, first, lambda job: job.status == "running")
        second = create(session_factory, tenant_id, "train", SHORT, DIGITS, priority=9)
        theirs = create(session_factory, other, "train", LONG, DIGITS, priority=1)
        send(celery_client, second)
        send(celery_client, theirs)
        # The free slot goes to the other tenant's job, priority 1, past this tenant's priority-9 one.
        wait_until(session_factory, theirs, lambda job: job.status == "running")
        time.sleep(2)  # both messages were handled: the second job is still left queued
        with session_factory() as session:
            assert session.get(Job, second).status == "queued"
            assert session.get(Job, first).status == "running"
        cancel(session_factory, first)  # its worker rings for the tenant's next job as it ends
        ended = wait_finished(session_factory, first)
        done = wait_finished(session_factory, second)
        assert done.status == "succeeded" and done.started_at >= ended.finished_at
        with session_factory() as session:
            assert session.get(Job, theirs).status == "running"
        cancel(session_factory, theirs)
        assert wait_finished(session_factory, theirs).status == "cancelled"
    finally:
        stop_worker(handle)
