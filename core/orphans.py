"""Orphaned objects: what the artifact store keeps that no row refers to, and the reaper's pass that deletes it.

An object is referenced while one of these says so:
- an artifact row's key (a job's checkpoints, samples, grid, generators, outputs);
- a live job's prefix (`tenants/<t>/jobs/<id>/`, the job not deleted): a running job writes its objects before
  it records them, and a stale attempt of it may still be writing;
- a dataset's `storage_prefix`;
- a generator version's `storage_key` (uploads, and the weights a deleted job's versions were moved to).

Everything else under `tenants/` is an orphan: objects of a deleted job or dataset whose store delete failed
after the rows went (core.deletion deletes rows first), uploads whose row was never committed, writes of an
attempt that lost its job. Orphans are deleted once they are older than `Settings.orphan_grace_seconds` (an
hour): an upload writes its objects before it commits the row that names them, and the grace is far longer
than any commit takes, so nothing in flight is taken.

The store is walked in key order, `Settings.orphan_batch` objects a pass, from where the previous pass
stopped (`OrphanScan`, kept by the caller), so one pass costs one bounded listing and a few queries however
large the store is. Torch-free.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Artifact, Dataset, Generator, Job, utcnow
from core.request_models import parse_id
from core.storage import ArtifactStore, ListedObject

log = logging.getLogger(__name__)
SCANNED_PREFIX = "tenants/"  # every key the platform makes lives under a tenant's prefix (core.storage.keys)
_OWNED = re.compile(r"tenants/([^/]+)/(jobs|datasets)/([^/]+)/")


@dataclass
class OrphanScan:
    """Where the walk of the store goes on from: the last key the previous pass looked at ('' = the start)."""

    after: str = ""
    passes: int = 0
    deleted: list[str] = field(default_factory=list)  # the keys deleted by the latest pass


def reap_orphans(session: Session, store: ArtifactStore, scan: OrphanScan, grace_seconds: float, batch: int,
                 now: datetime | None = None) -> list[str]:
    """Look at the next `batch` objects of the store and delete the orphans among them older than
    `grace_seconds`; the keys deleted. Advances `scan` (back to the start after the last object)."""
    now = now or utcnow()
    listed = store.list_objects(SCANNED_PREFIX, start_after=scan.after, limit=batch)
    scan.after = listed[-1].key if len(listed) == batch else ""
    scan.passes += 1
    cutoff = now - timedelta(seconds=grace_seconds)
    old = [obj for obj in listed if obj.modified < cutoff]
    orphans = [obj.key for obj in old if obj.key not in referenced(session, old)]
    session.rollback()  # the reads are done; hold no snapshot while the store deletes
    for key in orphans:
        store.delete(key)
    scan.deleted = orphans
    if orphans:
        log.info("reaper: deleted %d orphaned objects (first %s)", len(orphans), orphans[0])
    return orphans


def referenced(session: Session, objects: list[ListedObject]) -> set[str]:
    """The keys of `objects` that some row refers to (see the module docstring)."""
    keys = [obj.key for obj in objects]
    if not keys:
        return set()
    found = set(session.scalars(select(Artifact.key).where(Artifact.key.in_(keys))))
    found |= set(session.scalars(select(Generator.storage_key).where(Generator.storage_key.in_(keys))))
    owners: dict[str, tuple[str, uuid.UUID, uuid.UUID]] = {}  # key -> (jobs|datasets, tenant id, row id)
    for key in keys:
        match = _OWNED.match(key)
        tenant, row = parse_id(match.group(1)) if match else None, parse_id(match.group(3)) if match else None
        if tenant is not None and row is not None:
            owners[key] = (match.group(2), tenant, row)
    job_ids = {row for kind, _, row in owners.values() if kind == "jobs"}
    dataset_ids = {row for kind, _, row in owners.values() if kind == "datasets"}
    live_jobs = {(tenant, job) for tenant, job in session.execute(select(Job.tenant_id, Job.id).where(
        Job.id.in_(job_ids), Job.deleted_at.is_(None)))} if job_ids else set()
    dataset_prefixes = {row: prefix for row, prefix in session.execute(select(Dataset.id, Dataset.storage_prefix)
                                                                      .where(Dataset.id.in_(dataset_ids)))}
    for key, (kind, tenant, row) in owners.items():
        if kind == "jobs" and (tenant, row) in live_jobs:
            found.add(key)
        elif kind == "datasets" and key.startswith(dataset_prefixes.get(row) or "\0"):
            found.add(key)
    return found
