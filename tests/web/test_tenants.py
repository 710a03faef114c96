"""Acceptance 7: two tenants with their own keys. Every read, cancel, download and list of the other
tenant's datasets, jobs and artifacts is a 404 (the same answer as for an id that does not exist) or
absent, on SQLite and PostgreSQL; and the owner's objects are untouched afterwards."""

from __future__ import annotations

import io
import re
import uuid
import zipfile

import pytest
from PIL import Image

from core import jobs
from core.storage import generator_key, grid_key, sample_key
from tests.web.conftest import authorized_client

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _zip_of_images(count: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            png = io.BytesIO()
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(png, format="PNG")
            archive.writestr(f"{index}.png", png.getvalue())
    return buffer.getvalue()


def _record(app, session_factory, job_id: str, key: str, data: bytes, step=None) -> None:
    """What the worker does: upload under the attempt that holds the job, then record the artifact."""
    stored = app.extensions["dcgan"]["store"].put_bytes(key, data)
    with session_factory() as session:
        attempt = jobs.claim_job(session, uuid.UUID(job_id), "w", 60) or 1
        assert jobs.record_artifact(session, uuid.UUID(job_id), attempt, key.rsplit("/", 1)[-1], key,
                                    stored.size, stored.sha256, stored.content_type, step)
        session.commit()


@pytest.fixture
def tenants(api_app, session_factory):
    """Tenant A with a dataset, a finished training job with artifacts, a generate job and a queued job;
    tenant B with a job of its own. Returns (a, b, ids of A's objects)."""
    a, b = authorized_client(api_app, "tenant-a"), authorized_client(api_app, "tenant-b")
    dataset = a.post("/v1/datasets", data={"file": (io.BytesIO(_zip_of_images()), "a.zip")},
                     content_type="multipart/form-data")
    assert dataset.status_code == 201, dataset.json
    trained = a.post("/v1/jobs/train", json={**TRAIN, "dataset": dataset.json["id"]}).json["id"]
    _record(api_app, session_factory, trained, sample_key(a.tenant_id, trained, 10), PNG, step=10)
    _record(api_app, session_factory, trained, grid_key(a.tenant_id, trained), PNG)
    _record(api_app, session_factory, trained, generator_key(a.tenant_id, trained), b"weights")
    with session_factory() as session:
        jobs.finish_job(session, uuid.UUID(trained), 1, "succeeded")
        session.commit()
    generated = a.post("/v1/jobs/generate", json={"generator_job": trained, "seeds": "0-3"}).json["id"]
    queued = a.post("/v1/jobs/train", json=TRAIN).json["id"]
    artifact = a.get(f"/v1/jobs/{trained}/artifacts").json["artifacts"][0]["id"]
    assert b.post("/v1/jobs/train", json=TRAIN).status_code == 202
    return a, b, {"dataset": dataset.json["id"], "trained": trained, "generated": generated, "queued": queued,
                  "artifact": artifact}


def _reads(ids: dict[str, str], artifact_job: str | None = None) -> list[tuple[str, str]]:
    job_reads = []
    for job in (ids["trained"], ids["generated"], ids["queued"]):
        job_reads += [("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/events"),
                      ("GET", f"/v1/jobs/{job}/artifacts"), ("GET", f"/v1/jobs/{job}/grid"),
                      ("GET", f"/v1/jobs/{job}/grid?step=10"), ("GET", f"/v1/jobs/{job}/generator"),
                      ("POST", f"/v1/jobs/{job}/cancel")]
    return job_reads + [("GET", f"/v1/jobs/{ids['trained']}/artifacts/{ids['artifact']}"),
                        ("GET", f"/v1/datasets/{ids['dataset']}")]


def _shape(response) -> tuple[int, str, str, str]:
    """What a 404 tells: status, type, title and the detail with ids blanked out."""
    body = response.json
    detail = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", body["detail"])
    return response.status_code, body["type"], body["title"], detail


def test_another_tenants_objects_do_not_exist(tenants):
    a, b, ids = tenants
    missing = {name: str(uuid.uuid4()) for name in ids}
    for (method, path), (_, missing_path) in zip(_reads(ids), _reads(missing)):
        response = b.open(path, method=method)
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.mimetype == "application/problem+json"
        # No existence oracle: the same answer as for an id that was never made.
        assert _shape(response) == _shape(b.open(missing_path, method=method)), path

    listed_jobs = {job["id"] for job in b.get("/v1/jobs?limit=200").json["jobs"]}
    assert listed_jobs and not listed_jobs & {ids["trained"], ids["generated"], ids["queued"]}
    for status in ("queued", "succeeded"):
        assert not {j["id"] for j in b.get(f"/v1/jobs?status={status}").json["jobs"]} & set(ids.values())
    assert b.get("/v1/datasets").json["datasets"] == []

    # Referring to A's objects in a new job is the same 422 as referring to nothing.
    for path, field, own, never in (("/v1/jobs/train", "dataset", ids["dataset"], missing["dataset"]),
                                    ("/v1/jobs/generate", "generator_job", ids["trained"], missing["trained"])):
        answers = []
        for value in (own, never):
            body = {**TRAIN, "dataset": value} if field == "dataset" else {"generator_job": value, "seeds": "0-3"}
            response = b.post(path, json=body)
            assert response.status_code == 422 and [e["field"] for e in response.json["errors"]] == [field]
            answers.append(response.json["errors"][0]["message"].replace(value, "<id>"))
        assert answers[0] == answers[1]


def test_the_owner_still_has_everything(tenants):
    a, b, ids = tenants
    for method, path in _reads(ids):
        b.open(path, method=method)  # every attempt of B, cancels included
    assert a.get(f"/v1/jobs/{ids['queued']}").json["status"] == "queued"
    assert a.get(f"/v1/jobs/{ids['queued']}").json["cancel_requested"] is False
    assert a.get(f"/v1/jobs/{ids['trained']}").json["status"] == "succeeded"
    assert a.get(f"/v1/jobs/{ids['generated']}").json["status"] == "queued"
    assert a.get(f"/v1/jobs/{ids['trained']}/grid").get_data() == PNG
    assert a.get(f"/v1/jobs/{ids['trained']}/grid?step=10").get_data() == PNG
    assert a.get(f"/v1/jobs/{ids['trained']}/generator").get_data() == b"weights"
    assert a.get(f"/v1/jobs/{ids['trained']}/artifacts/{ids['artifact']}").status_code == 200
    assert len(a.get(f"/v1/jobs/{ids['trained']}/artifacts").json["artifacts"]) == 3
    assert a.get(f"/v1/datasets/{ids['dataset']}").json["num_images"] == 3
    assert {d["id"] for d in a.get("/v1/datasets").json["datasets"]} == {ids["dataset"]}
    assert {j["id"] for j in a.get("/v1/jobs").json["jobs"]} == {ids["trained"], ids["generated"], ids["queued"]}
    kinds = [e["kind"] for e in a.get(f"/v1/jobs/{ids['queued']}/events").json["events"]]
    assert kinds == ["queued"]  # no cancel_requested from B
