"""Jobs over the deployment's cost limits (DCGAN_MAX_JOB_MEMORY_BYTES, DCGAN_MAX_JOB_STORAGE_BYTES) are refused
at submission with 422 naming the fields that drive the estimate (core.gan.cost), on SQLite and PostgreSQL.

The memory limit is checked against a real training step: the largest batch a test limit allows is trained
(in a subprocess, bench/cost_model.py's measurement) and its peak RSS stays within its estimate, and one
image more per batch is refused."""

from __future__ import annotations

import pytest

from bench.cost_model import measure_train
from core.gan.catalog import builtin_size
from core.gan.config import TrainConfig
from core.gan.cost import estimate_train, human_bytes
from core.settings import Settings
from tests.core.test_weights import generator_arrays, safetensors_bytes
from tests.web.conftest import authorized_client, make_app
from tests.web.test_generators import CONFIG, upload
from tests.web.test_jobs import queued_messages

MEMORY_LIMIT = 1024**3  # a batch of 180 at 64x64: a real two-step measurement in seconds, not a minute
DATASET = "builtin:fashion-mnist"  # 60,000 images: no batch is cut to the dataset's size
# fp32: what the API's estimate of `auto` comes to anyway (it plans for the hungriest worker), measured as such.
BASE = {"img_size": 64, "img_channels": 1, "precision": "fp32", "steps": 1000}


def largest_batch(limit: int) -> int:
    """The largest batch_size whose estimate fits `limit`, by bisection (the estimate grows with the batch)."""
    low, high = 1, TrainConfig.__dataclass_fields__["batch_size"].metadata["check"].high
    images = builtin_size(DATASET)
    fits = lambda batch: estimate_train(TrainConfig.from_dict({**BASE, "batch_size": batch}),  # noqa: E731
                                        num_images=images, keep_checkpoints=Settings.keep_checkpoints
                                        ).memory_bytes <= limit
    assert fits(low) and not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@pytest.fixture(scope="module")
def largest():
    """The largest batch the test limit allows, its estimate, and the measured peak of two steps of it."""
    batch = largest_batch(MEMORY_LIMIT)
    config = {**BASE, "batch_size": batch}
    measured = measure_train(config, steps=2, num_images=builtin_size(DATASET))
    estimate = estimate_train(TrainConfig.from_dict(config), num_images=builtin_size(DATASET))
    print(f"batch {batch}: estimate {human_bytes(estimate.memory_bytes)}, measured peak "
          f"{human_bytes(measured['rss_peak_bytes'])} ({measured['precision']})")
    return batch, estimate.memory_bytes, measured


@pytest.fixture
def limited(engine, tmp_path, redis_client):
    app = make_app(engine, tmp_path, max_job_memory_bytes=MEMORY_LIMIT, max_job_storage_bytes=1024**3)
    yield authorized_client(app)
    app.extensions["dcgan"]["engine"].dispose()


def test_the_largest_config_the_limit_allows_trains_within_its_estimate_and_one_more_is_refused(limited, largest,
                                                                                               redis_client):
    batch, estimated, measured = largest
    assert measured["precision"] == "fp32"
    assert measured["rss_peak_bytes"] <= estimated <= MEMORY_LIMIT

    accepted = limited.post("/v1/jobs/train", json={"dataset": DATASET, "config": {**BASE, "batch_size": batch}})
    assert accepted.status_code == 202, accepted.json
    assert accepted.json["estimate"]["memory_bytes"] == estimated

    refused = limited.post("/v1/jobs/train", json={"dataset": DATASET, "config": {**BASE, "batch_size": batch + 1}})
    assert refused.status_code == 422
    assert refused.headers["Content-Type"] == "application/problem+json"
    body = refused.json
    assert body["type"] == "/problems/over-job-limits"
    fields = [error["field"] for error in body["errors"]]
    assert fields[0] == "config.batch_size" and "config.img_size" in fields
    assert "1.0 GiB" in body["detail"] and "DCGAN_MAX_JOB_MEMORY_BYTES" in body["detail"]
    assert body["estimate"]["memory_bytes"] > MEMORY_LIMIT == body["limits"]["memory_bytes"]
    assert body["estimate"]["parts"]["activations"] > 0
    assert [m["headers"]["argsrepr"] for m in queued_messages(redis_client, "train")] == [repr([accepted.json["id"]])]
    assert len(limited.get("/v1/jobs").json["jobs"]) == 1


def test_a_run_that_would_store_too_much_is_refused_naming_its_cadence(limited, redis_client):
    config = {"img_size": 32, "img_channels": 1, "steps": 10_000_000, "sample_every": 10, "checkpoint_every": 10}
    response = limited.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": config})
    assert response.status_code == 422
    fields = [error["field"] for error in response.json["errors"]]
    assert fields[:3] == ["config.steps", "config.sample_every", "config.checkpoint_every"]
    assert "storage" in response.json["detail"] and "DCGAN_MAX_JOB_STORAGE_BYTES" in response.json["detail"]
    assert "1.0 GiB" in response.json["detail"]
    assert response.json["estimate"]["storage_bytes"] > 1024**3
    assert queued_messages(redis_client, "train") == [] and limited.get("/v1/jobs").json["jobs"] == []
    # Only at the end: the same run stores little.
    fine = limited.post("/v1/jobs/train", json={"dataset": "builtin:digits",
                                                "config": {**config, "sample_every": 0, "checkpoint_every": 0}})
    assert fine.status_code == 202, fine.json
    assert 0 < fine.json["estimate"]["storage_bytes"] < 1024**3
    assert "estimate" not in fine.json["request"]


def test_a_generate_job_whose_images_would_pass_the_storage_limit_is_refused(engine, tmp_path, redis_client):
    app = make_app(engine, tmp_path, max_job_storage_bytes=1024**2)
    try:
        api = authorized_client(app)
        generator = upload(api, safetensors_bytes(generator_arrays()), CONFIG)
        assert generator.status_code == 201, generator.json
        refused = api.post("/v1/jobs/generate", json={"generator": generator.json["id"], "seeds": "0-9999"})
        assert refused.status_code == 422
        assert [error["field"] for error in refused.json["errors"]] == ["seeds"]
        assert "1.0 MiB" in refused.json["detail"]
        assert api.get("/v1/jobs").json["jobs"] == [] and queued_messages(redis_client, "generate") == []
        assert api.post("/v1/jobs/generate", json={"generator": generator.json["id"], "seeds": "0-63"}
                        ).status_code == 202
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_the_default_limits_refuse_the_widest_config_and_accept_the_defaults(api):
    widest = {"img_size": 128, "z_dim": 4096, "g_channels": 1024, "d_channels": 1024, "batch_size": 4096,
              "steps": 10}
    response = api.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": widest})
    assert response.status_code == 422
    assert {"config.batch_size", "config.g_channels", "config.d_channels"} <= \
        {error["field"] for error in response.json["errors"]}
    default = api.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": {"steps": 1000}})
    assert default.status_code == 202
    assert default.json["estimate"]["memory_bytes"] < 2 * 1024**3
