"""A worker checks a job's estimate (core.gan.cost) against its device before claiming it (worker.capacity):
a job no device like it could hold fails unclaimed with `insufficient_memory`; one that fits the device but
not its free memory now waits, queued. Real worker process, PostgreSQL, Redis and S3 (moto); the worker's
memory is shrunk with its operator override, DCGAN_WORKER_MEMORY_BYTES."""

from __future__ import annotations

import uuid

import pytest

from core import jobs
from core.db import Job
from core.gan.config import TrainConfig
from core.gan.cost import estimate_train
from worker import capacity
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_tasks import TINY, create, send, wait_finished

WORKER_MEMORY = 400 * 1024**2
BIG = {"img_size": 64, "img_channels": 1, "batch_size": 512, "steps": 5}


@pytest.fixture(scope="module")
def small_worker(settings, tmp_path_factory):
    """A worker that believes it has WORKER_MEMORY bytes for a job."""
    handle = start_worker(settings, tmp_path_factory.mktemp("small-worker") / "worker.log",
                          env={"DCGAN_WORKER_MEMORY_BYTES": str(WORKER_MEMORY)})
    try:
        yield handle
    finally:
        stop_worker(handle)


def events_of(session_factory, job_id: uuid.UUID) -> list[tuple[str, dict]]:
    with session_factory() as session:
        return [(event.kind, event.detail) for event in jobs.list_events(session, job_id)]


def test_a_job_bigger_than_the_worker_s_memory_fails_unclaimed_and_the_worker_goes_on(
        small_worker, celery_client, session_factory, tenant_id):
    estimate = estimate_train(TrainConfig.from_dict(BIG), num_images=1797, precision="fp32")
    assert estimate.memory_bytes > WORKER_MEMORY
    big = create(session_factory, tenant_id, "train", BIG, {"dataset": "builtin:digits"})
    send(celery_client, big)
    job = wait_finished(session_factory, big)
    assert (job.status, job.error_type, job.attempt, job.started_at, job.worker) == \
        ("failed", "insufficient_memory", 0, None, None)
    assert "400.0 MiB" in job.error_detail and "config.batch_size" in job.error_detail
    assert [kind for kind, _ in events_of(session_factory, big)] == ["queued", "failed"]

    # The same worker takes the next job that fits.
    small = create(session_factory, tenant_id, "train", dict(TINY, steps=2), {"dataset": "builtin:digits"})
    send(celery_client, small)
    assert wait_finished(session_factory, small).status == "succeeded"


def test_a_job_that_fits_the_device_but_not_its_free_memory_waits_queued(session_factory, tenant_id, settings,
                                                                         monkeypatch):
    job_id = create(session_factory, tenant_id, "train", BIG, {"dataset": "builtin:digits"})
    with session_factory() as session:
        needed = capacity.job_estimate(session, session.get(Job, job_id), capacity.resolve_device("auto"),
                                       settings).memory_bytes
    busy = capacity.DeviceMemory("cpu", available=needed - 1, capacity=needed * 4)
    monkeypatch.setattr(capacity, "device_memory", lambda device, override=0: busy)
    for _ in range(2):  # declined each time it is sent, said once
        with session_factory() as session:
            assert capacity.admit(session, job_id, settings) is False
    with session_factory() as session:
        assert session.get(Job, job_id).status == "queued"
    waits = [detail for kind, detail in events_of(session_factory, job_id) if kind == "waiting_for_memory"]
    assert waits == [{"memory_bytes": needed, "available_bytes": needed - 1, "device": "cpu"}]

    free = capacity.DeviceMemory("cpu", available=needed, capacity=needed * 4)
    monkeypatch.setattr(capacity, "device_memory", lambda device, override=0: free)
    with session_factory() as session:
        assert capacity.admit(session, job_id, settings) is True
        assert session.get(Job, job_id).status == "queued"  # admitted; claim_job takes it from here
    # Admitted, its estimate is held until the job ends: a second job the same size must now wait.
    assert capacity.RESERVATIONS.held == {job_id: needed}
    other = create(session_factory, tenant_id, "train", BIG, {"dataset": "builtin:digits"})
    roomy = capacity.DeviceMemory("cpu", available=needed * 2 - 1, capacity=needed * 4)
    monkeypatch.setattr(capacity, "device_memory", lambda device, override=0: roomy)
    with session_factory() as session:
        assert capacity.admit(session, other, settings) is False
    assert [d for k, d in events_of(session_factory, other) if k == "waiting_for_memory"] == \
        [{"memory_bytes": needed, "available_bytes": needed - 1, "device": "cpu"}]
    capacity.RESERVATIONS.release(job_id)
    with session_factory() as session:
        assert capacity.admit(session, other, settings) is True
    capacity.RESERVATIONS.release(other)


def test_the_host_s_memory_is_read_and_the_override_only_lowers_it():
    measured = capacity.device_memory(capacity.resolve_device("cpu"))
    assert 0 < measured.available <= measured.capacity
    lowered = capacity.device_memory(capacity.resolve_device("cpu"), override=1024**2)
    assert (lowered.available, lowered.capacity) == (1024**2, 1024**2)
    raised = capacity.device_memory(capacity.resolve_device("cpu"), override=measured.capacity * 10)
    assert raised.capacity == measured.capacity
