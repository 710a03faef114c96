"""A small real training job on a real Celery worker (PostgreSQL, Redis, S3 on moto): the worker adds the attempt's
running seconds and its device kind to the job's row, GET /v1/usage's figures follow from it, and deleting the
job then empties its prefix in S3 while its registry versions keep their weights."""

from __future__ import annotations

from core import deletion, registry
from core.db import Job
from core.storage import job_prefix, uploaded_generator_key
from core.usage import tenant_usage
from tests.worker.test_tasks import TINY, create, send, wait_finished


def test_a_jobs_compute_seconds_and_usage_then_its_deletion(worker, celery_client, session_factory, store, tenant_id):
    job_id = create(session_factory, tenant_id, "train", dict(TINY, steps=6, sample_every=3, checkpoint_every=3),
                    {"dataset": "builtin:digits"})
    send(celery_client, job_id)
    job = wait_finished(session_factory, job_id)
    assert job.status == "succeeded", job.error_detail
    assert job.device == "cpu"  # these tests run on the CPU
    assert 0 < job.compute_seconds <= (job.finished_at - job.started_at).total_seconds() + 5

    with session_factory() as session:
        usage = tenant_usage(session, tenant_id)
        listed = store.list_objects(job_prefix(tenant_id, job_id))
        versions = registry.of_job(session, tenant_id, job_id)
    assert usage["stored_bytes"]["job_artifacts"] == sum(obj.size for obj in listed) > 0
    assert usage["jobs"]["by_status"]["succeeded"] >= 1
    # Usage rounds to milliseconds; this tenant may have run other jobs of the module before.
    assert usage["compute_seconds"]["cpu"] >= round(job.compute_seconds, 3) and usage["compute_seconds"]["cuda"] == 0.0

    with session_factory() as session:
        done = deletion.delete_job(session, store, tenant_id, job_id)
        assert store.list(job_prefix(tenant_id, job_id)) == []
        assert done.objects_deleted == len(listed)
        assert session.get(Job, job_id).deleted_at is not None
        for version in versions:
            moved = registry.resolve(session, tenant_id, str(version.id))
            assert moved.storage_key == uploaded_generator_key(tenant_id, version.id)
            assert store.exists(moved.storage_key)
        after = tenant_usage(session, tenant_id)
    assert after["stored_bytes"]["job_artifacts"] == usage["stored_bytes"]["job_artifacts"] - sum(
        obj.size for obj in listed)
    assert after["compute_seconds"] == usage["compute_seconds"]
