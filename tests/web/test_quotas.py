"""Per-tenant quotas through the API (issue 11), on SQLite and PostgreSQL with the real Redis broker and a
LocalStore: the hourly job cap (cancelled jobs count) with its Retry-After, what a create-and-cancel loop costs
the database, the cadence floor, and the storage quota on uploads. The worker side (a running job that reaches
the quota, checkpoint retention) is tests/worker/test_quotas.py."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from core import jobs
from core.db import Job, JobStatus, utcnow
from core.gan.catalog import builtin_size
from core.gan.config import TrainConfig
from core.gan.cost import estimate_generate, estimate_train
from core.gan.seeds import GENERATE_CHUNK
from core.settings import Settings
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes
from tests.web.conftest import authorized_client, make_app
from tests.web.test_datasets import make_zip, png

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


@pytest.fixture
def app_with(engine, tmp_path, redis_client):
    """make_app with settings of the test's choosing; every app made is disposed of."""
    made = []

    def make(**overrides):
        made.append(make_app(engine, tmp_path, **overrides))
        return made[-1]

    yield make
    for app in made:
        app.extensions["dcgan"]["engine"].dispose()


def sessions(client):
    return client.application.extensions["dcgan"]["sessions"]


def age_jobs(client, minutes: float, job_ids: list[str]) -> None:
    """Pretend the jobs were created `minutes` ago."""
    with sessions(client)() as session:
        session.execute(update(Job).where(Job.id.in_([uuid.UUID(j) for j in job_ids]))
                        .values(created_at=utcnow() - timedelta(minutes=minutes)))
        session.commit()


def test_a_create_and_cancel_loop_stops_at_the_hourly_cap_with_retry_after(app_with, redis_client):
    api = authorized_client(app_with(max_jobs_per_hour=3))
    created = []
    for _ in range(3):
        response = api.post("/v1/jobs/train", json=TRAIN)
        assert response.status_code == 202, response.json
        created.append(response.json["id"])
        assert api.post(f"/v1/jobs/{created[-1]}/cancel").json["status"] == "cancelled"
    refused = api.post("/v1/jobs/train", json=TRAIN)
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert refused.json["type"] == "/problems/too-many-jobs" and "3 jobs in the last hour" in refused.json["detail"]
    assert 3000 < int(refused.headers["Retry-After"]) <= 3600  # the oldest job leaves the hour in about an hour
    assert len(api.get("/v1/jobs").json["jobs"]) == 3  # the refused request created nothing
    # Retry-After is when the oldest job in the window leaves it: 50 minutes old -> about 10 minutes.
    age_jobs(api, 50, created[:1])
    wait = int(api.post("/v1/jobs/train", json=TRAIN).headers["Retry-After"])
    assert 400 < wait <= 600
    # Another tenant has a cap of its own.
    assert authorized_client(api.application, "other").post("/v1/jobs/train", json=TRAIN).status_code == 202
    # Once it has left the hour, one more fits (and only one).
    age_jobs(api, 61, created[:1])
    assert api.post("/v1/jobs/train", json=TRAIN).status_code == 202
    assert api.post("/v1/jobs/train", json=TRAIN).status_code == 429


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_database_grows_by_a_bounded_amount_per_job_of_a_create_and_cancel_loop(app_with, redis_client):
    """The issue's attack: generate jobs of 50,000 seeds created and cancelled in a loop. The loop ends at the
    hourly cap, and each job costs the database a few kB (its row, two events, its idempotency record)."""
    cap = 150
    api = authorized_client(app_with(max_jobs_per_hour=cap + 1, max_queued_jobs=10))
    train = api.post("/v1/jobs/train", json=TRAIN).json
    with sessions(api)() as session:
        attempt = jobs.claim_job(session, uuid.UUID(train["id"]), "w", 60)
        jobs.finish_job(session, uuid.UUID(train["id"]), attempt, JobStatus.SUCCEEDED)
        session.commit()
    tables = ("jobs", "job_events", "idempotency_records")

    def database_bytes() -> int:
        with sessions(api)() as session:
            return sum(session.scalar(text(f"SELECT pg_total_relation_size('{table}')")) for table in tables)

    before = database_bytes()
    created = 0
    while True:
        response = api.post("/v1/jobs/generate", json={"generator_job": train["id"], "seeds": "0-49999"},
                            headers={"Idempotency-Key": str(uuid.uuid4())})
        if response.status_code != 202:
            break
        created += 1
        assert api.post(f"/v1/jobs/{response.json['id']}/cancel").status_code == 202
    assert response.status_code == 429 and response.json["type"] == "/problems/too-many-jobs", response.json
    assert created == cap  # the train job is the first of the hour's cap + 1
    per_job = (database_bytes() - before) / created
    print(f"\ncreate-and-cancel loop: {created} generate jobs of 50,000 seeds, the database grew "
          f"{per_job:.0f} bytes per job (tables {', '.join(tables)} with their indexes and TOAST)")
    assert per_job < 16 * 1024


def test_a_cadence_under_the_floor_is_422_naming_the_field(app_with, redis_client):
    api = authorized_client(app_with(min_checkpoint_every=10, min_sample_every=20))

    def submit(**config):
        return api.post("/v1/jobs/train", json={**TRAIN, "config": {**TRAIN["config"], **config}})

    both = submit(checkpoint_every=1, sample_every=19)
    assert both.status_code == 422 and both.mimetype == "application/problem+json"
    assert [e["field"] for e in both.json["errors"]] == ["config.checkpoint_every", "config.sample_every"]
    assert "at least 10" in both.json["errors"][0]["message"] and "at least 20" in both.json["errors"][1]["message"]
    assert [e["field"] for e in submit(checkpoint_every=9, sample_every=0).json["errors"]] == \
        ["config.checkpoint_every"]
    assert api.get("/v1/jobs").json["jobs"] == [] and redis_client.llen("train") == 0  # nothing created or sent
    for allowed in ({"checkpoint_every": 0, "sample_every": 0}, {"checkpoint_every": 10, "sample_every": 20}):
        assert submit(**allowed).status_code == 202


def upload_dataset(api, images: int, seed: int = 0):
    archive = make_zip({f"{i}.png": png(color=(seed, i, 7), size=(16, 16)) for i in range(images)})
    return api.post("/v1/datasets", data={"file": (io.BytesIO(archive), "d.zip")}, content_type="multipart/form-data")


def upload_generator(api):
    data = safetensors_bytes(generator_arrays())
    return api.post("/v1/generators", data={"file": (io.BytesIO(data), "g.safetensors"),
                                            "config": json.dumps({**TINY, "steps": 10})},
                    content_type="multipart/form-data"), len(data)


def test_uploads_past_the_storage_quota_are_403_and_store_nothing(app_with, redis_client, tmp_path):
    probe = authorized_client(app_with(), "probe")
    dataset_bytes = upload_dataset(probe, 4).json["size_bytes"]
    _, generator_bytes = upload_generator(probe)
    quota = dataset_bytes + generator_bytes + dataset_bytes // 2
    api = authorized_client(app_with(tenant_storage_bytes=quota))
    assert upload_dataset(api, 4).status_code == 201
    assert upload_generator(api)[0].status_code == 201
    store = api.application.extensions["dcgan"]["store"]
    stored = store.list(f"tenants/{api.tenant_id}/")
    refused = upload_dataset(api, 4, seed=1)
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert refused.json["type"] == "/problems/storage-quota"
    assert (refused.json["used_bytes"], refused.json["quota_bytes"]) == (dataset_bytes + generator_bytes, quota)
    assert refused.json["needed_bytes"] > quota - refused.json["used_bytes"]
    assert f"of its quota of {quota} bytes" in refused.json["detail"]
    generator, _ = upload_generator(api)
    assert generator.status_code == 403 and generator.json["type"] == "/problems/storage-quota"
    assert store.list(f"tenants/{api.tenant_id}/") == stored  # nothing more stored
    assert len(api.get("/v1/datasets").json["datasets"]) == 1 and len(api.get("/v1/generators").json["generators"]) == 1
    # Another tenant has a quota of its own.
    assert upload_dataset(authorized_client(api.application, "other"), 4).status_code == 201


def test_a_job_whose_estimated_storage_would_pass_the_quota_is_403(app_with, redis_client):
    settings = Settings()
    needed = estimate_train(TrainConfig.from_dict(TRAIN["config"]), num_images=builtin_size(TRAIN["dataset"]),
                            keep_checkpoints=settings.keep_checkpoints).storage_bytes
    api = authorized_client(app_with(tenant_storage_bytes=needed - 1))
    refused = api.post("/v1/jobs/train", json=TRAIN)
    assert refused.status_code == 403 and refused.json["type"] == "/problems/storage-quota", refused.json
    assert (refused.json["used_bytes"], refused.json["needed_bytes"], refused.json["quota_bytes"]) == \
        (0, needed, needed - 1)
    assert "estimated storage" in refused.json["detail"]
    assert api.get("/v1/jobs").json["jobs"] == [] and redis_client.llen("train") == 0  # nothing created or sent

    # Exactly the quota fits; a second such job does not while the first is expected to store as much.
    api = authorized_client(app_with(tenant_storage_bytes=needed), "fits")
    first = api.post("/v1/jobs/train", json=TRAIN)
    assert first.status_code == 202
    second = api.post("/v1/jobs/train", json=TRAIN)
    assert second.status_code == 403 and second.json["reserved_bytes"] == needed
    # What a running job stored already counts as stored, not twice.
    with sessions(api)() as session:
        job_id = uuid.UUID(first.json["id"])
        attempt = jobs.claim_job(session, job_id, "w", 60)
        jobs.record_artifact(session, job_id, attempt, "grid.png", f"tenants/x/jobs/{job_id}/grid.png", 1000,
                             "0" * 64, "image/png")
        session.commit()
    again = api.post("/v1/jobs/train", json=TRAIN).json
    assert (again["used_bytes"], again["reserved_bytes"]) == (1000, needed - 1000)
    # Once the first job has finished, its estimate no longer holds anything back: only what it stored counts.
    with sessions(api)() as session:
        jobs.finish_job(session, job_id, attempt, JobStatus.SUCCEEDED)
        session.commit()
    assert api.post("/v1/jobs/train", json=TRAIN).json["needed_bytes"] == needed  # 1000 + needed > needed
    # Generate jobs are held to their own estimate: a few seeds fit, 50,000 do not.
    assert api.post("/v1/jobs/generate", json={"generator_job": str(job_id), "seeds": "0-7"}).status_code == 202
    many = api.post("/v1/jobs/generate", json={"generator_job": str(job_id), "seeds": "0-49999"})
    assert many.status_code == 403 and many.json["type"] == "/problems/storage-quota"
    assert many.json["needed_bytes"] == estimate_generate(TrainConfig.from_dict(first.json["config"]), 50_000,
                                                          GENERATE_CHUNK).storage_bytes
