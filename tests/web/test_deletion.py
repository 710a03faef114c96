"""DELETE /v1/jobs/<id>, /v1/datasets/<id>, /v1/generators/<ref> and GET /v1/usage through the API, on PostgreSQL
and SQLite with the real Redis and a local store: what a user sees before and after a delete, and the 409s
that keep what unfinished jobs need."""

from __future__ import annotations

import io
import uuid

import pytest

from core import jobs, registry
from core.db import Dataset, Job
from core.storage import dataset_prefix, job_prefix
from tests.core.test_deletion import WEIGHTS, finished_train_job
from tests.core.test_weights import generator_arrays, safetensors_bytes
from tests.web.hostile.builders import CONFIG
from tests.web.test_datasets import make_zip, png
from tests.web.test_generators import upload

GONE = "/problems/job-deleted"


def upload_dataset(api) -> str:
    archive = make_zip({"a.png": png(), "b.png": png(color=(0, 90, 0))})
    answer = api.post("/v1/datasets", data={"file": (io.BytesIO(archive), "set.zip")},
                      content_type="multipart/form-data")
    assert answer.status_code == 201, answer.json
    return answer.json["id"]


def finished_job(api_app, api, dataset_id: str | None = None) -> uuid.UUID:
    with api_app.extensions["dcgan"]["sessions"]() as session:
        return finished_train_job(session, api_app.extensions["dcgan"]["store"], api.tenant_id,
                                  dataset_id=uuid.UUID(dataset_id) if dataset_id else None)


def test_a_deleted_job_answers_410_on_every_route_ever_after(api_app, api, redis_client):
    store = api_app.extensions["dcgan"]["store"]
    job_id = finished_job(api_app, api)
    before = api.get(f"/v1/jobs/{job_id}")
    assert before.status_code == 200 and store.list(job_prefix(api.tenant_id, job_id))
    [version] = before.json["generators"]

    deleted = api.delete(f"/v1/jobs/{job_id}")

    assert (deleted.status_code, deleted.data) == (204, b"")
    assert store.list(job_prefix(api.tenant_id, job_id)) == []
    answers = {name: (api.post(link) if name == "cancel" else api.get(link))
               for name, link in before.json["links"].items()}
    answers["delete again"] = api.delete(f"/v1/jobs/{job_id}")
    for name, answer in answers.items():
        assert answer.status_code == 410, (name, answer.status_code, answer.data[:200])
        assert answer.content_type == "application/problem+json" and answer.json["type"] == GONE, name
    assert len({answer.json["detail"] for answer in answers.values()}) == 1  # the same answer every time
    assert str(job_id) not in {job["id"] for job in api.get("/v1/jobs").json["jobs"]}
    # Its registry version stays, and so do its weights, moved out of the job.
    kept = api.get(f"/v1/generators/{version['ref']}")
    assert kept.status_code == 200 and kept.json["lineage"]["job_id"] == str(job_id)
    refused = api.post("/v1/jobs/generate", json={"generator_job": str(job_id), "seeds": [1]})
    assert refused.status_code == 422 and refused.json["errors"][0]["field"] == "generator_job"
    sampled = api.post("/v1/jobs/generate", json={"generator": version["ref"], "seeds": [1]})
    assert sampled.status_code == 202, sampled.json


def test_a_queued_job_is_409_and_unknown_ids_are_404(api, redis_client):
    queued = api.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": CONFIG}).json["id"]
    refused = api.delete(f"/v1/jobs/{queued}")
    assert refused.status_code == 409 and refused.json["type"] == "/problems/job-not-finished"
    assert "cancel it" in refused.json["detail"] and api.get(f"/v1/jobs/{queued}").status_code == 200
    for path in (f"/v1/jobs/{uuid.uuid4()}", f"/v1/datasets/{uuid.uuid4()}", "/v1/generators/nope:1",
                 f"/v1/generators/{uuid.uuid4()}", "/v1/generators/@"):
        answer = api.delete(path)
        assert (answer.status_code, answer.content_type) == (404, "application/problem+json"), path
    # Not an id at all: no DELETE route takes it (DELETE /v1/jobs/train stays the submission route's 405).
    for path in ("/v1/jobs/not-an-id", "/v1/jobs/train", "/v1/datasets/nope"):
        answer = api.delete(path)
        assert (answer.status_code, answer.content_type) == (405, "application/problem+json"), path


def test_deleting_a_dataset_in_use_is_409_and_removes_nothing(api_app, api, redis_client):
    store = api_app.extensions["dcgan"]["store"]
    dataset_id = upload_dataset(api)
    objects = store.list(dataset_prefix(api.tenant_id, dataset_id))
    job_id = api.post("/v1/jobs/train", json={"dataset": dataset_id, "config": CONFIG}).json["id"]

    refused = api.delete(f"/v1/datasets/{dataset_id}")

    assert refused.status_code == 409 and refused.json["type"] == "/problems/in-use"
    assert refused.json["job_ids"] == [job_id]
    assert store.list(dataset_prefix(api.tenant_id, dataset_id)) == objects != []
    assert api.get(f"/v1/datasets/{dataset_id}").status_code == 200
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert api.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert store.list(dataset_prefix(api.tenant_id, dataset_id)) == []
    assert api.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200  # the finished job stays
    assert api.post("/v1/jobs/train", json={"dataset": dataset_id, "config": CONFIG}).status_code == 422


def test_deleting_a_generator_a_queued_job_needs_is_409_then_it_goes_with_its_aliases(api, redis_client):
    made = upload(api, safetensors_bytes(generator_arrays(seed=5)), CONFIG, name="faces")
    assert made.status_code == 201, made.json
    assert api.put("/v1/generators/faces/aliases/champion", json={"version": 1}).status_code == 200
    job_id = api.post("/v1/jobs/generate", json={"generator": "faces@champion", "seeds": [1, 2]}).json["id"]

    refused = api.delete("/v1/generators/faces@champion")

    assert refused.status_code == 409 and refused.json["job_ids"] == [job_id]
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert api.delete("/v1/generators/faces@champion").status_code == 204
    for ref in ("faces@champion", "faces:1", made.json["id"]):
        assert api.get(f"/v1/generators/{ref}").status_code == 404, ref


def test_usage_counts_stored_bytes_by_kind_and_jobs_by_status(api_app, api, redis_client):
    empty = api.get("/v1/usage")
    assert empty.status_code == 200
    assert empty.json["stored_bytes"] == {"datasets": 0, "job_artifacts": 0, "generators": 0, "total": 0}
    dataset_id = upload_dataset(api)
    job_id = finished_job(api_app, api, dataset_id)
    with api_app.extensions["dcgan"]["sessions"]() as session:
        artifact_bytes = sum(a.size for a in jobs.list_artifacts(session, job_id))
        session.get(Job, job_id).compute_seconds, session.get(Job, job_id).device = 12.5, "cuda"
        session.commit()
    dataset_bytes = api.get(f"/v1/datasets/{dataset_id}").json["size_bytes"]

    usage = api.get("/v1/usage").json

    assert usage["stored_bytes"] == {"datasets": dataset_bytes, "job_artifacts": artifact_bytes, "generators": 0,
                                     "total": dataset_bytes + artifact_bytes}
    assert usage["jobs"]["by_status"]["succeeded"] == 1 and usage["jobs"]["deleted"] == 0
    assert usage["compute_seconds"] == {"cpu": 0.0, "cuda": 12.5, "total": 12.5}
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
    after = api.get("/v1/usage").json
    # The job's registered generator is kept (moved out of the job), so it is counted as a generator now.
    assert after["stored_bytes"]["job_artifacts"] == 0 and after["stored_bytes"]["generators"] == len(WEIGHTS)
    assert after["jobs"]["total"] == 0 and after["jobs"]["deleted"] == 1
    assert after["compute_seconds"]["cuda"] == 12.5  # the time was spent
    with api_app.extensions["dcgan"]["sessions"]() as session:
        assert [v.id for v in registry.of_job(session, api.tenant_id, job_id)]


def test_a_dataset_deleted_between_a_submissions_lookup_and_its_insert_is_422_not_500(api_app, api, redis_client,
                                                                                     backend, monkeypatch):
    """SQLite only: its lookup cannot lock the row (PostgreSQL's KEY SHARE lock makes the delete wait, tested in
    tests/core/test_deletion.py), so a delete can commit in between and the insert's foreign key fails. The
    delete is made to land exactly there, from another session."""
    if backend != "sqlite":
        pytest.skip("on PostgreSQL the delete waits for the lock the submission holds (tests/core/test_deletion.py)")
    dataset_id = upload_dataset(api)
    real_create = jobs.create_job

    def deleted_first(session, *args, **kwargs):
        with api_app.extensions["dcgan"]["sessions"]() as other:
            other.delete(other.get(Dataset, uuid.UUID(dataset_id)))
            other.commit()
        return real_create(session, *args, **kwargs)

    monkeypatch.setattr(jobs, "create_job", deleted_first)
    answer = api.post("/v1/jobs/train", json={"dataset": dataset_id, "config": CONFIG})
    assert answer.status_code == 422 and answer.json["type"] == "/problems/validation-error", answer.json
    assert answer.json["errors"] == [{"field": "dataset", "message": f"dataset {dataset_id} was deleted while this "
                                                                     "job was being submitted"}]
    with api_app.extensions["dcgan"]["sessions"]() as session:
        assert session.query(Job).count() == 0
