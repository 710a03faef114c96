"""core.deletion on PostgreSQL and SQLite, with the local store and S3 (moto over HTTP): what a delete takes from
the store and the database, what it refuses while queued or running jobs need it, and the race of a delete
against a job submission on PostgreSQL with real threads."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import select

from core import deletion, jobs, registry
from core.db import Artifact, Dataset, Generator, GeneratorAlias, Job, JobEvent, JobStatus, MetricPoint
from core.storage import (LocalStore, S3Store, checkpoint_key, dataset_prefix, generator_key, grid_key, job_prefix,
                          sample_key, uploaded_generator_key)
from core.usage import stored_bytes_by_kind

WEIGHTS = b"generator weights" * 10


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    return make_store(request, tmp_path)


def make_store(request, tmp_path):
    """The store a `store` fixture's parameter names: a LocalStore, or a bucket of its own on moto."""
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    client = S3Store("unused", endpoint_url=request.getfixturevalue("s3_endpoint"))._client
    bucket = f"deletion-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(bucket, "artifacts/", client=client)


def finished_train_job(session, store, tenant_id, status=JobStatus.SUCCEEDED, dataset_id=None) -> uuid.UUID:
    """A training job as a worker leaves it: artifacts stored and recorded, metrics, its generator registered;
    and one object under its prefix that no row lists (a checkpoint retention deleted the row of)."""
    job = jobs.create_job(session, tenant_id, "train", {"steps": 10}, {"dataset": "builtin:digits", "name": "run"},
                          dataset_id=dataset_id)
    attempt = jobs.claim_job(session, job.id, "w", 600)
    for key, data, step in ((checkpoint_key(tenant_id, job.id, 10), b"checkpoint", 10),
                            (sample_key(tenant_id, job.id, 10), b"png", 10),
                            (grid_key(tenant_id, job.id), b"grid", None),
                            (generator_key(tenant_id, job.id), WEIGHTS, 10)):
        stored = store.put_bytes(key, data)
        assert jobs.record_artifact(session, job.id, attempt, key.rsplit("/", 1)[-1], key, stored.size,
                                    stored.sha256, stored.content_type, step)
    store.put_bytes(checkpoint_key(tenant_id, job.id, 5), b"unrecorded checkpoint")
    assert jobs.record_progress(session, job.id, attempt, {"step": 10}, [(10, {"loss_g": 1.0})])
    assert jobs.finish_job(session, job.id, attempt, status)
    if status == JobStatus.SUCCEEDED:
        registry.register_job_generators(session, session.get(Job, job.id), None, None)
    session.commit()
    return job.id


def uploaded_dataset(session, store, tenant_id) -> uuid.UUID:
    dataset_id = uuid.uuid4()
    prefix = dataset_prefix(tenant_id, dataset_id)
    for name in ("a.png", "b.png"):
        store.put_bytes(prefix + name, b"image " + name.encode())
    session.add(Dataset(id=dataset_id, tenant_id=tenant_id, name="set", source="upload", storage_prefix=prefix,
                        num_images=2, size_bytes=20))
    session.commit()
    return dataset_id


def test_deleting_a_finished_job_empties_its_prefix_and_keeps_a_tombstone(session, store, tenant_id):
    job_id = finished_train_job(session, store, tenant_id)
    [version] = registry.of_job(session, tenant_id, job_id)
    registry.set_alias(session, tenant_id, version.name, "champion", version.id)
    session.commit()
    assert len(store.list(job_prefix(tenant_id, job_id))) == 5

    done = deletion.delete_job(session, store, tenant_id, job_id)

    assert done.objects_deleted == 5 and done.generators_moved == [version.id]
    assert store.list(job_prefix(tenant_id, job_id)) == []
    job = jobs.get_job(session, tenant_id, job_id)
    assert job.deleted_at is not None and job.status == JobStatus.SUCCEEDED and job.checkpoint_key is None
    for model in (Artifact, MetricPoint, JobEvent):
        assert session.scalars(select(model).where(model.job_id == job_id)).all() == []
    # The registry version outlives the run: its weights moved out of the job's prefix, its alias still on it.
    moved = registry.resolve(session, tenant_id, f"{version.name}@champion")
    assert moved.id == version.id and moved.storage_key == uploaded_generator_key(tenant_id, version.id)
    assert store.get_bytes(moved.storage_key) == WEIGHTS
    assert stored_bytes_by_kind(session, tenant_id) == {"datasets": 0, "job_artifacts": 0, "generators": len(WEIGHTS)}
    assert jobs.list_jobs(session, tenant_id) == ([], None)

    with pytest.raises(deletion.Gone):  # the same answer every time after
        deletion.delete_job(session, store, tenant_id, job_id)
    with pytest.raises(deletion.NotFound):
        deletion.delete_job(session, store, uuid.uuid4(), job_id)  # another tenant's job is no job at all


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_queued_or_running_job_is_not_deleted(session, store, tenant_id):
    queued = jobs.create_job(session, tenant_id, "train", {}, {}).id
    running = jobs.create_job(session, tenant_id, "train", {}, {}).id
    jobs.claim_job(session, running, "w", 600)
    session.commit()
    for job_id, status in ((queued, "queued"), (running, "running")):
        with pytest.raises(deletion.NotFinished, match=f"the job is {status}"):
            deletion.delete_job(session, store, tenant_id, job_id)
        assert jobs.get_job(session, tenant_id, job_id).deleted_at is None


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_job_whose_generator_a_queued_job_needs_is_not_deleted(session, store, tenant_id):
    parent = finished_train_job(session, store, tenant_id)
    [version] = registry.of_job(session, tenant_id, parent)
    child = jobs.create_job(session, tenant_id, "generate", {}, {}, parent_job_id=parent).id
    evaluator = jobs.create_job(session, tenant_id, "evaluate", {}, {}, generator_id=version.id).id
    session.commit()
    with pytest.raises(deletion.InUse) as refused:
        deletion.delete_job(session, store, tenant_id, parent)
    assert set(refused.value.job_ids) == {child, evaluator}
    assert len(store.list(job_prefix(tenant_id, parent))) == 5
    assert session.scalar(select(Generator.storage_key).where(Generator.id == version.id)) == \
        generator_key(tenant_id, parent)

    for job_id in (child, evaluator):
        jobs.request_cancel(session, job_id)
    session.commit()
    deletion.delete_job(session, store, tenant_id, parent)
    assert store.list(job_prefix(tenant_id, parent)) == []


def test_a_dataset_in_use_is_not_deleted_and_one_no_longer_used_is(session, store, tenant_id):
    dataset_id = uploaded_dataset(session, store, tenant_id)
    user = jobs.create_job(session, tenant_id, "train", {}, {"dataset": str(dataset_id)}, dataset_id=dataset_id).id
    session.commit()
    with pytest.raises(deletion.InUse) as refused:
        deletion.delete_dataset(session, store, tenant_id, dataset_id)
    assert refused.value.job_ids == [user]
    assert len(store.list(dataset_prefix(tenant_id, dataset_id))) == 2 and session.get(Dataset, dataset_id)

    jobs.claim_job(session, user, "w", 600)
    assert jobs.finish_job(session, user, 1, JobStatus.FAILED, "data_error", "bad")
    session.commit()
    assert deletion.delete_dataset(session, store, tenant_id, dataset_id).objects_deleted == 2
    assert store.list(dataset_prefix(tenant_id, dataset_id)) == []
    session.expire_all()
    assert session.get(Dataset, dataset_id) is None
    assert session.get(Job, user).dataset_id is None  # the finished job stays, without its dataset
    with pytest.raises(deletion.NotFound):
        deletion.delete_dataset(session, store, tenant_id, dataset_id)


def test_a_generator_a_queued_job_needs_is_not_deleted_and_an_unused_one_goes_with_its_aliases(session, store,
                                                                                                tenant_id):
    key = uploaded_generator_key(tenant_id, uuid.uuid4())
    stored = store.put_bytes(key, WEIGHTS)
    version = registry.register(session, tenant_id, "faces", storage_key=key, size_bytes=stored.size,
                                sha256=stored.sha256, config={})
    registry.set_alias(session, tenant_id, "faces", "champion", version.id)
    waiting = jobs.create_job(session, tenant_id, "generate", {}, {}, generator_id=version.id).id
    session.commit()
    with pytest.raises(deletion.InUse):
        deletion.delete_generator(session, store, tenant_id, "faces@champion")
    assert store.exists(key)

    jobs.request_cancel(session, waiting)
    session.commit()
    assert deletion.delete_generator(session, store, tenant_id, "faces:1").objects_deleted == 1
    assert not store.exists(key)
    assert registry.resolve(session, tenant_id, str(version.id)) is None
    assert session.scalars(select(GeneratorAlias)).all() == []
    with pytest.raises(deletion.NotFound):
        deletion.delete_generator(session, store, tenant_id, "faces@champion")


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_deleting_a_live_jobs_registry_version_keeps_the_jobs_own_generator(session, store, tenant_id):
    job_id = finished_train_job(session, store, tenant_id)
    [version] = registry.of_job(session, tenant_id, job_id)
    assert deletion.delete_generator(session, store, tenant_id, str(version.id)).objects_deleted == 0
    assert store.get_bytes(generator_key(tenant_id, job_id)) == WEIGHTS  # GET /v1/jobs/<id>/generator still works


# ----- races (PostgreSQL: row locks; SQLite has one writer at a time) -----

def test_a_delete_waits_for_a_submission_in_flight_and_then_refuses(backend, session_factory, tenant_id, tmp_path):
    if backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises writers with its database lock")
    store = LocalStore(tmp_path / "artifacts")
    with session_factory() as setup:
        dataset_id = uploaded_dataset(setup, store, tenant_id)
    outcome: list = []

    def delete() -> None:
        with session_factory() as session:
            try:
                deletion.delete_dataset(session, store, tenant_id, dataset_id)
                outcome.append("deleted")
            except deletion.InUse as exc:
                outcome.append(exc)

    with session_factory() as submitting:  # a submission: its reference looked up and held, its job inserted
        assert deletion.lock_reference(submitting, Dataset, dataset_id)
        job_id = jobs.create_job(submitting, tenant_id, "train", {}, {}, dataset_id=dataset_id).id
        deleter = threading.Thread(target=delete)
        deleter.start()
        deleter.join(1.0)
        assert deleter.is_alive() and outcome == []  # waiting on the submission's lock, not deciding without it
        submitting.commit()
    deleter.join(10)
    assert [type(o) for o in outcome] == [deletion.InUse] and outcome[0].job_ids == [job_id]
    assert len(store.list(dataset_prefix(tenant_id, dataset_id))) == 2


def test_deletes_raced_against_submissions_never_leave_a_job_without_what_it_needs(backend, session_factory,
                                                                                   tenant_id, tmp_path):
    if backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises writers with its database lock")
    store = LocalStore(tmp_path / "artifacts")
    results = {"deleted": 0, "refused": 0, "submitted": 0, "turned_away": 0}
    for _ in range(15):
        with session_factory() as setup:
            dataset_id = uploaded_dataset(setup, store, tenant_id)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def submit() -> None:
            with session_factory() as session:
                start.wait()
                if not deletion.lock_reference(session, Dataset, dataset_id):  # as web.validation looks it up
                    results["turned_away"] += 1
                    return
                time.sleep(0.005)  # the rest of a submission's checks
                jobs.create_job(session, tenant_id, "train", {}, {}, dataset_id=dataset_id)
                session.commit()
                results["submitted"] += 1

        def delete() -> None:
            with session_factory() as session:
                start.wait()
                try:
                    deletion.delete_dataset(session, store, tenant_id, dataset_id)
                    results["deleted"] += 1
                except deletion.InUse:
                    results["refused"] += 1

        def guarded(body):
            def run() -> None:
                try:
                    body()
                except BaseException as exc:  # surfaced by the assertion below
                    errors.append(exc)
            return run

        threads = [threading.Thread(target=guarded(body)) for body in (submit, delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        with session_factory() as check:
            dataset = check.get(Dataset, dataset_id)
            needing = check.scalars(select(Job).where(Job.dataset_id == dataset_id)).all()
            orphaned = check.scalars(select(Job).where(Job.dataset_id.is_(None), Job.status == "queued")).all()
            assert orphaned == []  # no queued job ever lost its dataset
            if dataset is None:
                assert needing == [] and store.list(dataset_prefix(tenant_id, dataset_id)) == []
            else:
                assert len(needing) == 1 and len(store.list(dataset_prefix(tenant_id, dataset_id))) == 2
                for job in needing:
                    jobs.request_cancel(check, job.id)
                check.commit()
    assert results["deleted"] + results["refused"] == 15 == results["submitted"] + results["turned_away"]
    assert results["deleted"] == results["turned_away"]
