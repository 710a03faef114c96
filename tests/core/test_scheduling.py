"""core.scheduling on both backends: the order queued jobs are taken in (priority, without starvation), the
queue position a poll shows, and the per-tenant cap on running jobs that claim_job enforces."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from core import jobs, scheduling
from core.db import Job, ensure_tenant, make_session_factory

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
STEP = 600


def queued(session, tenant_id, priority=5, at=T0, type="train") -> uuid.UUID:
    job = jobs.create_job(session, tenant_id, type, {}, {}, priority=priority, priority_step_seconds=STEP, now=at)
    session.commit()
    return job.id


def test_a_higher_priority_goes_first_among_jobs_queued_close_together(session, tenant_id):
    low = [queued(session, tenant_id, 1, T0 + timedelta(seconds=i)) for i in range(3)]
    urgent = queued(session, tenant_id, 9, T0 + timedelta(seconds=10))
    default = queued(session, tenant_id, 5, T0 + timedelta(seconds=11))
    assert scheduling.candidates(session, "train") == [urgent, default, *low]
    assert [scheduling.queue_position(session, session.get(Job, job_id)) for job_id in (urgent, default, *low)] \
        == [1, 2, 3, 4, 5]


def test_no_job_is_passed_over_by_jobs_queued_more_than_nine_steps_after_it(session, tenant_id):
    waiting = queued(session, tenant_id, 0, T0)
    just_within = queued(session, tenant_id, 9, T0 + timedelta(seconds=9 * STEP - 1))
    too_late = queued(session, tenant_id, 9, T0 + timedelta(seconds=9 * STEP + 1))
    assert scheduling.candidates(session, "train") == [just_within, waiting, too_late]


def test_queues_are_ordered_apart_and_finished_or_cancelled_jobs_leave_them(session, tenant_id):
    train = queued(session, tenant_id, 5)
    generate = queued(session, tenant_id, 9, type="generate")
    cancelled = queued(session, tenant_id, 9)
    jobs.request_cancel(session, cancelled)
    session.commit()
    assert scheduling.candidates(session, "train") == [train]
    assert scheduling.candidates(session, "generate") == [generate]
    assert scheduling.queue_position(session, session.get(Job, train)) == 1
    assert jobs.claim_job(session, train, "w", 60) == 1
    session.commit()
    assert scheduling.queue_position(session, session.get(Job, train)) is None


def test_a_requeued_job_keeps_its_place(session, tenant_id):
    first = queued(session, tenant_id, 5, T0)
    second = queued(session, tenant_id, 5, T0 + timedelta(seconds=1))
    attempt = jobs.claim_job(session, first, "w", 60)
    assert jobs.release_lease(session, first, attempt)  # a warm shutdown gives it back
    session.commit()
    assert scheduling.candidates(session, "train") == [first, second]


def test_priority_out_of_range_is_refused(session, tenant_id):
    with pytest.raises(ValueError, match="priority: must be 0-9"):
        jobs.create_job(session, tenant_id, "train", {}, {}, priority=10)


def test_the_cap_passes_over_a_tenant_at_it_and_claim_job_refuses_past_it(session, tenant_id):
    other = ensure_tenant(session, "other").id
    session.commit()
    running = queued(session, tenant_id, 5, T0)
    second = queued(session, tenant_id, 9, T0 + timedelta(seconds=1))
    theirs = queued(session, other, 1, T0 + timedelta(seconds=2))
    assert jobs.claim_job(session, running, "w", 60, max_running_per_tenant=1) == 1
    session.commit()
    assert scheduling.candidates(session, "train", max_running_per_tenant=1) == [theirs]
    assert scheduling.candidates(session, "train") == [second, theirs]  # no cap: priority alone
    assert jobs.claim_job(session, second, "w", 60, max_running_per_tenant=1) is None
    assert jobs.claim_job(session, second, "w", 60, max_running_per_tenant=2) == 1
    session.commit()
    assert scheduling.waiting_for_tenant(session, tenant_id) == []


def test_two_claims_for_one_tenant_at_once_cannot_both_pass_its_cap(engine, backend, tenant_id):
    """Two threads, two connections: each claims another job of the same tenant with a cap of 1. PostgreSQL
    serialises them on the tenant's row; SQLite has one writer at a time."""
    factory = make_session_factory(engine)
    with factory() as session:
        job_ids = [queued(session, tenant_id, 5, T0 + timedelta(seconds=i)) for i in range(2)]
    barrier = threading.Barrier(2)
    results = {}

    def claim(job_id):
        with factory() as session:
            barrier.wait()
            results[job_id] = jobs.claim_job(session, job_id, f"w-{job_id}", 60, max_running_per_tenant=1)
            session.commit()

    threads = [threading.Thread(target=claim, args=(job_id,)) for job_id in job_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results.values(), key=lambda value: value is None) == [1, None]
    with factory() as session:
        assert sorted(session.get(Job, job_id).status for job_id in job_ids) == ["queued", "running"]
