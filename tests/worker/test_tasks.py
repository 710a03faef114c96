"""The Celery tasks end to end: messages through Redis to a real worker process, state in PostgreSQL,
artifacts in S3 (moto over HTTP). Training is tiny (32x32, z_dim 8, 8 channels) to fit 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image
from sqlalchemy import update

from core import jobs
from core.db import Job
from core.settings import Settings, SettingsError
from core.storage import checkpoint_key, generator_key, grid_key, job_prefix

FINISH_TIMEOUT = 120
TINY = dict(img_size=32, img_channels=1, z_dim=8, g_channels=8, d_channels=8, batch_size=16, num_samples=16)


def create(session_factory, tenant_id, type: str, config: dict, request: dict, **kwargs) -> uuid.UUID:
    with session_factory() as session:
        job = jobs.create_job(session, tenant_id, type, config, request, **kwargs)
        session.commit()
        return job.id


def send(celery_client, job_id: uuid.UUID, task: str = "dcgan.train", queue: str = "train") -> None:
    celery_client.send_task(task, args=[str(job_id)], queue=queue)


def wait_until(session_factory, job_id: uuid.UUID, done, timeout: float = FINISH_TIMEOUT) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            job = session.get(Job, job_id)
            session.expunge(job)
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} after {timeout} s"
        time.sleep(0.2)


def wait_finished(session_factory, job_id: uuid.UUID) -> Job:
    return wait_until(session_factory, job_id, lambda job: job.finished_at is not None)


def artifacts_and_events(session_factory, job_id: uuid.UUID):
    with session_factory() as session:
        artifacts = {a.name: (a.key, a.size, a.sha256, a.step) for a in jobs.list_artifacts(session, job_id)}
        events = [(e.kind, e.attempt) for e in jobs.list_events(session, job_id)]
    return artifacts, events


@pytest.fixture(scope="module")
def trained_job(worker, celery_client, session_factory, tenant_id) -> uuid.UUID:
    """A finished tiny train job. Its message is sent twice, as a broker redelivery would."""
    config = dict(TINY, steps=20, sample_every=5, checkpoint_every=10)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:digits"})
    send(celery_client, job_id)
    send(celery_client, job_id)
    wait_finished(session_factory, job_id)
    worker.wait_for_log(f"job {job_id}: not claimable", timeout=30)
    return job_id


def test_train_job_succeeds_with_its_artifacts_stored_and_recorded(worker, trained_job, session_factory, store,
                                                                   tenant_id):
    job = wait_finished(session_factory, trained_job)
    assert (job.status, job.error_type, job.error_detail) == ("succeeded", None, None)
    assert (job.progress["step"], job.progress["total_steps"]) == (20, 20)
    assert job.checkpoint_key == checkpoint_key(tenant_id, trained_job, 20) and job.checkpoint_step == 20
    worker.wait_for_log("succeeded in", timeout=30)
    assert "raised unexpected" not in worker.log()  # the task itself ended cleanly, not just the job

    artifacts, _ = artifacts_and_events(session_factory, trained_job)
    assert set(artifacts) == {"grid.png", "generator.safetensors",
                              "checkpoints/step-0000010.pt", "checkpoints/step-0000020.pt",
                              "samples/step-0000005.png", "samples/step-0000010.png",
                              "samples/step-0000015.png", "samples/step-0000020.png"}
    assert artifacts["generator.safetensors"][0] == generator_key(tenant_id, trained_job)
    for key, size, sha256, _step in artifacts.values():
        data = store.get_bytes(key)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256), key
    # The final grid is the last sample: 16 fixed-noise images, 8 to a row, 2 pixels of padding.
    last_sample = store.get_bytes(artifacts["samples/step-0000020.png"][0])
    assert store.get_bytes(grid_key(tenant_id, trained_job)) == last_sample
    assert Image.open(io.BytesIO(store.get_bytes(grid_key(tenant_id, trained_job)))).size == (2 + 8 * 34, 2 + 2 * 34)


def test_train_job_keeps_its_metrics_history_and_streams_samples_and_checkpoints(trained_job, session_factory):
    with session_factory() as session:
        points = jobs.metric_points(session, trained_job)
        stream = [(e.kind, e.detail) for e in jobs.events_after(session, trained_job, 0)]
    assert [p.step for p in points] == [10, 20]  # one per logged step (every 10), each once
    assert set(points[0].values) == {"loss_d", "loss_g", "d_real", "d_fake", "images_per_second"}
    assert [d["step"] for kind, d in stream if kind == "sample"] == [5, 10, 15, 20]
    assert [d["step"] for kind, d in stream if kind == "checkpoint"] == [10, 20]
    progress = [d["step"] for kind, d in stream if kind == "progress"]
    assert progress and progress[-1] == 20 and progress == sorted(progress)
    assert [kind for kind, _ in stream][-2:] == ["succeeded", "completed"]


def test_second_delivery_of_a_job_does_nothing(worker, trained_job, session_factory):
    job = wait_finished(session_factory, trained_job)
    _, events = artifacts_and_events(session_factory, trained_job)
    assert job.attempt == 1
    assert events == [("queued", 0), ("claimed", 1), ("started", 1), ("succeeded", 1)]


def test_generate_jobs_with_the_same_seeds_give_byte_identical_grids(worker, trained_job, celery_client,
                                                                    session_factory, tenant_id, store):
    request = {"generator_job": str(trained_job), "seeds": "0-5", "truncation": 0.8, "nrow": 3}
    ids = [create(session_factory, tenant_id, "generate", {}, request, parent_job_id=trained_job)
           for _ in range(2)]
    for job_id in ids:
        send(celery_client, job_id, "dcgan.generate", "generate")
    grids = []
    for job_id in ids:
        job = wait_finished(session_factory, job_id)
        assert (job.status, job.error_type) == ("succeeded", None), job.error_detail
        artifacts, _ = artifacts_and_events(session_factory, job_id)
        key, size, sha256, _ = artifacts["grid.png"]
        grids.append(store.get_bytes(key))
        assert (len(grids[-1]), hashlib.sha256(grids[-1]).hexdigest()) == (size, sha256)
    assert grids[0] == grids[1]
    assert Image.open(io.BytesIO(grids[0])).size == (2 + 3 * 34, 2 + 2 * 34)  # 6 seeds, 3 to a row


def test_generate_with_bad_seeds_fails_naming_them(worker, trained_job, celery_client, session_factory, tenant_id):
    request = {"generator_job": str(trained_job), "seeds": "9-3"}
    job_id = create(session_factory, tenant_id, "generate", {}, request, parent_job_id=trained_job)
    send(celery_client, job_id, "dcgan.generate", "generate")
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type) == ("failed", "sample_error")
    assert "9-3" in job.error_detail


def test_invalid_config_on_the_row_fails_the_job_with_a_config_error(worker, celery_client, session_factory,
                                                                    tenant_id, store):
    job_id = create(session_factory, tenant_id, "train", dict(TINY, steps=5), {"dataset": "builtin:digits"})
    with session_factory() as session:  # as if the row had been written around the API's validation
        session.execute(update(Job).where(Job.id == job_id).values(config=dict(TINY, steps=5, img_size=48)))
        session.commit()
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type) == ("failed", "config_error")
    assert "img_size" in job.error_detail
    assert store.list(f"jobs/{job_id}/") == []


def test_unknown_dataset_fails_with_a_data_error(worker, celery_client, session_factory, tenant_id):
    job_id = create(session_factory, tenant_id, "train", dict(TINY, steps=5), {"dataset": str(uuid.uuid4())})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type) == ("failed", "data_error")
    assert "no images" in job.error_detail


def start_long_job(celery_client, session_factory, tenant_id) -> uuid.UUID:
    """A 400-step training job, returned once the worker has recorded its first progress."""
    config = dict(TINY, steps=400, sample_every=0, checkpoint_every=0)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:fake"})
    send(celery_client, job_id)
    wait_until(session_factory, job_id, lambda job: job.progress.get("step", 0) > 0 or job.finished_at)
    return job_id


def test_cancelling_a_running_job_stops_it_and_keeps_its_last_checkpoint(worker, celery_client, session_factory,
                                                                         tenant_id, store):
    job_id = start_long_job(celery_client, session_factory, tenant_id)
    with session_factory() as session:
        jobs.request_cancel(session, job_id)
        session.commit()
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type) == ("cancelled", None)
    assert 0 < job.checkpoint_step < 400
    assert job.checkpoint_key == checkpoint_key(tenant_id, job_id, job.checkpoint_step)
    artifacts, events = artifacts_and_events(session_factory, job_id)
    key, size, sha256, step = artifacts[f"checkpoints/step-{job.checkpoint_step:07d}.pt"]
    data = store.get_bytes(key)
    assert (len(data), hashlib.sha256(data).hexdigest(), step) == (size, sha256, job.checkpoint_step)
    assert [kind for kind, _ in events] == ["queued", "claimed", "started", "cancel_requested", "cancelled"]


def assert_same_generator(store, tenant_id, job_a: uuid.UUID, job_b: uuid.UUID) -> None:
    """Same weights and metadata. Not the same bytes: safetensors writes metadata keys in hash order."""
    import torch
    from safetensors.torch import load

    files = [store.get_bytes(generator_key(tenant_id, job_id)) for job_id in (job_a, job_b)]
    headers = [json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"] for data in files]
    assert headers[0] == headers[1]
    weights = [load(data) for data in files]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def crashed_attempt(session_factory, job_id: uuid.UUID, checkpoints: dict[int, tuple[str, str]]) -> None:
    """Leave the job as a worker that died on attempt 1 after recording `checkpoints` ({step: (key,
    sha256)}) would have."""
    newest = max(checkpoints)
    with session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status="running", attempt=1, worker="dead:1", checkpoint_key=checkpoints[newest][0],
            checkpoint_step=newest, lease_expires_at=datetime.now(timezone.utc) + timedelta(seconds=60)))
        for step, (key, sha256) in checkpoints.items():
            assert jobs.record_artifact(session, job_id, 1, key.split("/", 4)[4], key, 1, sha256,
                                        "application/octet-stream", step=step)
        session.execute(update(Job).where(Job.id == job_id).values(
            lease_expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        session.commit()


def copy_checkpoint(store, tenant_id, source_job, job_id, step: int) -> tuple[str, str]:
    key = checkpoint_key(tenant_id, job_id, step)
    data = store.get_bytes(checkpoint_key(tenant_id, source_job, step))
    store.put_bytes(key, data)
    return key, hashlib.sha256(data).hexdigest()


def test_redelivered_job_resumes_from_its_checkpoint_to_the_same_generator(worker, trained_job, celery_client,
                                                                           session_factory, tenant_id, store):
    config = dict(TINY, steps=20, sample_every=5, checkpoint_every=10)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:digits"})
    crashed_attempt(session_factory, job_id, {10: copy_checkpoint(store, tenant_id, trained_job, job_id, 10)})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt, job.checkpoint_step) == ("succeeded", 2, 20), job.error_detail
    _, events = artifacts_and_events(session_factory, job_id)
    assert ("resumed", 2) in events and ("resumed_from_step", 2) in events and "notes" not in job.progress
    with session_factory() as session:
        resumed = [e.detail for e in jobs.list_events(session, job_id) if e.kind == "resumed_from_step"]
    assert resumed == [{"step": 10, "key": checkpoint_key(tenant_id, job_id, 10)}]
    # Resume is exact: 10 steps + resume + 10 steps is the uninterrupted 20-step run.
    assert_same_generator(store, tenant_id, job_id, trained_job)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(worker, trained_job, celery_client,
                                                                    session_factory, tenant_id, store):
    config = dict(TINY, steps=20, sample_every=5, checkpoint_every=10)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:digits"})
    older = copy_checkpoint(store, tenant_id, trained_job, job_id, 10)
    newest_key, newest_sha = copy_checkpoint(store, tenant_id, trained_job, job_id, 20)
    store.put_bytes(newest_key, b"flipped bits")  # the stored bytes no longer match the recorded sha256
    crashed_attempt(session_factory, job_id, {10: older, 20: (newest_key, newest_sha)})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2), job.error_detail
    assert any("does not match its recorded sha256" in note for note in job.progress["notes"])
    with session_factory() as session:
        resumed = [e.detail["step"] for e in jobs.list_events(session, job_id) if e.kind == "resumed_from_step"]
    assert resumed == [10]
    assert_same_generator(store, tenant_id, job_id, trained_job)


def test_an_unloadable_checkpoint_starts_over_and_says_so(worker, trained_job, celery_client, session_factory,
                                                         tenant_id, store):
    config = dict(TINY, steps=20, sample_every=5, checkpoint_every=10)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:digits"})
    key = checkpoint_key(tenant_id, job_id, 10)
    store.put_bytes(key, b"not a checkpoint")  # recorded as such: the bytes match, but do not load
    crashed_attempt(session_factory, job_id, {10: (key, hashlib.sha256(b"not a checkpoint").hexdigest())})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.attempt, job.checkpoint_step) == ("succeeded", 2, 20), job.error_detail
    assert any("could not resume" in note for note in job.progress["notes"])
    _, events = artifacts_and_events(session_factory, job_id)
    assert ("started", 2) in events
    # Started from step 0 with the same seed: the same generator as the uninterrupted run.
    assert_same_generator(store, tenant_id, job_id, trained_job)


def test_a_diverged_run_fails_as_non_finite_loss_and_is_not_retried(worker, trained_job, celery_client,
                                                                    session_factory, tenant_id, store):
    """A resumed attempt whose discriminator is all NaN: the job fails with its own reason at once, instead
    of being handed to attempt after attempt."""
    import torch

    config = dict(TINY, steps=20, sample_every=5, checkpoint_every=10)
    job_id = create(session_factory, tenant_id, "train", config, {"dataset": "builtin:digits"})
    state = torch.load(io.BytesIO(store.get_bytes(checkpoint_key(tenant_id, trained_job, 10))), weights_only=True)
    for tensor in state["D"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    key = checkpoint_key(tenant_id, job_id, 10)
    store.put_bytes(key, buffer.getvalue())
    crashed_attempt(session_factory, job_id, {10: (key, hashlib.sha256(buffer.getvalue()).hexdigest())})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "non_finite_loss", 2), job.error_detail
    _, events = artifacts_and_events(session_factory, job_id)
    assert "requeued" not in [kind for kind, _ in events]


def test_a_job_past_its_own_runtime_limit_checkpoints_and_fails_with_timeout(worker, celery_client, session_factory,
                                                                            tenant_id, store, settings):
    """`max_runtime_seconds` of the request, far below the worker's limit (DCGAN_MAX_JOB_SECONDS)."""
    assert settings.max_job_seconds > 3600
    config = dict(TINY, steps=100_000, sample_every=100_000, checkpoint_every=100_000)
    job_id = create(session_factory, tenant_id, "train", config,
                    {"dataset": "builtin:fake", "max_runtime_seconds": 2})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "timeout", 1), job.error_detail
    assert "runtime limit of 2 s" in job.error_detail
    assert 0 < job.checkpoint_step < 100_000  # the final checkpoint, written at the stop
    assert job.progress["step"] == job.checkpoint_step  # the progress shows where it stopped
    assert f"at step {job.checkpoint_step} of 100000" in job.error_detail
    artifacts, _ = artifacts_and_events(session_factory, job_id)
    assert {"generator.safetensors", "grid.png"} <= set(artifacts)


@pytest.mark.parametrize(("request_", "limit"), [
    ({"dataset": "x"}, 600), ({"max_runtime_seconds": 60}, 60), ({"max_runtime_seconds": 6000}, 600),
    ({"max_runtime_seconds": 0}, 600), ({"max_runtime_seconds": True}, 600), ({"max_runtime_seconds": "5"}, 600),
    (None, 600)])
def test_runtime_limit_is_the_jobs_own_within_the_servers(request_, limit):
    from worker.attempt import runtime_limit

    assert runtime_limit(request_, 600) == limit


def test_cuda_out_of_memory_fails_the_job_with_its_own_reason_and_is_not_retried(celery_client, session_factory,
                                                                                store, settings, tenant_id,
                                                                                monkeypatch):
    """No GPU here, so the out-of-memory error is raised by a stand-in for the training body, run in this
    process by the worker's own job runner against the real database and S3: what is tested is what the
    worker makes of it."""
    import torch

    from worker import tasks
    from worker.attempt import Context

    monkeypatch.setattr(tasks, "_context", Context(settings, session_factory, store, celery_client))
    job_id = create(session_factory, tenant_id, "train", dict(TINY, steps=5), {"dataset": "builtin:digits"})

    def out_of_memory(run) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\n(details)")

    tasks._run_job(celery_client, str(job_id), "train", out_of_memory)
    tasks._run_job(celery_client, str(job_id), "train", out_of_memory)  # a redelivery: not claimable
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "out_of_memory", 1)
    assert job.error_detail == "CUDA out of memory. Tried to allocate 20.00 GiB"
    _, events = artifacts_and_events(session_factory, job_id)
    assert [kind for kind, _ in events] == ["queued", "claimed", "failed"]


def test_an_attempt_fenced_out_mid_run_stops_without_writing_again(worker, celery_client, session_factory,
                                                                  tenant_id, store):
    job_id = start_long_job(celery_client, session_factory, tenant_id)
    with session_factory() as session:  # another worker took the job over after a lease expiry
        session.execute(update(Job).where(Job.id == job_id).values(attempt=2, worker="successor:1"))
        session.commit()
    worker.wait_for_log(f"job {job_id}: stopped", timeout=30)
    with session_factory() as session:
        job = session.get(Job, job_id)
        artifacts = jobs.list_artifacts(session, job_id)
        assert (job.status, job.attempt, job.worker, job.finished_at) == ("running", 2, "successor:1", None)
        assert job.checkpoint_key is None and artifacts == []
    assert store.list(job_prefix(tenant_id, job_id)) == []  # nothing uploaded over what the successor writes


def test_a_bug_is_recorded_as_internal_error_and_raised(worker, celery_client, session_factory, tenant_id):
    job_id = create(session_factory, tenant_id, "train", dict(TINY, steps=5), {"dataset": "builtin:digits"})
    send(celery_client, job_id, "dcgan.generate", "generate")  # a train job sent to the wrong task
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type) == ("failed", "internal_error")
    assert "sent to the generate task" in job.error_detail
    worker.wait_for_log("ValueError: job", timeout=10)  # Celery logged the traceback: it was re-raised


def test_celery_app_is_json_only_acks_late_and_routes_by_task_name(celery_client, settings):
    conf = celery_client.conf
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == ("json", "json", ["json"])
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > settings.max_job_seconds
    router = celery_client.amqp.router
    assert router.route({}, "dcgan.train")["queue"].name == "train"
    assert router.route({}, "dcgan.generate")["queue"].name == "generate"


def test_celery_app_without_a_broker_url_says_which_variable_is_missing(celery_client):
    from worker.celery_app import make_celery

    with pytest.raises(SettingsError, match="REDIS_URL"):
        make_celery(Settings().with_defaults())
