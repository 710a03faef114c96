"""Downloads: streamed from a LocalStore, 302 to a presigned URL on S3 (moto over HTTP)."""

import hashlib
import urllib.request
import uuid

import pytest

from core import jobs
from core.settings import Settings
from core.storage import generator_key, grid_key, sample_key
from web import create_app
from tests.web.conftest import TEST_REDIS_URL, authorized_client

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def _record(app, session_factory, job_id: str, key: str, data: bytes, step=None) -> None:
    """What the worker does: upload, then record under the attempt that holds the job."""
    store = app.extensions["dcgan"]["store"]
    stored = store.put_bytes(key, data)
    with session_factory() as session:
        attempt = jobs.claim_job(session, uuid.UUID(job_id), "w", 60) or 1
        assert jobs.record_artifact(session, uuid.UUID(job_id), attempt, key.rsplit("/", 1)[-1], key, stored.size,
                                    stored.sha256, stored.content_type, step)
        session.commit()


def tenant_of(app, job_id: str) -> uuid.UUID:
    from core.db import Job

    with app.extensions["dcgan"]["sessions"]() as session:
        return session.get(Job, uuid.UUID(job_id)).tenant_id


@pytest.fixture(params=["local", "s3"])
def app(request, engine, tmp_path, redis_client):
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path, database_url=url, redis_url=TEST_REDIS_URL)
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"b{uuid.uuid4().hex[:12]}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        settings = Settings(data_dir=tmp_path, database_url=url, redis_url=TEST_REDIS_URL,
                            storage_url=f"s3://{bucket}/artifacts", s3_endpoint_url=endpoint)
    app = create_app(settings.with_defaults())
    app.store_kind = request.param
    yield app
    app.extensions["dcgan"]["engine"].dispose()


def _fetch(app, response) -> bytes:
    if app.store_kind == "s3":
        assert response.status_code == 302
        with urllib.request.urlopen(response.headers["Location"]) as presigned:
            return presigned.read()
    assert response.status_code == 200
    return response.get_data()


def test_grid_generator_and_listing(app, session_factory):
    client = authorized_client(app)
    job_id = client.post("/v1/jobs/train", json=TRAIN).json["id"]
    assert client.get(f"/v1/jobs/{job_id}/grid").status_code == 404  # nothing recorded yet
    _record(app, session_factory, job_id, sample_key(tenant_of(app, job_id), job_id, 10), PNG[:-1], step=10)
    _record(app, session_factory, job_id, grid_key(tenant_of(app, job_id), job_id), PNG)
    _record(app, session_factory, job_id, generator_key(tenant_of(app, job_id), job_id), b"weights")
    assert _fetch(app, client.get(f"/v1/jobs/{job_id}/grid")) == PNG
    assert _fetch(app, client.get(f"/v1/jobs/{job_id}/grid?step=10")) == PNG[:-1]
    assert _fetch(app, client.get(f"/v1/jobs/{job_id}/generator")) == b"weights"
    listing = client.get(f"/v1/jobs/{job_id}/artifacts").json["artifacts"]
    by_name = {a["name"]: a for a in listing}
    assert by_name["grid.png"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert by_name["grid.png"]["content_type"] == "image/png" and by_name["step-0000010.png"]["step"] == 10
    assert _fetch(app, client.get(by_name["generator.safetensors"]["download_url"])) == b"weights"


def test_missing_things_are_404(app):
    client = authorized_client(app)
    job_id = client.post("/v1/jobs/train", json=TRAIN).json["id"]
    for path in (f"/v1/jobs/{job_id}/grid?step=5", f"/v1/jobs/{job_id}/generator",
                 f"/v1/jobs/{job_id}/artifacts/{uuid.uuid4()}", f"/v1/jobs/{job_id}/artifacts/nope",
                 f"/v1/jobs/{uuid.uuid4()}/artifacts"):
        response = client.get(path)
        assert response.status_code == 404 and response.mimetype == "application/problem+json", path
    assert client.get(f"/v1/jobs/{job_id}/grid?step=-1").status_code == 422


def _headers(app, response) -> dict[str, str]:
    """The headers the client finally gets: the API's, or the store's behind the presigned URL."""
    if app.store_kind == "s3":
        assert response.status_code == 302
        with urllib.request.urlopen(response.headers["Location"]) as presigned:
            return {name.lower(): value for name, value in presigned.headers.items()}
    assert response.status_code == 200
    return {name.lower(): value for name, value in response.headers.items()}


def test_downloads_say_what_they_are_and_only_images_show_inline(app, session_factory):
    client = authorized_client(app)
    job_id = client.post("/v1/jobs/train", json=TRAIN).json["id"]
    tenant = tenant_of(app, job_id)
    _record(app, session_factory, job_id, grid_key(tenant, job_id), PNG)
    # Bytes a browser would sniff as HTML if it were let to guess.
    _record(app, session_factory, job_id, generator_key(tenant, job_id), b"<html><script>alert(1)</script>")
    grid = _headers(app, client.get(f"/v1/jobs/{job_id}/grid"))
    weights = _headers(app, client.get(f"/v1/jobs/{job_id}/generator"))
    assert grid["content-type"] == "image/png" and grid["content-disposition"] == 'inline; filename="grid.png"'
    assert weights["content-disposition"] == 'attachment; filename="generator.safetensors"'
    assert weights["content-type"] == "application/octet-stream"
    if app.store_kind == "local":  # the store behind a presigned URL sets its own other headers
        assert grid["x-content-type-options"] == weights["x-content-type-options"] == "nosniff"
