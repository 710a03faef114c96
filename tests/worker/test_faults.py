"""What happens when things go wrong (issue 4): workers killed, frozen, shut down or poisoned, Redis
stopped or flushed, S3 away during an upload. The database is the truth; Celery only rings the bell.

Every part is real: `celery worker` processes (killed with their process group), a Redis server and an S3
server (moto over HTTP) of this module's own -- stopped and started here, never the machine's shared
ones -- and a migrated PostgreSQL database. A maintenance worker runs Celery beat and the reaper
(`-Q maintenance -B`), as docker-compose does. Leases are short (3 s) so takeovers happen in seconds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
import uuid

import pytest

from core import jobs
from core.db import Job
from core.gan.config import LOG_EVERY_STEPS
from core.storage import job_prefix
from tests.services import free_port
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_tasks import TINY, create, send, wait_finished, wait_until

FAST_LEASES = {"DCGAN_LEASE_SECONDS": "3", "DCGAN_REAP_SECONDS": "1", "DCGAN_REPUBLISH_SECONDS": "2"}
TAKEOVER_SECONDS = 120  # "a new worker has it running again within 2 minutes"


class MotoServer:
    """moto's S3 server on a fixed port that can be stopped and started again; the buckets live in the
    process's moto backend, so they are still there after a restart, as with a real S3 outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def moto_server(s3_endpoint):  # s3_endpoint: the session's server sets the dummy AWS credentials
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(private_redis):  # overrides tests/worker/conftest.py's: this one may be stopped
    return private_redis.url(0)


@pytest.fixture(scope="module")
def s3_bucket(moto_server) -> str:
    from core.storage import S3Store

    S3Store("unused", endpoint_url=moto_server.url)._client.create_bucket(Bucket="faults")
    return "faults"


@pytest.fixture(scope="module")
def settings(database_url, redis_url, moto_server, s3_bucket, tmp_path_factory):
    from core.settings import Settings

    return Settings(data_dir=tmp_path_factory.mktemp("fault-data"), database_url=database_url,
                    redis_url=redis_url, storage_url=f"s3://{s3_bucket}/artifacts",
                    s3_endpoint_url=moto_server.url).with_defaults()


@pytest.fixture(scope="module")
def reaper(settings, tmp_path_factory):
    """`dcgan reaper`, as docker-compose runs it: Celery beat and the reaper pass in one small worker on the
    maintenance queue."""
    handle = start_worker(settings, tmp_path_factory.mktemp("reaper") / "reaper.log", env=FAST_LEASES,
                          command=[sys.executable, "-m", "cli", "reaper"])
    yield handle
    stop_worker(handle)


class Workers:
    def __init__(self, settings, directory, node) -> None:
        self.settings, self.directory, self.node = settings, directory, node
        self.started = []
        node.started_workers = self.started  # their logs go into the report of a failing test

    def start(self, pool: str | None = "solo", env: dict[str, str] | None = None):
        log_path = self.directory / f"worker-{len(self.started) + 1}.log"
        handle = start_worker(self.settings, log_path, "train,generate", pool=pool, env={**FAST_LEASES, **(env or {})})
        self.started.append(handle)
        return handle

    def stop_all(self) -> None:
        for handle in self.started:
            stop_worker(handle)


@pytest.fixture
def workers(settings, tmp_path, request, reaper):
    started = Workers(settings, tmp_path, request.node)
    yield started
    started.stop_all()


def kill_group(handle) -> None:
    """SIGKILL the worker and everything it started (pool children, embedded beat)."""
    os.killpg(handle.process.pid, signal.SIGKILL)
    handle.process.wait()


def long_job(session_factory, tenant_id, steps: int = 300, **config) -> uuid.UUID:
    return create(session_factory, tenant_id, "train",
                  {**TINY, "steps": steps, "checkpoint_every": 40, "sample_every": 100, **config},
                  {"dataset": "builtin:fake"})


def snapshot(session_factory, store, tenant_id, job_id: uuid.UUID):
    """Everything a worker could write for the job: its row, artifacts, events and stored objects."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        row = (job.status, job.attempt, job.progress, job.checkpoint_key, job.checkpoint_step, job.updated_at,
               job.finished_at, job.error_type)
        artifacts = sorted((a.key, a.sha256, a.size, a.attempt) for a in jobs.list_artifacts(session, job_id))
        events = [(e.kind, e.attempt) for e in jobs.list_events(session, job_id)]
    objects = {key: hashlib.sha256(store.get_bytes(key)).hexdigest()
               for key in store.list(job_prefix(tenant_id, job_id))}
    return row, artifacts, events, objects


def events_of(session_factory, job_id: uuid.UUID) -> list:
    with session_factory() as session:
        return [(e.kind, e.attempt, e.detail) for e in jobs.list_events(session, job_id)]


def assert_one_consistent_set_of_artifacts(session_factory, store, job_id: uuid.UUID) -> None:
    with session_factory() as session:
        artifacts = jobs.list_artifacts(session, job_id)
    names = [a.name for a in artifacts]
    assert len(names) == len(set(names)) and {"generator.safetensors", "grid.png"} <= set(names), names
    for artifact in artifacts:  # every recorded artifact is in the store, with the recorded bytes
        assert hashlib.sha256(store.get_bytes(artifact.key)).hexdigest() == artifact.sha256, artifact.key


def test_kill_9_of_the_whole_worker_resumes_the_same_job_from_its_last_checkpoint(
        workers, celery_client, session_factory, tenant_id, store):
    first = workers.start(pool="prefork")  # a parent and a pool child: both die
    job_id = long_job(session_factory, tenant_id)
    send(celery_client, job_id)
    wait_until(session_factory, job_id, lambda job: (job.checkpoint_step or 0) >= 40 or job.finished_at)
    kill_group(first)
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempt) == ("running", 1)
        checkpoint_at_kill = job.checkpoint_step

    workers.start()
    wait_until(session_factory, job_id, lambda job: job.attempt == 2 and job.status == "running",
               timeout=TAKEOVER_SECONDS)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt, job.progress["step"]) == ("succeeded", 2, 300), job.error_detail
    resumed = [detail["step"] for kind, attempt, detail in events_of(session_factory, job_id)
               if kind == "resumed_from_step" and attempt == 2]
    assert len(resumed) == 1 and resumed[0] >= checkpoint_at_kill > 0  # not from step 0
    assert [kind for kind, *_ in events_of(session_factory, job_id)].count("succeeded") == 1
    assert_one_consistent_set_of_artifacts(session_factory, store, job_id)
    # The metrics history survived the kill: each logged step at most once, no gap wider than the logging
    # interval, up to the last step; the steps the killed attempt logged past its checkpoint were replaced
    # by the resumed run's.
    with session_factory() as session:
        steps = [point.step for point in jobs.metric_points(session, job_id)]
    assert len(steps) == len(set(steps)) and steps[0] <= LOG_EVERY_STEPS and steps[-1] == 300, steps
    assert max(b - a for a, b in zip(steps, steps[1:])) <= LOG_EVERY_STEPS, steps


def test_the_same_message_delivered_twice_to_racing_workers_trains_once(workers, celery_client, session_factory,
                                                                        tenant_id):
    pair = [workers.start(), workers.start()]
    job_id = long_job(session_factory, tenant_id, steps=60)
    send(celery_client, job_id)
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)
    kinds = [kind for kind, *_ in events_of(session_factory, job_id)]
    assert kinds.count("claimed") == 1 and kinds.count("started") == 1 and kinds.count("succeeded") == 1
    deadline = time.monotonic() + 30
    while not any(f"job {job_id}: not claimable" in handle.log() for handle in pair):
        assert time.monotonic() < deadline, "the second delivery never reached a worker"
        time.sleep(0.2)


def test_a_frozen_lease_holder_is_taken_over_and_writes_nothing_when_it_wakes(
        workers, celery_client, session_factory, tenant_id, store):
    frozen = workers.start()
    job_id = long_job(session_factory, tenant_id)
    send(celery_client, job_id)
    wait_until(session_factory, job_id, lambda job: (job.checkpoint_step or 0) >= 40 or job.finished_at)
    os.killpg(frozen.process.pid, signal.SIGSTOP)
    try:
        workers.start()
        job = wait_finished(session_factory, job_id)
        assert (job.status, job.attempt) == ("succeeded", 2), job.error_detail
        kinds = [kind for kind, *_ in events_of(session_factory, job_id)]
        assert "lease_expired" in kinds and "resumed_from_step" in kinds
        before = snapshot(session_factory, store, tenant_id, job_id)
    finally:
        os.killpg(frozen.process.pid, signal.SIGCONT)
    frozen.wait_for_log(f"job {job_id}: stopped", timeout=60)
    time.sleep(2)  # anything it might still write would have been written by now
    assert snapshot(session_factory, store, tenant_id, job_id) == before


@pytest.mark.parametrize("outage", ["restart", "flush"])
def test_jobs_survive_redis_being_restarted_or_flushed(outage, workers, celery_client, session_factory, tenant_id,
                                                      private_redis):
    workers.start()
    job_ids = [long_job(session_factory, tenant_id, steps=60) for _ in range(3)]
    for job_id in job_ids:
        send(celery_client, job_id)
    wait_until(session_factory, job_ids[0], lambda job: job.status == "running")
    if outage == "restart":  # no persistence: the restarted server has lost every message
        private_redis.stop()
        time.sleep(3)
        private_redis.start()
    else:
        private_redis.flush()
    finished = [wait_finished(session_factory, job_id) for job_id in job_ids]
    assert [(job.status, job.error_detail) for job in finished] == [("succeeded", None)] * 3
    for job in finished:  # one attempt each: no job ran twice, at once or after another
        kinds = [kind for kind, *_ in events_of(session_factory, job.id)]
        assert job.attempt == 1 and kinds.count("claimed") == 1 and "lease_expired" not in kinds, kinds


def test_an_s3_outage_during_uploads_is_retried_and_never_succeeds_without_artifacts(
        workers, celery_client, session_factory, tenant_id, store, moto_server):
    worker = workers.start()
    job_id = long_job(session_factory, tenant_id, steps=200, checkpoint_every=20, sample_every=20)
    send(celery_client, job_id)
    wait_until(session_factory, job_id, lambda job: (job.checkpoint_step or 0) >= 20 or job.finished_at)
    moto_server.stop()
    try:
        worker.wait_for_log("retrying in 2 s", timeout=60)  # the third try, after 0.5 s and 1 s pauses
        with session_factory() as session:
            assert session.get(Job, job_id).status == "running"  # not succeeded while nothing can be stored
    finally:
        moto_server.start()
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1), job.error_detail
    assert_one_consistent_set_of_artifacts(session_factory, store, job_id)


def test_a_poison_job_that_kills_its_worker_every_time_fails_as_worker_lost(workers, celery_client,
                                                                          session_factory, tenant_id):
    job_id = long_job(session_factory, tenant_id, steps=100_000)
    send(celery_client, job_id)
    for attempt in (1, 2, 3):
        worker = workers.start()
        wait_until(session_factory, job_id, lambda job: job.attempt == attempt and job.status == "running",
                   timeout=TAKEOVER_SECONDS)
        kill_group(worker)  # what the poison does to whoever runs it
    job = wait_until(session_factory, job_id, lambda job: job.finished_at is not None, timeout=60)
    assert (job.status, job.error_type, job.attempt) == ("failed", "worker_lost", 3)


def test_sigterm_checkpoints_and_releases_the_job_at_once_for_the_next_worker(workers, celery_client,
                                                                             session_factory, tenant_id):
    leaving = workers.start(pool=None)  # no --pool, as `celery -A worker.celery_app worker` is often run
    assert "(solo)" in leaving.log()  # the app's default pool, which hears the SIGTERM itself
    job_id = long_job(session_factory, tenant_id, steps=300, checkpoint_every=1000)  # only the stop checkpoints
    send(celery_client, job_id)
    wait_until(session_factory, job_id, lambda job: job.progress.get("step", 0) >= 20 or job.finished_at)
    leaving.process.send_signal(signal.SIGTERM)
    assert leaving.process.wait(timeout=60) == 0
    with session_factory() as session:
        job = session.get(Job, job_id)
        # Released, not left to expire: queued again at once, holding the checkpoint the stop wrote.
        assert (job.status, job.attempt, job.lease_expires_at) == ("queued", 1, None)
        assert job.checkpoint_step and job.checkpoint_step >= 20
        stopped_at = job.checkpoint_step
    workers.start()
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2), job.error_detail
    resumed = [d["step"] for kind, _, d in events_of(session_factory, job_id) if kind == "resumed_from_step"]
    assert resumed == [stopped_at]


def test_a_job_past_its_runtime_limit_checkpoints_and_fails_with_timeout(workers, celery_client, session_factory,
                                                                        tenant_id, store):
    workers.start(env={"DCGAN_MAX_JOB_SECONDS": "3"})
    job_id = long_job(session_factory, tenant_id, steps=100_000, checkpoint_every=100_000)
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "timeout", 1)
    assert "runtime limit of 3 s" in job.error_detail
    assert job.checkpoint_step and job.checkpoint_step > 0  # the final checkpoint, written at the stop
    assert_one_consistent_set_of_artifacts(session_factory, store, job_id)
