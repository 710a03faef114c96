"""Synchronous sampling end to end with real parts: the API (web.sampling, on PostgreSQL and the real Redis),
sampling workers as `celery worker -Q sample` processes (worker.sampling), a generate worker for the async
job to compare with, and S3 (moto over HTTP) holding the uploaded weights.

What a user would notice: the grid answered while they wait is the generate job's grid, byte for byte; a
repeated request with the ETag is a 304; too many seeds, a bad query or someone else's generator are refused;
loaded generators are evicted least recently used; and with the sampling worker really gone the API says so
within its limit (503, or 504 while a killed worker still looks alive) instead of hanging.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import time
import uuid
from dataclasses import replace

import pytest
from PIL import Image

from core.registry import set_alias
from core.sampling_channel import ALIVE_SECONDS
from core.gan.config import TrainConfig
from core.gan.sample import Sampler, grid_image, png_bytes
from core.storage import grid_key, uploaded_generator_key
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes, with_value
from tests.web.conftest import authorized_client
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_generators import wait_finished
from web import create_app

TIMEOUT_SECONDS = 3  # the API's wait for a sampling worker in these tests (DCGAN_SAMPLE_TIMEOUT_SECONDS)
SAMPLER_ENV = {"DCGAN_SAMPLE_CACHE_SIZE": "2"}


@pytest.fixture(scope="module")
def sampler(settings, tmp_path_factory):
    """One `celery worker -Q sample` for the module, its cache two generators deep."""
    handle = start_worker(settings, tmp_path_factory.mktemp("sampler-log") / "sampler.log", queues="sample",
                          env=SAMPLER_ENV)
    try:
        yield handle
    finally:
        stop_worker(handle)


@pytest.fixture(scope="module")
def app(settings):
    app = create_app(replace(settings, sample_timeout_seconds=TIMEOUT_SECONDS))
    yield app
    app.extensions["dcgan"]["engine"].dispose()


@pytest.fixture(scope="module")
def api(app):
    return authorized_client(app, tenant=f"sampling-{uuid.uuid4().hex[:6]}")


def upload(api, seed: int, name: str | None = None) -> dict:
    """A tiny generator (z 8, 32x32 gray) uploaded through POST /v1/generators; its JSON. Its weights are
    scaled up from DCGAN's init so that seeds give visibly different pictures (not all mid-gray)."""
    arrays = {name: (dtype, array * 40 if name.endswith("weight") else array)
              for name, (dtype, array) in generator_arrays(seed=seed).items()}
    data = safetensors_bytes(arrays)
    response = api.post("/v1/generators", content_type="multipart/form-data",
                        data={"file": (io.BytesIO(data), "g.safetensors"), "config": json.dumps(TINY),
                              "name": name or f"g{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture(scope="module")
def generator(api) -> dict:
    return upload(api, seed=11)


def test_the_grid_is_the_generate_jobs_grid_byte_for_byte(api, sampler, worker, generator, store, tmp_path):
    query = {"seeds": "0-5", "nrow": 3, "truncation": 0.7}
    answer = api.get(f"/v1/generators/{generator['id']}/images", query_string=query)
    assert answer.status_code == 200, answer.json
    assert answer.mimetype == "image/png" and answer.headers["X-Sampler-Path"] == "fp32"
    assert answer.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    image = Image.open(io.BytesIO(answer.data))
    assert (image.mode, image.size) == ("L", (2 + 3 * 34, 2 + 2 * 34))  # 3x2 tiles of 32x32, 2-pixel padding
    # The engine's own rendering of the stored weights, in this process: the same bytes.
    weights = tmp_path / "g.safetensors"
    weights.write_bytes(store.get_bytes(uploaded_generator_key(api.tenant_id, generator["id"])))
    local = Sampler.from_state(TrainConfig.from_dict(generator["config"]), weights)
    assert png_bytes(grid_image(local.images_for_seeds(range(6), 0.7), nrow=3)) == answer.data

    job = api.post("/v1/jobs/generate", json={"generator": generator["id"], **query, "seeds": "0-5"})
    assert job.status_code == 202, job.json
    finished = wait_finished(api.application.extensions["dcgan"]["sessions"], uuid.UUID(job.json["id"]))
    assert finished.status == "succeeded", finished.error_detail
    assert store.get_bytes(grid_key(api.tenant_id, job.json["id"])) == answer.data

    # The same version by name:version: the same picture, the same ETag (it names the pixels, not the URL).
    by_name = api.get(f"/v1/generators/{generator['name']}:{generator['version']}/images",
                      query_string={"seeds": "0,1,2,3,4,5", "nrow": "3", "truncation": "0.70"})
    assert by_name.data == answer.data and by_name.headers["ETag"] == answer.headers["ETag"]


def test_if_none_match_is_304_and_an_alias_is_revalidated(api, sampler, generator, session_factory):
    path = f"/v1/generators/{generator['id']}/images?seeds=0-3&nrow=2"
    first = api.get(path)
    assert first.status_code == 200 and first.headers["ETag"].startswith('"')
    again = api.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert (again.status_code, again.data, again.headers["ETag"]) == (304, b"", first.headers["ETag"])
    assert api.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert api.get(path.replace("0-3", "0-4"), headers={"If-None-Match": first.headers["ETag"]}).status_code == 200

    other = upload(api, seed=12, name=f"a{uuid.uuid4().hex[:8]}")
    with session_factory() as session:
        set_alias(session, api.tenant_id, other["name"], "champion", uuid.UUID(other["id"]))
        session.commit()
    alias_path = f"/v1/generators/{other['name']}@champion/images?seeds=0-3&nrow=2"
    by_alias = api.get(alias_path)
    assert by_alias.status_code == 200 and by_alias.headers["Cache-Control"] == "private, no-cache"
    assert by_alias.headers["ETag"] != first.headers["ETag"] and by_alias.data != first.data  # other weights
    assert api.get(alias_path, headers={"If-None-Match": by_alias.headers["ETag"]}).status_code == 304


def test_the_sampler_path_is_in_the_etag_and_the_answer_says_which_served(settings, api, sampler, generator):
    """An API whose samplers render bf16 (DCGAN_SAMPLE_PRECISION) names other pixels: another ETag. Whether bf16
    passed its load-time quality gate or fell back to fp32, X-Sampler-Path says which path rendered it."""
    path = f"/v1/generators/{generator['id']}/images?seeds=0-3&nrow=2"
    bf16_app = create_app(replace(settings, sample_timeout_seconds=30, sample_precision="bf16"))
    try:
        bf16 = bf16_app.test_client().get(path, headers={"Authorization": f"Bearer {api.api_key}"})
    finally:
        bf16_app.extensions["dcgan"]["engine"].dispose()
    fp32 = api.get(path)
    assert bf16.status_code == fp32.status_code == 200, bf16.json
    assert bf16.headers["ETag"] != fp32.headers["ETag"] and fp32.headers["X-Sampler-Path"] == "fp32"
    assert bf16.headers["X-Sampler-Path"] in ("bf16", "fp32") and bf16.headers["X-Sampler-Cache"] == "miss"


def test_one_image_is_its_tile_of_the_grid(api, sampler, generator):
    grid = api.get(f"/v1/generators/{generator['id']}/images?seeds=4-7&nrow=4&truncation=0.5")
    one = api.get(f"/v1/generators/{generator['id']}/images/6.png?truncation=0.5")
    assert one.status_code == 200 and one.mimetype == "image/png", one.data[:300]
    image = Image.open(io.BytesIO(one.data))
    assert (image.mode, image.size) == ("L", (32, 32))
    tile = Image.open(io.BytesIO(grid.data)).crop((2 + 2 * 34, 2, 2 + 2 * 34 + 32, 34))  # seed 6: third tile
    assert image.tobytes() == tile.tobytes()


def test_interpolation_is_a_gif_with_one_frame_per_step(api, sampler, generator):
    answer = api.get(f"/v1/generators/{generator['id']}/interpolate?from=3&to=9&frames=12")
    assert answer.status_code == 200 and answer.mimetype == "image/gif", answer.data[:300]
    gif = Image.open(io.BytesIO(answer.data))
    assert (gif.format, gif.n_frames, gif.size) == ("GIF", 12, (32, 32))


def test_too_many_seeds_and_bad_queries_are_422(api, generator):
    """Refused before any worker is asked: these hold with no sampling worker at all."""
    base = f"/v1/generators/{generator['id']}"
    too_many = api.get(f"{base}/images?seeds=0-64")
    assert too_many.status_code == 422 and too_many.mimetype == "application/problem+json"
    assert "POST /v1/jobs/generate" in too_many.json["detail"]
    assert [e["field"] for e in too_many.json["errors"]] == ["seeds"]
    for path, fields in ((f"{base}/images?seeds=0-3&nrow=0&truncation=2", ["nrow", "truncation"]),
                         (f"{base}/images?nrow=2", ["seeds"]), (f"{base}/images?seeds=3-1", ["seeds"]),
                         (f"{base}/interpolate?from=3&to=x&frames=65", ["to", "frames"]),
                         (f"{base}/images/3.png?truncation=0", ["truncation"]),
                         (f"{base}/images/{2**63}.png", ["seed"])):
        response = api.get(path)
        assert response.status_code == 422, (path, response.json)
        assert sorted(e["field"] for e in response.json["errors"]) == sorted(fields), (path, response.json)


def test_another_tenants_generator_is_404(app, api, generator):
    stranger = authorized_client(app, tenant=f"stranger-{uuid.uuid4().hex[:6]}")
    for ref in (generator["id"], f"{generator['name']}:{generator['version']}", f"{generator['name']}@champion",
                str(uuid.uuid4()), "not a ref", f"{generator['name']}:0"):
        response = stranger.get(f"/v1/generators/{ref}/images?seeds=0")
        assert response.status_code == 404 and response.json["type"] == "/problems/not-found", ref
    assert api.get(f"/v1/generators/{generator['name']}:999/images/1.png").status_code == 404


def test_weights_changed_in_the_store_are_refused_not_rendered(api, sampler, store):
    """The worker checks the weights it loads again: a NaN written into the stored object after upload is a
    500 naming it, not a picture of garbage."""
    row = upload(api, seed=31)
    store.put_bytes(uploaded_generator_key(api.tenant_id, row["id"]),
                    safetensors_bytes(with_value("main.0.weight", float("nan"))))
    response = api.get(f"/v1/generators/{row['id']}/images/0.png")
    assert response.status_code == 500 and response.json["type"] == "/problems/generator-unusable", response.json
    assert "NaN" in response.json["detail"] and "main.0.weight" in response.json["detail"]


def test_an_unreachable_broker_is_503(settings, api):
    """Redis away (here: a port nobody listens on): 503 with Retry-After, at once, not a hung request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        response = app.test_client().get(f"/v1/generators/{uuid.uuid4()}/images?seeds=0",
                                         headers={"Authorization": f"Bearer {api.api_key}"})
        assert response.status_code == 404  # the reference is resolved first: no broker needed for that
        generator = upload(api, seed=32)
        response = app.test_client().get(f"/v1/generators/{generator['id']}/images?seeds=0",
                                         headers={"Authorization": f"Bearer {api.api_key}"})
    finally:
        app.extensions["dcgan"]["engine"].dispose()
    assert response.status_code == 503 and response.json["type"] == "/problems/broker-unavailable", response.json
    assert int(response.headers["Retry-After"]) > 0


def test_loaded_generators_are_evicted_least_recently_used(api, sampler):
    """The worker keeps two generators (DCGAN_SAMPLE_CACHE_SIZE=2): a third evicts the one used longest ago."""
    a, b, c = (upload(api, seed=seed) for seed in (21, 22, 23))

    def cache(row: dict) -> str:
        response = api.get(f"/v1/generators/{row['id']}/images/0.png")
        assert response.status_code == 200, response.json
        return response.headers["X-Sampler-Cache"]

    assert [cache(row) for row in (a, b, a, c, a, b, b)] == ["miss", "miss", "hit", "miss", "hit", "miss", "hit"]
    assert sampler.log().count(f"loaded generator {a['id']}") == 1  # a was never evicted: used more recently


@pytest.fixture
def own_sampler(settings, tmp_path, request):
    """A sampling worker of the test's own, to stop or kill."""
    handle = start_worker(settings, tmp_path / "own-sampler.log", queues="sample")
    request.node.started_workers = [handle]
    yield handle
    stop_worker(handle)


def timed_get(api, path: str, **kwargs):
    started = time.monotonic()
    response = api.get(path, **kwargs)
    return response, time.monotonic() - started


def test_a_stopped_sampling_worker_is_503_at_once(api, generator, sampler, own_sampler):
    path = f"/v1/generators/{generator['id']}/images/1.png"
    cached = api.get(path)
    assert cached.status_code == 200
    stop_worker(sampler)  # SIGTERM, both: no sampling worker left
    stop_worker(own_sampler)
    response, seconds = timed_get(api, path + "?truncation=0.9")
    assert response.status_code == 503 and response.json["type"] == "/problems/sampler-unavailable", response.json
    assert int(response.headers["Retry-After"]) > 0 and seconds < 1
    # An ETag the client holds still needs no worker.
    assert api.get(path, headers={"If-None-Match": cached.headers["ETag"]}).status_code == 304


def test_a_killed_sampling_worker_is_504_then_503_within_the_limit(api, generator, own_sampler, tmp_path,
                                                                    settings, request):
    path = f"/v1/generators/{generator['id']}/images?seeds=0-1"
    assert api.get(path).status_code == 200
    os.killpg(own_sampler.process.pid, signal.SIGKILL)  # no goodbye: it looks alive until its beats run out
    own_sampler.process.wait()
    response, seconds = timed_get(api, path + "&truncation=0.8")
    assert response.status_code == 504 and response.json["type"] == "/problems/sampling-timeout", response.json
    assert TIMEOUT_SECONDS - 0.5 < seconds < TIMEOUT_SECONDS + 1
    time.sleep(ALIVE_SECONDS)
    response, seconds = timed_get(api, path + "&truncation=0.8")
    assert response.status_code == 503 and seconds < 1, response.json

    # The timed-out request expired with its deadline: a worker that starts later does not render it.
    late = start_worker(settings, tmp_path / "late-sampler.log", queues="sample")
    request.node.started_workers = [late]
    try:
        assert api.get(path + "&truncation=0.6").status_code == 200
        assert "Discarding revoked task: dcgan.sample" in late.log()
    finally:
        stop_worker(late)
