"""Streaming generate jobs on real parts: the in-process API on PostgreSQL, a real `celery worker` (solo pool,
so the task runs in the worker's own process), Redis, and the local artifact store.

A job renders, encodes and writes its images chunk by chunk (worker.generation): the worker's peak RSS
(VmHWM of its process, reset before each job) is the same for 12,000 seeds and for 40,000, and its images.tar
holds every seed asked for, in order, each the image the sampler gives for that seed alone.

The store is local here so that the peaks measure the job itself: an upload to S3 buffers a few 8 MiB parts
in boto3's threads (core.storage.s3), whose malloc arenas then keep their pages, which adds tens of MiB that
depend on the archive's size up to a bound (measured 2026-12-01: +46 MiB for a 23 MiB file, +57 MiB for 78 MiB,
+1 MiB for 160 MiB after those). The S3 path of a generate job is tested in test_tasks.py and test_generators.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core import jobs
from core.auth import create_key
from core.db import Generator
from core.gan.config import TrainConfig
from core.gan.models import build_generator
from core.gan.sample import Sampler, grid_image, image_list, png_bytes
from core.gan.seeds import GRID_MAX
from core.settings import Settings
from tests.worker.api_client import wait_until_finished
from web import create_app
from worker.generation import seed_entry_name

# A 64x64 generator narrow enough (8 channels, grayscale) that 40,000 seeds render and encode in half a minute.
CONFIG = {"img_size": 64, "img_channels": 1, "z_dim": 16, "g_channels": 8, "d_channels": 8, "steps": 1}
# Both archives (~1.5 KiB a seed) pass S3Store's 16 MiB multipart threshold, so both uploads buffer the same
# few 8 MiB parts and the comparison is of the rendering alone.
SMALL, BIG = 12_000, 40_000
# The stated bounds. The big job's peak RSS may pass the small job's by at most GROWTH_BOUND (both keep the
# same: one chunk, the grid's GRID_MAX images, the tar's open file); a job may add at most JOB_BOUND to the RSS
# the worker had before it; and no peak may pass PEAK_BOUND (an idle worker is ~0.95 GiB resident here, most
# of it torch's libraries). Before streaming, 40,000 seeds' float32 images were 625 MiB, kept twice over.
GROWTH_BOUND = 40 * 1024**2
JOB_BOUND = 256 * 1024**2
PEAK_BOUND = 1536 * 1024**2


@pytest.fixture(scope="module")
def settings(database_url, redis_url, tmp_path_factory) -> Settings:
    """The worker's settings (tests/worker/conftest.py's, but with a LocalStore the API reads too)."""
    data_dir = tmp_path_factory.mktemp("streaming-data")
    return Settings(data_dir=data_dir, database_url=database_url, redis_url=redis_url,
                    storage_url=(data_dir / "artifacts").as_uri()).with_defaults()


@pytest.fixture(scope="module")
def api_factory(settings, session_factory):
    """API clients on the worker's database and bucket, for one tenant, with the settings' overrides."""
    with session_factory() as session:
        _, key = create_key(session, "streaming")
        session.commit()
    apps = []

    def client(**overrides):
        app = create_app(dataclasses.replace(settings, **overrides))
        apps.append(app)
        test_client = app.test_client()
        test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        return test_client

    yield client
    for app in apps:
        app.extensions["dcgan"]["engine"].dispose()


@pytest.fixture(scope="module")
def api(api_factory):
    return api_factory(max_seeds_per_job=50_000)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("generator") / "narrow.safetensors"
    save_file(build_generator(TrainConfig.from_dict(CONFIG)).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def generator(api, weights) -> str:
    uploaded = api.post("/v1/generators", data={"file": (io.BytesIO(weights.read_bytes()), "narrow.safetensors"),
                                                "config": json.dumps(CONFIG)}, content_type="multipart/form-data")
    assert uploaded.status_code == 201, uploaded.json
    return uploaded.json["id"]


@pytest.fixture(scope="module")
def local_sampler(weights) -> Sampler:
    """The synchronous sampling path on the same weights, in this process."""
    return Sampler.from_state(TrainConfig.from_dict(CONFIG), weights)


def memory(pid: int, field: str) -> int:
    """VmHWM (peak RSS) or VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Start the process's peak RSS over from its current RSS (Linux >= 4.0); False where not allowed, in
    which case each peak also covers the jobs before it (the growth bound then still holds, more loosely)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def download(api, path: str) -> bytes:
    """An artifact's bytes, checked to come as a download that no browser renders or sniffs."""
    response = api.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return response.data


def run_job(api, generator: str, seeds: str, pid: int) -> tuple[dict, int, int]:
    """The finished job, the worker's RSS before it and its peak RSS while it ran."""
    reset_peak_rss(pid)
    before = memory(pid, "VmRSS")
    made = api.post("/v1/jobs/generate", json={"generator": generator, "seeds": seeds, "nrow": 32})
    assert made.status_code == 202, made.json
    job = wait_until_finished(api, made.json["id"], seconds=300)
    assert job["status"] == "succeeded", job
    return job, before, memory(pid, "VmHWM")


def test_100000_seeds_at_the_default_cap_is_refused_naming_seeds(api_factory, generator):
    client = api_factory()  # DCGAN_MAX_SEEDS_PER_JOB at its default
    refused = client.post("/v1/jobs/generate", json={"generator": generator, "seeds": "0-99999"})
    assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    [error] = refused.json["errors"]
    assert error["field"] == "seeds"
    assert "100000" in error["message"] and str(Settings.max_seeds_per_job) in error["message"]


def test_peak_memory_does_not_grow_with_the_seed_count(worker, api, generator, local_sampler):
    pid = worker.process.pid  # --pool solo: the task runs in this process
    resettable = reset_peak_rss(pid)
    small, small_before, small_peak = run_job(api, generator, f"0-{SMALL - 1}", pid)
    big, big_before, big_peak = run_job(api, generator, f"0-{BIG - 1}", pid)
    mib = 2**20
    print(f"\nworker peak RSS (VmHWM, {'reset before each job' if resettable else 'not resettable: cumulative'}): "
          f"{SMALL} seeds {small_peak / mib:.1f} MiB (RSS before {small_before / mib:.1f}), {BIG} seeds "
          f"{big_peak / mib:.1f} MiB (RSS before {big_before / mib:.1f}); growth {(big_peak - small_peak) / mib:+.1f} "
          f"MiB. Bounds: growth {GROWTH_BOUND / mib:.0f}, per job {JOB_BOUND / mib:.0f}, "
          f"peak {PEAK_BOUND / mib:.0f} MiB")
    assert big_peak - small_peak < GROWTH_BOUND
    assert small_peak - small_before < JOB_BOUND and big_peak - big_before < JOB_BOUND
    assert max(small_peak, big_peak) < PEAK_BOUND

    # Every seed asked for, in order, one PNG each; a seed's image is the one the sampler gives it alone.
    archive = download(api, big["links"]["images"])
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [seed_entry_name(seed) for seed in range(BIG)]
        last = tar.extractfile(members[-1]).read()
    assert last == png_bytes(image_list(local_sampler.images_for_seeds([BIG - 1]))[0])
    assert Image.open(io.BytesIO(last)).size == (64, 64)

    # The grid shows the first GRID_MAX seeds: the same for both jobs, and the sampler's own grid of them.
    grids = [download(api, job["links"]["grid"]) for job in (small, big)]
    assert grids[0] == grids[1] == png_bytes(grid_image(local_sampler.images_for_seeds(range(GRID_MAX)), nrow=32))
    listed = api.get(f"/v1/jobs/{big['id']}/artifacts").json["artifacts"]
    assert sorted(a["name"] for a in listed) == ["grid.png", "images.tar"]
    [tar_row] = [a for a in listed if a["name"] == "images.tar"]
    assert tar_row["content_type"] == "application/x-tar" and tar_row["size"] == len(archive)
    disposition = api.get(big["links"]["images"]).headers["Content-Disposition"]
    assert disposition == 'attachment; filename="images.tar"'  # saved, never shown


def test_a_small_job_keeps_its_grid_alone(worker, api, generator, local_sampler):
    made = api.post("/v1/jobs/generate", json={"generator": generator, "seeds": [1, 2, 3, 7], "nrow": 2})
    assert made.json["request"]["seeds"] == "1-3,7"
    job = wait_until_finished(api, made.json["id"])
    assert job["status"] == "succeeded", job
    assert [a["name"] for a in api.get(f"/v1/jobs/{job['id']}/artifacts").json["artifacts"]] == ["grid.png"]
    assert download(api, job["links"]["grid"]) == png_bytes(grid_image(local_sampler.images_for_seeds([1, 2, 3, 7]),
                                                                       nrow=2))
    assert api.get(job["links"]["images"]).status_code == 404


def test_an_old_row_holding_a_seed_list_still_runs(worker, api, generator, session_factory, celery_client,
                                                   local_sampler):
    with session_factory() as session:  # a job as rows were written before seeds were kept as ranges
        version = session.get(Generator, uuid.UUID(generator))
        request = {"generator": generator, "generator_id": generator, "seeds": [9, 4, 4, 5], "truncation": 1.0,
                   "nrow": 2}
        old = jobs.create_job(session, version.tenant_id, "generate", version.config, request,
                              generator_id=version.id)
        session.commit()
        old_id = str(old.id)
    celery_client.send_task("dcgan.generate", args=[old_id], queue="generate")
    job = wait_until_finished(api, old_id)
    assert job["status"] == "succeeded", job
    assert job["request"]["seeds"] == [9, 4, 4, 5]  # the row is read, never rewritten
    assert download(api, job["links"]["grid"]) == png_bytes(grid_image(local_sampler.images_for_seeds([9, 4, 4, 5]),
                                                                       nrow=2))


def test_cancelling_mid_stream_stops_the_job_without_artifacts(worker, api, generator, session_factory):
    made = api.post("/v1/jobs/generate", json={"generator": generator, "seeds": "0-49999"}).json
    deadline = time.monotonic() + 120
    while api.get(f"/v1/jobs/{made['id']}").json["status"] == "queued":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    cancel = api.post(f"/v1/jobs/{made['id']}/cancel")
    assert cancel.status_code == 202, cancel.json
    job = wait_until_finished(api, made["id"])
    assert job["status"] == "cancelled", job
    assert api.get(f"/v1/jobs/{made['id']}/artifacts").json["artifacts"] == []
