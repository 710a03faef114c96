"""Generate jobs on an uploaded generator, through a real celery worker process, PostgreSQL and S3 (moto
over HTTP): the worker downloads the weights, checks them again with core.weights, loads them with
safetensors only and renders the grid."""

from __future__ import annotations

import io
import time
import uuid

from PIL import Image

from core import jobs, registry
from core.db import Generator, Job
from core.gan.config import TrainConfig
from core.gan.sample import Sampler, grid_image, png_bytes
from core.storage import grid_key, uploaded_generator_key
from core.weights import check_generator_weights
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes, with_value

FINISH_TIMEOUT = 120
CONFIG = TrainConfig.from_dict({**TINY, "steps": 1}).to_dict()


def upload_generator(session_factory, store, tenant_id, data: bytes) -> uuid.UUID:
    """What POST /v1/generators does: check, store under the tenant's prefix, record."""
    generator_id = uuid.uuid4()
    key = uploaded_generator_key(tenant_id, generator_id)
    check_generator_weights(io.BytesIO(data), CONFIG)
    stored = store.put_bytes(key, data)
    with session_factory() as session:
        registry.register(session, tenant_id, "uploaded", id=generator_id, source="upload", config=CONFIG,
                          storage_key=key, size_bytes=stored.size, sha256=stored.sha256)
        session.commit()
    return generator_id


def submit(session_factory, celery_client, tenant_id, generator_id: uuid.UUID, seeds: list[int]) -> uuid.UUID:
    with session_factory() as session:
        job = jobs.create_job(session, tenant_id, "generate", CONFIG,
                              {"generator": str(generator_id), "seeds": seeds, "truncation": 1.0, "nrow": 2})
        job.generator_id = generator_id
        session.commit()
        job_id = job.id
    celery_client.send_task("dcgan.generate", args=[str(job_id)], queue="generate")
    return job_id


def wait_finished(session_factory, job_id: uuid.UUID) -> Job:
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:
        with session_factory() as session:
            job = session.get(Job, job_id)
            session.expunge(job)
        if job.finished_at is not None:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} after {FINISH_TIMEOUT} s"
        time.sleep(0.2)


def test_generate_from_an_uploaded_generator(worker, celery_client, session_factory, store, tenant_id, tmp_path):
    data = safetensors_bytes(generator_arrays(dtype="BF16", seed=3))
    generator_id = upload_generator(session_factory, store, tenant_id, data)
    job_id = submit(session_factory, celery_client, tenant_id, generator_id, [0, 1, 2, 3])
    job = wait_finished(session_factory, job_id)
    assert (job.status, job.error_type, job.error_detail) == ("succeeded", None, None)

    grid = store.get_bytes(grid_key(tenant_id, job_id))
    image = Image.open(io.BytesIO(grid))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (2 + 2 * 34, 2 + 2 * 34))  # 2x2 of 32x32
    # The same weights loaded here give the same bytes: the worker sampled exactly the uploaded generator.
    path = tmp_path / "g.safetensors"
    path.write_bytes(data)
    local = Sampler.from_state(TrainConfig.from_dict(CONFIG), path)
    assert png_bytes(grid_image(local.images_for_seeds([0, 1, 2, 3]), nrow=2)) == grid
    with session_factory() as session:
        names = [a.name for a in jobs.list_artifacts(session, job_id)]
    assert names == ["grid.png"]


def test_weights_changed_in_the_store_fail_the_job(worker, celery_client, session_factory, store, tenant_id):
    """The worker checks the weights again: a NaN written into the stored object after upload fails the job
    with its own reason instead of rendering garbage."""
    generator_id = upload_generator(session_factory, store, tenant_id, safetensors_bytes(generator_arrays()))
    with session_factory() as session:
        key = session.get(Generator, generator_id).storage_key
    store.put_bytes(key, safetensors_bytes(with_value("main.0.weight", float("nan"))))
    job = wait_finished(session_factory, submit(session_factory, celery_client, tenant_id, generator_id, [0]))
    assert (job.status, job.error_type) == ("failed", "weights_error")
    assert "NaN" in job.error_detail and "main.0.weight" in job.error_detail
    assert not store.exists(grid_key(tenant_id, job.id))
