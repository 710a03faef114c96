"""The embedded platform end to end, as a user runs it (the `platform` fixture in tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Api

pytestmark = pytest.mark.timeout(300)


def _upload_zip(api: Api) -> str:
    """POST /v1/datasets with a zip of 64 digits, as `curl -F file=@digits.zip` would."""
    import io
    import zipfile

    import requests
    from PIL import Image
    from sklearn.datasets import load_digits

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, digit in enumerate(load_digits().images[:64]):
            png = io.BytesIO()
            Image.fromarray((digit * 255 / 16).astype("uint8"), mode="L").save(png, format="PNG")
            archive.writestr(f"{index:03d}.png", png.getvalue())
    response = requests.post(f"{api.base}/v1/datasets", files={"file": ("digits.zip", buffer.getvalue())},
                             headers={"Authorization": f"Bearer {api.key}"}, timeout=60)
    assert response.status_code == 201, response.text
    assert response.json()["num_images"] == 64
    return response.json()["id"]


def test_train_poll_grid_generate(platform):
    api, data_dir = platform
    dataset_id = _upload_zip(api)
    status, job = api.json("POST", "/v1/jobs/train", {"dataset": dataset_id, "config": {
        "img_size": 32, "img_channels": 1, "z_dim": 16, "g_channels": 16, "d_channels": 16, "batch_size": 32,
        "steps": 120, "sample_every": 10, "checkpoint_every": 40}})
    assert status == 202, job
    steps_seen, grid_while_running = set(), None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        _, current = api.json("GET", f"/v1/jobs/{job['id']}")
        if current["status"] == "running" and current["progress"].get("step"):
            steps_seen.add(current["progress"]["step"])
            if grid_while_running is None:
                code, headers, body = api.request("GET", f"/v1/jobs/{job['id']}/grid")
                if code == 200:
                    grid_while_running = body
        if current["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert current["status"] == "succeeded", (current, (data_dir / "worker.log").read_text()[-3000:])
    assert len(steps_seen) >= 2, f"progress should advance while running, saw {steps_seen}"
    assert grid_while_running is not None and grid_while_running.startswith(b"\x89PNG")
    assert current["progress"]["step"] == 120 and current["attempt"] == 1

    code, headers, grid = api.request("GET", f"/v1/jobs/{job['id']}/grid")
    assert code == 200 and headers["Content-Type"] == "image/png"
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(grid)).size == (8 * 34 + 2, 8 * 34 + 2)  # 64 seeds, 32x32, padding 2
    _, listing = api.json("GET", f"/v1/jobs/{job['id']}/artifacts")
    names = {a["name"] for a in listing["artifacts"]}
    assert {"grid.png", "generator.safetensors"} <= names and any("checkpoints/" in n for n in names)

    grids = []
    for _ in range(2):
        status, generate = api.json("POST", "/v1/jobs/generate", {"generator_job": job["id"], "seeds": "0-15",
                                                                  "nrow": 4})
        assert status == 202, generate
        assert api.wait(generate["id"], {"succeeded", "failed"})["status"] == "succeeded"
        grids.append(api.request("GET", f"/v1/jobs/{generate['id']}/grid")[2])
    assert grids[0] == grids[1] and grids[0].startswith(b"\x89PNG")


def test_requests_need_the_key(platform):
    api, _ = platform
    anonymous = Api(api.base, key="dcg_" + "x" * 43)
    status, headers, body = anonymous.request("GET", "/v1/jobs")
    challenge = {name.lower(): value for name, value in headers.items()}["www-authenticate"]
    assert status == 401 and challenge.startswith("Bearer")
    assert json.loads(body)["type"] == "/problems/unauthorized"
    assert api.request("GET", "/v1/jobs")[0] == 200


def test_cancel_a_running_job_keeps_its_last_checkpoint(platform):
    api, _ = platform
    _, job = api.json("POST", "/v1/jobs/train", {"dataset": "builtin:digits", "config": {
        "img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16,
        "steps": 100000, "checkpoint_every": 20}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, current = api.json("GET", f"/v1/jobs/{job['id']}")
        if (current["progress"].get("step") or 0) >= 25:
            break
        time.sleep(0.3)
    status, _ = api.json("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 202
    final = api.wait(job["id"], {"cancelled", "failed", "succeeded"}, seconds=60)
    assert final["status"] == "cancelled"
    _, listing = api.json("GET", f"/v1/jobs/{job['id']}/artifacts")
    assert any(a["name"].startswith("checkpoints/") for a in listing["artifacts"])
    assert api.json("POST", f"/v1/jobs/{job['id']}/cancel")[0] == 409


def test_the_cli_finds_the_api_and_its_key(platform):
    """`dcgan jobs ...` against the running platform, with the key from <data-dir>/api-key."""
    api, data_dir = platform
    env = {k: v for k, v in os.environ.items() if k != "DCGAN_API_KEY"}
    env.update(DCGAN_API_URL=api.base, DCGAN_DATA_DIR=str(data_dir))

    def dcgan(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", "jobs", *args], env=env, capture_output=True,
                              text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])

    submitted = dcgan("train", "--dataset", "builtin:digits", "--config", "img_size=32", "img_channels=1",
                      "steps=100000", "z_dim=8", "g_channels=8", "d_channels=8", "--max-runtime", "600")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "queued" and job["config"]["steps"] == 100000 and job["config"]["z_dim"] == 8
    assert job["request"]["max_runtime_seconds"] == 600
    cancelled = dcgan("cancel", job["id"])
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["cancel_requested"] is True
    got = dcgan("get", job["id"])
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == job["id"]
    listed = dcgan("list", "--type", "train", "--limit", "50")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    api.wait(job["id"], {"cancelled"}, seconds=60)

    missing = dcgan("get", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2 and missing.stderr.startswith("dcgan jobs: 404 not-found")
    bad = dcgan("train", "--dataset", "builtin:digits", "--config", "steps=0")
    assert bad.returncode == 2 and "config.steps" in bad.stderr
    env["DCGAN_API_KEY"] = "dcg_" + "x" * 43
    assert "401 unauthorized" in dcgan("list").stderr
