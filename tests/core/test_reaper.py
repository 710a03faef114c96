"""The reaper and the transitions it and the worker's recovery paths use, on PostgreSQL and SQLite, with
messages published to a real Redis (a database of these tests' own) and read back off its queues."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from core import jobs
from core.db import Artifact, IdempotencyRecord, Job, utcnow
from core.queue import CeleryQueue
from core.reaper import reap_once, run_reaper
from core.settings import Settings
from tests.conftest import flushed_redis
from tests.redis_dbs import shared_redis_url

REDIS_URL = shared_redis_url("core")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def redis_client():
    yield from flushed_redis(REDIS_URL)


def published(redis_client) -> list[tuple[str, str]]:
    """(task name, job id) of every message waiting on the train and generate queues, oldest first."""
    found = []
    for queue in ("train", "generate"):
        for raw in reversed(redis_client.lrange(queue, 0, -1)):
            message = json.loads(raw)
            found.append((message["headers"]["task"], message["headers"]["argsrepr"].strip("[]()',\"")))
    return found


def new_job(session, tenant_id, type="train", created=T0) -> uuid.UUID:
    job = jobs.create_job(session, tenant_id, type, {"steps": 10}, {}, now=created)
    session.commit()
    return job.id


def test_due_for_publish_backs_off_and_skips_fresh_claimed_and_cancelled_jobs(session, tenant_id):
    fresh = new_job(session, tenant_id, created=T0)
    old = new_job(session, tenant_id, created=T0 - timedelta(seconds=120))
    cancelled = new_job(session, tenant_id, created=T0 - timedelta(seconds=120))
    jobs.request_cancel(session, cancelled)
    running = new_job(session, tenant_id, created=T0 - timedelta(seconds=120))
    jobs.claim_job(session, running, "w", 60, now=T0)
    session.commit()
    assert jobs.due_for_publish(session, 60, now=T0) == [(old, "train")]
    assert fresh in dict(jobs.due_for_publish(session, 60, now=T0 + timedelta(seconds=61)))
    # Published 3 times, last at T0: it waits 60 * 2**2 = 240 s before the next send.
    for _ in range(3):
        jobs.mark_published(session, old, now=T0)
    session.commit()
    assert old not in dict(jobs.due_for_publish(session, 60, now=T0 + timedelta(seconds=239)))
    assert old in dict(jobs.due_for_publish(session, 60, now=T0 + timedelta(seconds=241)))
    # ... but never longer than the cap.
    for _ in range(20):
        jobs.mark_published(session, old, now=T0)
    session.commit()
    assert old in dict(jobs.due_for_publish(session, 60, max_pause_seconds=600, now=T0 + timedelta(seconds=601)))


def test_requeue_for_retry_costs_an_attempt_and_fails_when_they_are_spent(session, tenant_id):
    job_id = new_job(session, tenant_id)
    for attempt in (1, 2):
        assert jobs.claim_job(session, job_id, "w", 60) == attempt
        assert jobs.requeue_for_retry(session, job_id, attempt, "storage_unavailable", "S3 down") == "queued"
        session.commit()
    assert jobs.requeue_for_retry(session, job_id, 1, "storage_unavailable", "stale") is None  # fenced
    assert jobs.claim_job(session, job_id, "w", 60) == 3
    assert jobs.requeue_for_retry(session, job_id, 3, "storage_unavailable", "S3 down") == "failed"
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.status, job.error_type, job.error_detail, job.lease_expires_at) == (
        "failed", "storage_unavailable", "S3 down", None)


def test_record_event_is_fenced(session, tenant_id):
    job_id = new_job(session, tenant_id)
    attempt = jobs.claim_job(session, job_id, "w", 60)
    assert jobs.record_event(session, job_id, attempt, "resumed_from_step", {"step": 40})
    assert not jobs.record_event(session, job_id, attempt + 1, "resumed_from_step", {"step": 0})
    session.commit()
    assert [(e.kind, e.detail) for e in jobs.list_events(session, job_id)][-1] == ("resumed_from_step", {"step": 40})


def test_checkpoints_newest_first_lists_only_checkpoints(session, tenant_id):
    job_id = new_job(session, tenant_id)
    attempt = jobs.claim_job(session, job_id, "w", 60)
    for name, step in (("checkpoints/step-0000040.pt", 40), ("checkpoints/step-0000120.pt", 120),
                       ("samples/step-0000200.png", 200), ("checkpoints/step-0000080.pt", 80)):
        assert jobs.record_artifact(session, job_id, attempt, name, f"k/{job_id}/{name}", 1, "0" * 64,
                                    "application/octet-stream", step=step)
    session.commit()
    assert [a.step for a in jobs.checkpoints_newest_first(session, job_id)] == [120, 80, 40]
    assert all(isinstance(a, Artifact) for a in jobs.checkpoints_newest_first(session, job_id))


def test_reap_once_requeues_expired_leases_and_republishes_lost_messages(engine, session_factory, session,
                                                                         tenant_id, redis_client):
    settings = Settings(republish_seconds=30)
    now = utcnow()
    never_published = new_job(session, tenant_id, created=now - timedelta(seconds=60))
    just_created = new_job(session, tenant_id, created=now)
    crashed = new_job(session, tenant_id, created=now - timedelta(seconds=60))
    jobs.claim_job(session, crashed, "dead:1", 60, now=now - timedelta(seconds=120))  # lease ran out
    spent = new_job(session, tenant_id, created=now - timedelta(seconds=60))
    session.execute(update(Job).where(Job.id == spent).values(max_attempts=1))
    jobs.claim_job(session, spent, "dead:2", 60, now=now - timedelta(seconds=120))
    session.commit()
    queue = CeleryQueue(REDIS_URL)
    try:
        report = reap_once(session_factory, queue, settings)
        assert report.requeued == [crashed]
        assert sorted(report.published) == sorted([crashed, never_published])
        assert sorted(published(redis_client)) == sorted([("dcgan.train", str(crashed)),
                                                          ("dcgan.train", str(never_published))])
        session.expire_all()
        assert session.get(Job, spent).error_type == "worker_lost"
        assert session.get(Job, just_created).publish_count == 0
        # Right after: nothing is due again yet, so a second pass sends nothing new.
        assert reap_once(session_factory, queue, settings).published == []
        assert len(published(redis_client)) == 2
        # Idempotency records: those past the retention go, the others stay.
        for key, age in (("old", 25), ("recent", 23)):
            session.add(IdempotencyRecord(tenant_id=tenant_id, key=key, request_hash="0" * 64, response_status=202,
                                          response_body={}, created_at=now - timedelta(hours=age)))
        session.commit()
        assert reap_once(session_factory, queue, Settings(idempotency_hours=24)).idempotency_records_deleted == 1
        session.expire_all()
        assert [r.key for r in session.scalars(select(IdempotencyRecord))] == ["recent"]
    finally:
        queue.close()


def test_reaper_survives_a_broker_that_is_down_and_publishes_once_it_is_back(session_factory, session, tenant_id,
                                                                            redis_client):
    settings = Settings(republish_seconds=30, reap_seconds=1)
    job_id = new_job(session, tenant_id, created=utcnow() - timedelta(seconds=60))
    down = CeleryQueue("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        report = reap_once(session_factory, down, settings)
    finally:
        down.close()
    assert (report.published, report.publish_failures) == ([], 1)
    session.expire_all()
    assert session.get(Job, job_id).publish_count == 0  # still due: the next pass tries again
    queue, stop = CeleryQueue(REDIS_URL), threading.Event()
    thread = threading.Thread(target=run_reaper, args=(session_factory, queue, settings, stop))
    thread.start()
    try:
        deadline = utcnow() + timedelta(seconds=30)
        while not published(redis_client) and utcnow() < deadline:
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
        queue.close()
    assert published(redis_client) == [("dcgan.train", str(job_id))]
