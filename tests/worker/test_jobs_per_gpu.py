"""`dcgan worker --jobs-per-gpu N`: one worker process runs up to N jobs at once (Celery's threads pool), and
admits each against the memory the jobs it already runs may take (worker.capacity.RESERVATIONS). Real worker
process started with the command `dcgan worker` builds, PostgreSQL, Redis and S3 (moto); on a CPU here."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from cli.servers import worker_command
from core.db import Job
from tests.worker.conftest import REPO_ROOT, start_worker, stop_worker
from tests.worker.test_capacity import events_of
from tests.worker.test_tasks import TINY, create, send, wait_finished, wait_until
from worker import capacity

JOB = dict(TINY, steps=150)  # a few seconds each on one CPU thread: long enough to overlap


def test_the_worker_command_runs_n_jobs_in_threads_of_one_process():
    one = worker_command("train")
    assert one[one.index("--pool") + 1] == "solo" and one[one.index("--concurrency") + 1] == "1"
    four = worker_command("train,generate", jobs_per_gpu=4)
    assert four[four.index("--pool") + 1] == "threads" and four[four.index("--concurrency") + 1] == "4"
    refused = subprocess.run([sys.executable, "-m", "cli", "worker", "--jobs-per-gpu", "0"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--jobs-per-gpu must be at least 1" in refused.stderr


def _estimate(session_factory, settings, job_id) -> int:
    with session_factory() as session:
        return capacity.job_estimate(session, session.get(Job, job_id), capacity.resolve_device("auto"),
                                     settings).memory_bytes


def _interval(job: Job) -> tuple:
    return job.started_at, job.finished_at


def test_two_jobs_run_at_once_and_a_third_waits_for_the_memory_they_hold(settings, celery_client, session_factory,
                                                                         tenant_id, tmp_path, request):
    first = create(session_factory, tenant_id, "train", JOB, {"dataset": "builtin:digits"})
    needed = _estimate(session_factory, settings, first)
    # Room for two of these jobs, not three: the third must wait for one of the first two to end.
    handle = start_worker(settings, tmp_path / "worker.log", command=worker_command("train", jobs_per_gpu=3),
                          env={"DCGAN_WORKER_MEMORY_BYTES": str(int(needed * 2.5))})
    request.node.started_workers = [handle]
    try:
        second = create(session_factory, tenant_id, "train", JOB, {"dataset": "builtin:digits"})
        for job_id in (first, second):
            send(celery_client, job_id)
        for job_id in (first, second):
            wait_until(session_factory, job_id, lambda job: job.status != "queued")
        third = create(session_factory, tenant_id, "train", JOB, {"dataset": "builtin:digits"})
        send(celery_client, third)
        a, b = wait_finished(session_factory, first), wait_finished(session_factory, second)
        assert (a.status, b.status) == ("succeeded", "succeeded")
        (start_a, end_a), (start_b, end_b) = _interval(a), _interval(b)
        assert start_a < end_b and start_b < end_a, "the two jobs did not run at the same time"
        assert "waiting_for_memory" in [kind for kind, _ in events_of(session_factory, third)]
        with session_factory() as session:
            assert session.get(Job, third).status == "queued"
        send(celery_client, third)  # what the reaper does in production: the memory is free now
        assert wait_finished(session_factory, third).status == "succeeded"
    finally:
        stop_worker(handle)


def test_sigterm_checkpoints_and_releases_every_running_job(settings, celery_client, session_factory, tenant_id,
                                                           tmp_path, request):
    # The warm shutdown (a deploy) reaches the jobs of every thread: each checkpoints and is queued again at once.
    handle = start_worker(settings, tmp_path / "worker.log", command=worker_command("train", jobs_per_gpu=2))
    request.node.started_workers = [handle]
    try:
        long = dict(TINY, steps=5000, checkpoint_every=10_000)  # only the stop writes a checkpoint
        job_ids = [create(session_factory, tenant_id, "train", long, {"dataset": "builtin:digits"}) for _ in range(2)]
        for job_id in job_ids:
            send(celery_client, job_id)
        for job_id in job_ids:
            wait_until(session_factory, job_id, lambda job: (job.progress or {}).get("step", 0) >= 10)
        handle.process.send_signal(signal.SIGTERM)
        assert handle.process.wait(timeout=60) == 0
    finally:
        stop_worker(handle)
    with session_factory() as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            assert (job.status, job.attempt, job.lease_expires_at) == ("queued", 1, None)
            assert job.checkpoint_step and job.checkpoint_step >= 10


@pytest.fixture(autouse=True)
def _no_reservations_left():
    yield
    assert capacity.RESERVATIONS.held == {}  # this process's ledger (admit() in tests) is left as found
