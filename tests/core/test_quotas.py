"""core.quotas on PostgreSQL and SQLite: the hourly job count and its wait, a tenant's stored bytes, checkpoint
retention's choice, and the fenced delete of artifact rows (core.jobs.forget_artifacts)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from core import jobs, quotas
from core.db import Artifact, Dataset, Generator, ensure_tenant
from core.storage import checkpoint_key

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def job_at(session, tenant_id, at: datetime) -> uuid.UUID:
    job = jobs.create_job(session, tenant_id, "train", {"steps": 10}, {"dataset": "builtin:digits"}, now=at)
    session.commit()
    return job.id


def test_every_job_of_the_last_hour_counts_and_the_wait_is_until_the_oldest_leaves(session, tenant_id):
    for minutes in (59, 30, 10):
        job_id = job_at(session, tenant_id, T0 - timedelta(minutes=minutes))
    jobs.request_cancel(session, job_id)  # cancelled: still counted
    job_at(session, tenant_id, T0 - timedelta(minutes=61))  # left the window
    other = ensure_tenant(session, "other").id
    job_at(session, other, T0 - timedelta(minutes=5))  # another tenant's
    session.commit()
    assert quotas.hourly_job_wait(session, tenant_id, 4, now=T0) is None
    assert quotas.hourly_job_wait(session, tenant_id, 3, now=T0) == 60  # the 59-minute-old one leaves in 1 min
    assert quotas.hourly_job_wait(session, tenant_id, 2, now=T0) == 30 * 60  # two have to leave: the 2nd at 30 min
    # The job being created (flushed, `pending`) does not count against the cap it is checked against.
    job_at(session, tenant_id, T0)
    assert quotas.hourly_job_wait(session, tenant_id, 4, now=T0, pending=1) is None
    assert quotas.hourly_job_wait(session, tenant_id, 3, now=T0, pending=1) == 60
    assert quotas.hourly_job_wait(session, other, 2, now=T0) is None
    assert quotas.retry_after(0.2) == "1" and quotas.retry_after(60) == "60" and quotas.retry_after(60.1) == "61"


def test_stored_bytes_count_artifacts_datasets_and_uploaded_generators_once(session, tenant_id):
    job_id = job_at(session, tenant_id, T0)
    attempt = jobs.claim_job(session, job_id, "w", 60)
    for name, size in (("generator.safetensors", 1000), ("grid.png", 20)):
        assert jobs.record_artifact(session, job_id, attempt, name, f"tenants/t/jobs/{job_id}/{name}", size,
                                    "0" * 64, "application/octet-stream")
    session.add(Dataset(tenant_id=tenant_id, name="d", source="upload", storage_prefix="p/", size_bytes=300))
    session.add(Generator(tenant_id=tenant_id, name="g", config={}, storage_key="k1", size_bytes=4000, sha256="0" * 64,
                          source="upload"))
    # A job's registered generator is the job's artifact: counted once, as the artifact.
    session.add(Generator(tenant_id=tenant_id, name="g", version=2, config={},
                          storage_key=f"tenants/t/jobs/{job_id}/generator.safetensors", size_bytes=1000,
                          sha256="0" * 64, source="final", job_id=job_id))
    other = ensure_tenant(session, "other").id
    session.add(Dataset(tenant_id=other, name="d", source="upload", storage_prefix="q/", size_bytes=99_999))
    session.commit()
    assert quotas.stored_bytes(session, tenant_id) == 1000 + 20 + 300 + 4000
    assert quotas.stored_bytes(session, other) == 99_999
    quotas.check_storage(session, tenant_id, 5680, 11_000, "x")  # exactly the quota
    with pytest.raises(quotas.StorageQuotaExceeded, match="x needs 5681 bytes; the tenant stores 5320 of its quota "
                                                          "of 11000 bytes"):
        quotas.check_storage(session, tenant_id, 5681, 11_000, "x")
    # Overwriting an artifact (the live grid.png) frees what it held.
    quotas.check_storage(session, tenant_id, 5700, 11_000, "x", replacing_key=f"tenants/t/jobs/{job_id}/grid.png")


def test_retention_keeps_the_newest_the_final_and_the_protected_checkpoints():
    newest_first = [(f"k{step}", step) for step in (100, 90, 80, 70, 60, 50)]
    doomed = quotas.checkpoints_to_delete
    assert [s for _, s in doomed(newest_first[1:], keep=2, final=False)] == [70, 60, 50]
    assert [s for _, s in doomed(newest_first, keep=2, final=True)] == [70, 60, 50]  # 100 final + 90, 80
    assert [s for _, s in doomed(newest_first, keep=2, final=True, protected_keys=["k60"],
                                 protected_steps=[50])] == [70]
    assert doomed(newest_first[:2], keep=3, final=True) == []
    assert quotas.checkpoint_step(checkpoint_key(uuid.uuid4(), uuid.uuid4(), 1200)) == 1200
    assert quotas.checkpoint_step("tenants/t/jobs/j/grid.png") is None


def test_forgetting_artifacts_is_fenced(session, tenant_id):
    job_id = job_at(session, tenant_id, T0)
    attempt = jobs.claim_job(session, job_id, "w", 60)
    keys = [checkpoint_key(tenant_id, job_id, step) for step in (10, 20)]
    for step, key in zip((10, 20), keys):
        jobs.record_artifact(session, job_id, attempt, f"checkpoints/{step}", key, 1, "0" * 64, "x", step=step)
    session.commit()
    assert not jobs.forget_artifacts(session, job_id, attempt + 1, keys)  # not the attempt that holds the job
    session.commit()
    assert len(jobs.checkpoints_newest_first(session, job_id)) == 2
    assert jobs.forget_artifacts(session, job_id, attempt, keys[:1])
    session.commit()
    assert [a.key for a in session.query(Artifact).filter_by(job_id=job_id)] == keys[1:]
