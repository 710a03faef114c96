"""The whole path on real parts, driven through the API: the Flask app (in-process) on PostgreSQL, a real
`celery worker` process, Redis as the broker, and S3 over HTTP (moto standing in for MinIO).

Upload a zip dataset -> train -> poll until succeeded -> download the grid (a 302 to a presigned URL) ->
two generate jobs with the same seeds give byte-identical grids.
"""

from __future__ import annotations

import io
import zipfile

from PIL import Image

from core.auth import create_key
from tests.worker.api_client import download, wait_until_finished
from web import create_app


def _zip_of_digits(count: int = 40) -> bytes:
    from sklearn.datasets import load_digits

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, digit in enumerate(load_digits().images[:count]):
            image = Image.fromarray((digit * 255 / 16).astype("uint8"), mode="L").resize((32, 32))
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(f"digits/{index:03d}.png", png.getvalue())
    return buffer.getvalue()


def test_upload_train_poll_download_generate(worker, settings, session_factory):
    app = create_app(settings)
    client = app.test_client()
    with session_factory() as session:
        _, key = create_key(session, "e2e")
        session.commit()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    uploaded = client.post("/v1/datasets", data={"file": (io.BytesIO(_zip_of_digits()), "digits.zip")},
                           content_type="multipart/form-data")
    assert uploaded.status_code == 201 and uploaded.json["num_images"] == 40
    submitted = client.post("/v1/jobs/train", json={"dataset": uploaded.json["id"], "config": {
        "img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16,
        "steps": 20, "sample_every": 10, "checkpoint_every": 10}})
    assert submitted.status_code == 202
    job = wait_until_finished(client, submitted.json["id"], seconds=150)
    assert job["status"] == "succeeded", job
    assert job["progress"]["step"] == 20 and job["attempt"] == 1
    grid = download(client, f"/v1/jobs/{job['id']}/grid")
    assert Image.open(io.BytesIO(grid)).size == (8 * 34 + 2, 8 * 34 + 2)

    grids = []
    for _ in range(2):
        generate = client.post("/v1/jobs/generate", json={"generator_job": job["id"], "seeds": [3, 1, 4, 1, 5]})
        assert generate.status_code == 202
        assert wait_until_finished(client, generate.json["id"])["status"] == "succeeded"
        grids.append(download(client, f"/v1/jobs/{generate.json['id']}/grid"))
    assert grids[0] == grids[1] and grids[0].startswith(b"\x89PNG")
    app.extensions["dcgan"]["engine"].dispose()
