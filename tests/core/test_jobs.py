"""Job state transitions on PostgreSQL and SQLite: every legal move, the refused ones, and fencing."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from core import jobs
from core.db import Job, Tenant
from core.jobs import BadCursor, IllegalTransition, JobNotFound

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
LEASE = 60


def new_job(session, tenant_id, type="train", now=T0, **kwargs) -> uuid.UUID:
    job = jobs.create_job(session, tenant_id, type, {"steps": 10}, {"dataset": "builtin:digits"}, now=now,
                          **kwargs)
    session.commit()
    return job.id


def claimed_job(session, tenant_id, worker="w1", **kwargs) -> tuple[uuid.UUID, int]:
    job_id = new_job(session, tenant_id, **kwargs)
    attempt = jobs.claim_job(session, job_id, worker, LEASE, now=T0)
    session.commit()
    return job_id, attempt


def kinds(session, job_id) -> list[str]:
    return [event.kind for event in jobs.list_events(session, job_id)]


def reload(session, job_id) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_create_job_is_queued(session, tenant_id):
    job_id = new_job(session, tenant_id, max_attempts=5)
    job = reload(session, job_id)
    assert (job.status, job.type, job.attempt, job.max_attempts, job.cancel_requested) == (
        "queued", "train", 0, 5, False)
    assert job.config == {"steps": 10} and job.request == {"dataset": "builtin:digits"}
    assert job.created_at == T0 and kinds(session, job_id) == ["queued"]


def test_create_job_refuses_an_unknown_type(session, tenant_id):
    with pytest.raises(ValueError, match="type"):
        jobs.create_job(session, tenant_id, "finetune", {}, {})


def test_claim_starts_the_job_and_returns_the_fencing_token(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    job = reload(session, job_id)
    assert attempt == 1 == job.attempt
    assert (job.status, job.worker, job.started_at, job.heartbeat_at) == ("running", "w1", T0, T0)
    assert job.lease_expires_at == T0 + timedelta(seconds=LEASE)
    assert kinds(session, job_id) == ["queued", "claimed"]


def test_second_claim_loses_while_the_lease_is_live(session, tenant_id):
    job_id, _ = claimed_job(session, tenant_id)
    assert jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(seconds=LEASE - 1)) is None
    job = reload(session, job_id)
    assert (job.attempt, job.worker) == (1, "w1")


def test_heartbeat_extends_the_lease_of_the_holder_only(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    later = T0 + timedelta(seconds=45)
    assert jobs.heartbeat(session, job_id, attempt, LEASE, now=later)
    assert not jobs.heartbeat(session, job_id, attempt + 1, LEASE, now=later + timedelta(seconds=5))
    session.commit()
    job = reload(session, job_id)
    assert (job.heartbeat_at, job.lease_expires_at) == (later, later + timedelta(seconds=LEASE))


def test_successful_run_records_progress_checkpoint_and_artifacts(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    assert jobs.record_progress(session, job_id, attempt, {"step": 5, "loss_g": 1.5})
    assert jobs.set_checkpoint(session, job_id, attempt, f"jobs/{job_id}/checkpoints/step-0000005.safetensors", 5)
    assert jobs.record_artifact(session, job_id, attempt, "grid.png", f"jobs/{job_id}/grid.png", 1234, "ab" * 32,
                                "image/png", step=10)
    assert jobs.finish_job(session, job_id, attempt, "succeeded", now=T0 + timedelta(minutes=5))
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.progress, job.checkpoint_step) == ("succeeded", {"step": 5, "loss_g": 1.5}, 5)
    assert (job.finished_at, job.lease_expires_at) == (T0 + timedelta(minutes=5), None)
    [artifact] = jobs.list_artifacts(session, job_id)
    assert (artifact.name, artifact.size, artifact.step, artifact.attempt) == ("grid.png", 1234, 10, 1)
    assert kinds(session, job_id) == ["queued", "claimed", "succeeded"]


@pytest.mark.parametrize("status,error_type", [("failed", "bad_dataset"), ("cancelled", None)])
def test_finish_as_failed_or_cancelled(session, tenant_id, status, error_type):
    job_id, attempt = claimed_job(session, tenant_id)
    assert jobs.finish_job(session, job_id, attempt, status, error_type=error_type, error_detail="why")
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.error_type, job.error_detail) == (status, error_type, "why")
    assert kinds(session, job_id)[-1] == status


@pytest.mark.parametrize("status", ["queued", "running", "paused"])
def test_finish_only_to_a_final_status(session, tenant_id, status):
    job_id, attempt = claimed_job(session, tenant_id)
    with pytest.raises(IllegalTransition):
        jobs.finish_job(session, job_id, attempt, status)


def test_finish_refuses_jobs_that_are_not_running(session, tenant_id):
    queued = new_job(session, tenant_id)
    assert not jobs.finish_job(session, queued, 0, "succeeded")
    job_id, attempt = claimed_job(session, tenant_id)
    assert jobs.finish_job(session, job_id, attempt, "succeeded")
    assert not jobs.finish_job(session, job_id, attempt, "failed")
    session.commit()
    assert reload(session, queued).status == "queued" and reload(session, job_id).status == "succeeded"


def test_reclaim_after_lease_expiry_fences_the_old_holder(session, tenant_id):
    job_id, old = claimed_job(session, tenant_id, worker="w1")
    expired = T0 + timedelta(seconds=LEASE + 1)
    new = jobs.claim_job(session, job_id, "w2", LEASE, now=expired)
    assert jobs.record_progress(session, job_id, new, {"step": 1})
    session.commit()
    assert new == old + 1

    stale_writes = [
        jobs.heartbeat(session, job_id, old, LEASE),
        jobs.record_progress(session, job_id, old, {"step": 99}),
        jobs.set_checkpoint(session, job_id, old, "jobs/x/checkpoints/step-99", 99),
        jobs.record_artifact(session, job_id, old, "grid.png", f"jobs/{job_id}/grid.png", 1, "0" * 64, "image/png"),
        jobs.finish_job(session, job_id, old, "succeeded"),
        jobs.release_lease(session, job_id, old),
    ]
    session.commit()
    assert stale_writes == [False] * 6
    job = reload(session, job_id)
    assert (job.status, job.worker, job.attempt, job.progress, job.checkpoint_key) == (
        "running", "w2", new, {"step": 1}, None)
    assert jobs.list_artifacts(session, job_id) == []
    assert kinds(session, job_id) == ["queued", "claimed", "lease_expired", "claimed"]
    assert jobs.finish_job(session, job_id, new, "succeeded")


def test_reclaim_resumes_from_the_latest_checkpoint(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    jobs.set_checkpoint(session, job_id, attempt, "jobs/x/checkpoints/step-0000100.safetensors", 100)
    session.commit()
    assert jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(hours=1)) == 2
    session.commit()
    event = jobs.list_events(session, job_id)[-1]
    assert (event.kind, event.attempt, event.detail) == ("resumed", 2, {"worker": "w2", "resumed_from_step": 100})


def test_record_artifact_is_idempotent_on_key(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    key = f"jobs/{job_id}/samples/step-0000010.png"
    assert jobs.record_artifact(session, job_id, attempt, "sample", key, 10, "a" * 64, "image/png", step=10)
    assert jobs.record_artifact(session, job_id, attempt, "sample", key, 11, "b" * 64, "image/png", step=10)
    session.commit()
    [artifact] = jobs.list_artifacts(session, job_id)
    assert (artifact.size, artifact.sha256) == (11, "b" * 64)

    other_id, other_attempt = claimed_job(session, tenant_id)
    with pytest.raises(ValueError, match="belongs to job"):
        jobs.record_artifact(session, other_id, other_attempt, "sample", key, 1, "c" * 64, "image/png")


def test_cancel_a_queued_job_takes_effect_at_once(session, tenant_id):
    job_id = new_job(session, tenant_id)
    job = jobs.request_cancel(session, job_id)
    session.commit()
    assert job.status == "cancelled" and job.finished_at is not None
    assert jobs.claim_job(session, job_id, "w1", LEASE) is None
    assert kinds(session, job_id) == ["queued", "cancelled"]


def test_cancel_a_running_job_asks_its_worker_to_stop(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    assert not jobs.should_stop(session, job_id, attempt)
    job = jobs.request_cancel(session, job_id)
    jobs.request_cancel(session, job_id)  # asking again is fine and not logged twice
    session.commit()
    assert (job.status, job.cancel_requested) == ("running", True)
    assert jobs.should_stop(session, job_id, attempt)
    assert jobs.finish_job(session, job_id, attempt, "cancelled")
    session.commit()
    assert kinds(session, job_id) == ["queued", "claimed", "cancel_requested", "cancelled"]


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_job_is_illegal(session, tenant_id, final):
    job_id, attempt = claimed_job(session, tenant_id)
    jobs.finish_job(session, job_id, attempt, final)
    session.commit()
    with pytest.raises(IllegalTransition, match="already finished"):
        jobs.request_cancel(session, job_id)
    assert reload(session, job_id).status == final


def test_cancel_an_unknown_job(session, tenant_id):
    with pytest.raises(JobNotFound):
        jobs.request_cancel(session, uuid.uuid4())


def test_should_stop_when_fenced_out(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(hours=1))
    session.commit()
    assert jobs.should_stop(session, job_id, attempt) and not jobs.should_stop(session, job_id, attempt + 1)


def test_requeue_expired_retries_then_fails_with_worker_lost(session, tenant_id):
    job_id, _ = claimed_job(session, tenant_id, max_attempts=2)
    live_id, _ = claimed_job(session, tenant_id)
    jobs.heartbeat(session, live_id, 1, LEASE, now=T0 + timedelta(seconds=50))
    session.commit()

    assert jobs.requeue_expired(session, now=T0 + timedelta(seconds=90)) == [job_id]
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.worker, job.lease_expires_at, job.attempt) == ("queued", None, None, 1)
    assert reload(session, live_id).status == "running"

    assert jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(seconds=100)) == 2
    session.commit()
    assert jobs.requeue_expired(session, now=T0 + timedelta(seconds=200)) == [live_id]
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.error_type, job.finished_at) == ("failed", "worker_lost", T0 + timedelta(seconds=200))
    assert kinds(session, job_id) == ["queued", "claimed", "lease_expired", "requeued", "claimed",
                                      "lease_expired", "failed"]
    assert jobs.claim_job(session, job_id, "w3", LEASE) is None


def test_spent_attempts_cannot_be_reclaimed(session, tenant_id):
    job_id, _ = claimed_job(session, tenant_id, max_attempts=1)
    assert jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(hours=1)) is None


def test_requeue_expired_cancels_a_job_whose_cancel_was_requested(session, tenant_id):
    job_id, _ = claimed_job(session, tenant_id)
    jobs.request_cancel(session, job_id)
    session.commit()
    assert jobs.requeue_expired(session, now=T0 + timedelta(hours=1)) == []
    session.commit()
    assert reload(session, job_id).status == "cancelled"
    assert jobs.claim_job(session, job_id, "w2", LEASE, now=T0 + timedelta(hours=1)) is None


def test_release_lease_requeues_without_spending_an_attempt(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id, max_attempts=1)
    assert jobs.release_lease(session, job_id, attempt)
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.worker, job.lease_expires_at, job.max_attempts) == ("queued", None, None, 2)
    assert jobs.claim_job(session, job_id, "w2", LEASE) == 2
    assert not jobs.release_lease(session, job_id, attempt)


def test_release_lease_of_a_cancel_requested_job_cancels_it(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    jobs.request_cancel(session, job_id)
    assert jobs.release_lease(session, job_id, attempt)
    session.commit()
    job = reload(session, job_id)
    assert (job.status, job.finished_at is not None) == ("cancelled", True)


def test_concurrent_claims_have_exactly_one_winner(session_factory, tenant_id):
    for _ in range(20):
        with session_factory() as session:
            job_id = new_job(session, tenant_id)
        barrier, results = threading.Barrier(2), []

        def claim(worker: str) -> None:
            with session_factory() as own_session:
                barrier.wait()
                results.append(jobs.claim_job(own_session, job_id, worker, LEASE))
                own_session.commit()

        threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results, key=lambda r: r is None) == [1, None]
    with session_factory() as session:
        assert {len(jobs.list_events(session, job.id)) for job in jobs.list_jobs(session, tenant_id)[0]} == {2}


def _job_ids(page) -> list[uuid.UUID]:
    return [job.id for job in page]


@pytest.fixture
def seven_jobs(session, tenant_id) -> list[uuid.UUID]:
    """Newest first. Three share a created_at, so the id breaks the tie."""
    times = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(seconds=1),
             T0 + timedelta(seconds=2), T0 + timedelta(seconds=3), T0 + timedelta(seconds=4)]
    types = ["train", "generate", "train", "generate", "train", "train", "generate"]
    created = [(now, new_job(session, tenant_id, type=type_, now=now)) for now, type_ in zip(times, types)]
    return [job_id for _, job_id in sorted(created, key=lambda item: (item[0], item[1]), reverse=True)]


def test_list_jobs_newest_first_with_filters(session, tenant_id, seven_jobs):
    page, cursor = jobs.list_jobs(session, tenant_id)
    assert _job_ids(page) == seven_jobs and cursor is None
    generate, _ = jobs.list_jobs(session, tenant_id, type="generate")
    assert [job.type for job in generate] == ["generate"] * 3
    assert _job_ids(generate) == [job_id for job_id in seven_jobs if job_id in set(_job_ids(generate))]
    jobs.claim_job(session, seven_jobs[2], "w1", LEASE)
    session.commit()
    running, _ = jobs.list_jobs(session, tenant_id, status="running")
    assert _job_ids(running) == [seven_jobs[2]]
    assert jobs.list_jobs(session, tenant_id, status="succeeded") == ([], None)


def test_list_jobs_cursor_pages_have_no_gaps_or_duplicates(session, tenant_id, seven_jobs):
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = jobs.list_jobs(session, tenant_id, limit=3, cursor=cursor)
        seen += _job_ids(page)
        pages += 1
        if cursor is None:
            break
    assert pages == 3 and seen == seven_jobs


# A fixed uuid keeps the test ids the same in every pytest process (pytest-xdist compares them).
@pytest.mark.parametrize("cursor", ["", "not base64!", "aGVsbG8", jobs.encode_cursor(T0, uuid.UUID(int=7))[:-3],
                                    jobs.encode_cursor(T0.replace(tzinfo=None), uuid.UUID(int=7))],
                         ids=["empty", "not-base64", "no-separator", "truncated", "naive-time"])
def test_a_bad_cursor_is_refused(session, tenant_id, cursor):
    with pytest.raises(BadCursor) as error:
        jobs.list_jobs(session, tenant_id, cursor=cursor)
    assert isinstance(error.value, ValueError)


def test_jobs_are_scoped_to_their_tenant(session, tenant_id):
    other = Tenant(id=uuid.uuid4(), name="other")
    session.add(other)
    session.commit()
    mine, theirs = new_job(session, tenant_id), new_job(session, other.id)
    assert jobs.get_job(session, tenant_id, mine).id == mine
    assert jobs.get_job(session, tenant_id, theirs) is None
    assert _job_ids(jobs.list_jobs(session, other.id)[0]) == [theirs]


# ----- the metrics history and the event stream (issue 9) -----

def point(step: int, loss: float = 1.0) -> tuple[int, dict]:
    return step, {"loss_d": loss, "loss_g": loss, "d_real": 0.5, "d_fake": 0.5, "images_per_second": 10.0}


def steps_and_losses(session, job_id) -> list[tuple[int, float]]:
    session.expire_all()
    return [(row.step, row.values["loss_d"]) for row in jobs.metric_points(session, job_id)]


def test_progress_keeps_each_logged_step_once_and_a_resume_rewrites_the_steps_it_repeats(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    assert jobs.record_progress(session, job_id, attempt, {"step": 20}, [point(10), point(20)])
    assert jobs.record_progress(session, job_id, attempt, {"step": 30}, [point(30)])
    session.commit()
    assert steps_and_losses(session, job_id) == [(10, 1.0), (20, 1.0), (30, 1.0)]
    # The attempt resumes from a checkpoint at step 20: step 30 belonged to the lost run, 20 is logged again.
    assert jobs.discard_metrics_after(session, job_id, attempt, 20)
    assert jobs.record_progress(session, job_id, attempt, {"step": 20}, [point(20, 2.0)])
    session.commit()
    assert steps_and_losses(session, job_id) == [(10, 1.0), (20, 2.0)]


def test_a_fenced_out_attempt_writes_no_metrics_and_no_events(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    before = [e.id for e in jobs.events_after(session, job_id, 0)]
    assert not jobs.record_progress(session, job_id, attempt + 1, {"step": 10}, [point(10)])
    assert not jobs.discard_metrics_after(session, job_id, attempt + 1, 0)
    assert not jobs.set_checkpoint(session, job_id, attempt + 1, "k", 10)
    session.commit()
    assert steps_and_losses(session, job_id) == []
    assert [e.id for e in jobs.events_after(session, job_id, 0)] == before


def test_the_stream_has_every_event_in_order_and_the_timeline_only_changes_and_notes(session, tenant_id):
    job_id, attempt = claimed_job(session, tenant_id)
    jobs.record_progress(session, job_id, attempt, {"step": 10}, [point(10)])
    jobs.record_event(session, job_id, attempt, "sample", {"step": 10})
    jobs.set_checkpoint(session, job_id, attempt, "jobs/x/checkpoints/step-0000010.pt", 10)
    jobs.record_event(session, job_id, attempt, "log", {"message": "hello"})
    jobs.finish_job(session, job_id, attempt, "failed", "data_error", "no images", now=T0)
    session.commit()
    stream = jobs.events_after(session, job_id, 0)
    assert [e.kind for e in stream] == ["queued", "claimed", "progress", "sample", "checkpoint", "log", "failed",
                                        "completed"]
    assert [e.id for e in stream] == sorted(e.id for e in stream)
    assert stream[-1].detail == {"status": "failed"}
    assert kinds(session, job_id) == ["queued", "claimed", "log", "failed"]
    middle = stream[3].id
    assert [e.kind for e in jobs.events_after(session, job_id, middle)] == ["checkpoint", "log", "failed",
                                                                          "completed"]
    assert [e.kind for e in jobs.events_after(session, job_id, 0, limit=2)] == ["queued", "claimed"]


def test_every_way_of_finishing_ends_the_stream_with_completed(session, tenant_id):
    queued = new_job(session, tenant_id)
    jobs.request_cancel(session, queued, now=T0)
    lost, attempt = claimed_job(session, tenant_id, max_attempts=1)
    jobs.requeue_expired(session, now=T0 + timedelta(seconds=LEASE + 1))
    session.commit()
    for job_id, status in ((queued, "cancelled"), (lost, "failed")):
        last = jobs.events_after(session, job_id, 0)[-1]
        assert (last.kind, last.detail) == ("completed", {"status": status})
