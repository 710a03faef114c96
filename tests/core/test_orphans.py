"""The orphan reaper (core.orphans, the reaper's step 4) on PostgreSQL and SQLite, with the local store and S3
(moto over HTTP): what no row refers to goes once it is old enough; what a row refers to, and what is fresh,
stays; a pass looks at a bounded batch and the walk goes on where the last one stopped."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest

from core import deletion, jobs
from core.db import utcnow
from core.orphans import OrphanScan, reap_orphans, referenced
from core.queue import CeleryQueue
from core.reaper import reap_once
from core.settings import Settings
from core.storage import checkpoint_key, dataset_prefix, job_prefix, uploaded_generator_key
from tests.core.test_deletion import finished_train_job, make_store, uploaded_dataset
from tests.redis_dbs import shared_redis_url

HOUR = 3600
LATER = timedelta(hours=2)  # S3 keeps its own LastModified: the reaper is asked "as if two hours from now"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    return make_store(request, tmp_path)


def live_rows(session, store, tenant_id) -> dict[str, str]:
    """Objects some row refers to, one of each kind, by the kind."""
    job_id = finished_train_job(session, store, tenant_id)
    running = jobs.create_job(session, tenant_id, "train", {}, {}).id
    session.commit()
    unrecorded = checkpoint_key(tenant_id, running, 5)  # a running job writes before it records
    store.put_bytes(unrecorded, b"x")
    dataset_id = uploaded_dataset(session, store, tenant_id)
    return {"artifact": checkpoint_key(tenant_id, job_id, 10), "live job's prefix": unrecorded,
            "dataset": dataset_prefix(tenant_id, dataset_id) + "a.png",
            "generator": next(key for key in store.list(job_prefix(tenant_id, job_id)) if "generator" in key)}


def test_old_orphans_go_fresh_ones_and_referenced_objects_stay(session, store, tenant_id):
    kept = live_rows(session, store, tenant_id)
    deleted_job = finished_train_job(session, store, tenant_id)
    [moved] = deletion.delete_job(session, store, tenant_id, deleted_job).generators_moved
    kept["a deleted job's moved generator"] = uploaded_generator_key(tenant_id, moved)
    orphans = {
        "a deleted job's leftover": checkpoint_key(tenant_id, deleted_job, 99),  # a stale attempt wrote it later
        "a never-committed dataset upload": dataset_prefix(tenant_id, uuid.uuid4()) + "a.png",
        "a never-committed generator upload": uploaded_generator_key(tenant_id, uuid.uuid4()),
        "a job that never existed": checkpoint_key(tenant_id, uuid.uuid4(), 1),
    }
    for key in orphans.values():
        store.put_bytes(key, b"orphan")
    everything = set(store.list("tenants/"))

    fresh = reap_orphans(session, store, OrphanScan(), HOUR, batch=1000)
    assert fresh == [] and set(store.list("tenants/")) == everything  # nothing is an hour old yet

    gone = reap_orphans(session, store, OrphanScan(), HOUR, batch=1000, now=utcnow() + LATER)
    assert sorted(gone) == sorted(orphans.values())
    assert set(store.list("tenants/")) == everything - set(orphans.values())
    for kind, key in kept.items():
        assert store.exists(key), kind


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_an_old_orphan_goes_and_a_fresh_one_stays_by_their_own_times(session, store, tenant_id):
    old, fresh = (uploaded_generator_key(tenant_id, uuid.uuid4()) for _ in range(2))
    for key in (old, fresh):
        store.put_bytes(key, b"orphan")
    two_hours_ago = time.time() - 2 * HOUR
    os.utime(store.root / old, (two_hours_ago, two_hours_ago))
    assert reap_orphans(session, store, OrphanScan(), HOUR, batch=1000) == [old]
    assert store.exists(fresh) and not store.exists(old)


def test_a_pass_looks_at_one_batch_and_the_walk_wraps_around(session, store, tenant_id):
    keys = sorted(uploaded_generator_key(tenant_id, uuid.uuid4()) for _ in range(5))
    for key in keys:
        store.put_bytes(key, b"orphan")
    scan, later = OrphanScan(), utcnow() + LATER
    assert reap_orphans(session, store, scan, HOUR, batch=2, now=later) == keys[:2]
    assert scan.after == keys[1]
    assert reap_orphans(session, store, scan, HOUR, batch=2, now=later) == keys[2:4]
    assert reap_orphans(session, store, scan, HOUR, batch=2, now=later) == keys[4:]
    assert scan.after == "" and store.list("tenants/") == []  # a short batch: the next pass starts over


def test_referenced_needs_the_row_not_just_the_prefix(session, store, tenant_id):
    kept = live_rows(session, store, tenant_id)
    listed = store.list_objects("tenants/")
    assert set(kept.values()) <= referenced(session, listed)
    assert [obj.key for obj in listed] == store.list("tenants/")
    assert all(obj.size > 0 and obj.modified <= utcnow() + timedelta(seconds=5) for obj in listed)


def test_reap_once_reaps_orphans_when_given_the_store(engine, session_factory, session, store, tenant_id):
    orphan = uploaded_generator_key(tenant_id, uuid.uuid4())
    store.put_bytes(orphan, b"orphan")
    queue = CeleryQueue(shared_redis_url("core"))  # nothing is due: no message is sent
    settings = Settings(orphan_grace_seconds=1, orphan_batch=10)
    assert reap_once(session_factory, queue, settings).orphans_deleted == 0  # no store: no step 4
    assert store.exists(orphan)
    time.sleep(1.5)
    assert reap_once(session_factory, queue, settings, store, OrphanScan()).orphans_deleted == 1
    assert not store.exists(orphan)
