"""A generate job's seeds at the API: kept as the ranges the client sent, and capped by
DCGAN_MAX_SEEDS_PER_JOB, counted without expanding them (SQLite and PostgreSQL, the real Redis broker)."""

import tracemalloc
import uuid

import pytest

from core import jobs
from core.db import Job, JobStatus
from core.request_models import MAX_SEED_RANGES
from core.settings import Settings
from tests.web.conftest import authorized_client, make_app

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


def succeeded_train_job(client, session_factory) -> str:
    train = client.post("/v1/jobs/train", json=TRAIN).json
    with session_factory() as session:
        attempt = jobs.claim_job(session, uuid.UUID(train["id"]), "w", 60)
        jobs.finish_job(session, uuid.UUID(train["id"]), attempt, JobStatus.SUCCEEDED)
        session.commit()
    return train["id"]


def stored_request(session_factory, job_id: str) -> dict:
    with session_factory() as session:
        return session.get(Job, uuid.UUID(job_id)).request


@pytest.mark.parametrize("seeds,stored", [("0-49999", "0-49999"), ([1, 2, 3, 7], "1-3,7"),
                                          ("0-9, 10-19,25", "0-19,25"), ([5, 3], "5,3")])
def test_seeds_are_stored_as_ranges(api, session_factory, seeds, stored):
    train = succeeded_train_job(api, session_factory)
    made = api.post("/v1/jobs/generate", json={"generator_job": train, "seeds": seeds})
    assert made.status_code == 202, made.json
    assert made.json["request"]["seeds"] == stored
    assert stored_request(session_factory, made.json["id"])["seeds"] == stored


@pytest.mark.parametrize("seeds,count", [("0-99999", 100_000), ("0-49999,50000", 50_001),
                                         (list(range(50_001)), 50_001), ("0-9999999999999", 10**13)])
def test_more_seeds_than_the_cap_is_422_naming_seeds_the_count_and_the_cap(api, session_factory, seeds, count):
    train = succeeded_train_job(api, session_factory)
    tracemalloc.start()
    try:
        refused = api.post("/v1/jobs/generate", json={"generator_job": train, "seeds": seeds})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    [error] = refused.json["errors"]
    assert error["field"] == "seeds"
    assert str(count) in error["message"] and str(Settings.max_seeds_per_job) in error["message"]
    assert "DCGAN_MAX_SEEDS_PER_JOB" in error["message"]
    if isinstance(seeds, str):  # a range is counted, never expanded: 10^13 seeds cost what 10 do
        assert peak < 4 * 1024**2, f"refusing {seeds!r} allocated {peak} bytes"


def test_more_separate_ranges_than_the_row_may_keep_is_422(api, session_factory):
    """The row keeps the ranges: scattered seeds under the seed cap would still make a big row."""
    train = succeeded_train_job(api, session_factory)
    scattered = list(range(0, 2 * (MAX_SEED_RANGES + 1), 2))  # no two consecutive: one range each
    refused = api.post("/v1/jobs/generate", json={"generator_job": train, "seeds": scattered})
    assert refused.status_code == 422, refused.json
    [error] = refused.json["errors"]
    assert error["field"] == "seeds" and f"at most {MAX_SEED_RANGES}" in error["message"]
    made = api.post("/v1/jobs/generate", json={"generator_job": train, "seeds": scattered[:-1]})
    assert made.status_code == 202, made.json
    assert len(made.json["request"]["seeds"]) < 16 * MAX_SEED_RANGES


def test_a_deployment_may_raise_the_cap(engine, tmp_path, redis_client, session_factory):
    app = make_app(engine, tmp_path, max_seeds_per_job=100_000)
    try:
        client = authorized_client(app)
        train = succeeded_train_job(client, session_factory)
        made = client.post("/v1/jobs/generate", json={"generator_job": train, "seeds": "0-99999"})
        assert made.status_code == 202 and made.json["request"]["seeds"] == "0-99999"
        refused = client.post("/v1/jobs/generate", json={"generator_job": train, "seeds": "0-100000"})
        assert refused.status_code == 422 and "100001" in refused.json["errors"][0]["message"]
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_the_openapi_document_states_the_cap(api):
    schema = api.get("/v1/openapi.json").json["components"]["schemas"]["GenerateJobRequest"]
    description = schema["properties"]["seeds"]["description"]
    assert "DCGAN_MAX_SEEDS_PER_JOB" in description and str(Settings.max_seeds_per_job) in description
    assert "images.tar" in description
