"""What a tenant uses (GET /v1/usage): stored bytes by kind, jobs by status, compute seconds by device kind.

Stored bytes are the sizes the database recorded, the same figures the storage quota counts (core.quotas):
- `datasets`: uploaded datasets (datasets.size_bytes);
- `job_artifacts`: every artifact of the tenant's jobs (a deleted job has none left);
- `generators`: registry versions whose weights are not a job's artifact: uploads, and the versions of a
  deleted training job, whose weights were moved out of its prefix (core.deletion). A live training job's
  registered generators are its artifacts and are counted once, as such.

Compute seconds are what the jobs' attempts ran (jobs.compute_seconds, added by the worker as each attempt
ends), by the device kind the job last ran on; deleted jobs still count, since the time was spent. Torch-free.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from core.db import Artifact, Dataset, Generator, Job, JobStatus

STORED_KINDS = ("datasets", "job_artifacts", "generators")


def stored_bytes_by_kind(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    """The tenant's stored bytes by kind (STORED_KINDS), in one query."""
    artifacts = (select(func.coalesce(func.sum(Artifact.size), 0)).join(Job, Artifact.job_id == Job.id)
                 .where(Job.tenant_id == tenant_id))
    datasets = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant_id == tenant_id)
    generators = select(func.coalesce(func.sum(Generator.size_bytes), 0)).where(
        Generator.tenant_id == tenant_id, ~exists().where(Artifact.key == Generator.storage_key))
    row = session.execute(select(datasets.scalar_subquery(), artifacts.scalar_subquery(),
                                 generators.scalar_subquery())).one()
    return {kind: int(value) for kind, value in zip(STORED_KINDS, row)}


def tenant_usage(session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The document GET /v1/usage answers (see the module docstring)."""
    stored = stored_bytes_by_kind(session, tenant_id)
    live = Job.tenant_id == tenant_id, Job.deleted_at.is_(None)
    by_status = {status: count for status, count in
                 session.execute(select(Job.status, func.count()).where(*live).group_by(Job.status))}
    deleted = session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id,
                                                                         Job.deleted_at.is_not(None)))
    device = func.coalesce(Job.device, "none")
    seconds = {kind: total for kind, total in session.execute(
        select(device, func.sum(Job.compute_seconds)).where(Job.tenant_id == tenant_id, Job.compute_seconds > 0)
        .group_by(device))}
    compute = {"cpu": 0.0, "cuda": 0.0, **{device: round(float(total), 3) for device, total in seconds.items()}}
    return {
        "stored_bytes": {**stored, "total": sum(stored.values())},
        "jobs": {"by_status": {status.value: int(by_status.get(status.value, 0)) for status in JobStatus},
                 "total": sum(int(n) for n in by_status.values()), "deleted": int(deleted or 0)},
        "compute_seconds": {**compute, "total": round(sum(compute.values()), 3)},
    }
