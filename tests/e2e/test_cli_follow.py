"""`dcgan jobs ... --follow`, `follow`, `download` and `dcgan datasets upload` against the embedded platform
(the session's `dcgan up`, tests/e2e/conftest.py), run as a user runs them: a subprocess that finds the API
through DCGAN_API_URL and its key in <DCGAN_DATA_DIR>/api-key. One job ends each way: succeeded (exit 0),
cancelled (130) and failed (1)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
# Jobs whose config the acceptance line does not fix are small: the platform's one worker is shared.
SMALL = ["z_dim=8", "g_channels=8", "d_channels=8", "batch_size=16"]


def cli_env(platform) -> dict[str, str]:
    api, data_dir = platform
    env = {k: v for k, v in os.environ.items() if k != "DCGAN_API_KEY"}
    env.update(DCGAN_API_URL=api.base, DCGAN_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def dcgan(platform, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=cli_env(platform), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def submitted_id(stderr: str) -> str:
    return re.search(r"^job (\S+) submitted", stderr, re.MULTILINE).group(1)


def steps_drawn(stderr: str) -> list[int]:
    return [int(step) for step in re.findall(r"\| (\d+)/\d+ \[", stderr)]


def test_train_follow_shows_a_moving_bar_exits_0_and_download_writes_everything(platform, tmp_path):
    """The acceptance command as written (default model size), then `dcgan jobs download` of its job."""
    api, data_dir = platform
    started = time.monotonic()
    followed = dcgan(platform, "jobs", "train", "--dataset", "builtin:digits", "--config", "img_size=32",
                     "img_channels=1", "steps=200", "--follow", timeout=800)
    seconds = time.monotonic() - started
    print(f"train --follow, 200 steps at the default model size: {seconds:.0f} s")  # pytest -s shows it
    assert followed.returncode == 0, followed.stderr[-3000:] + (data_dir / "worker.log").read_text()[-3000:]
    job_id = submitted_id(followed.stderr)
    steps = steps_drawn(followed.stderr)
    assert len(set(steps)) >= 3 and steps == sorted(steps) and steps[-1] == 200, followed.stderr
    assert followed.stderr.rstrip().endswith(f"job {job_id} succeeded")
    samples = [line for line in followed.stdout.splitlines() if line.startswith("sample at step")]
    assert samples == [f"sample at step {step}: {api.base}/v1/jobs/{job_id}/samples/{step}" for step in (100, 200)]
    code, headers, png = api.request("GET", f"/v1/jobs/{job_id}/samples/100")
    assert code == 200 and png.startswith(b"\x89PNG")

    # Following it again replays its stream: the same samples, once each, and the same exit status.
    again = dcgan(platform, "jobs", "follow", job_id)
    assert again.returncode == 0 and again.stdout == followed.stdout

    out = tmp_path / "download"
    downloaded = dcgan(platform, "jobs", "download", job_id, "--grid", str(tmp_path / "grid.png"),
                       "--generator", str(tmp_path / "generator.safetensors"), "--artifacts", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    _, listing = api.json("GET", f"/v1/jobs/{job_id}/artifacts")
    for artifact in listing["artifacts"]:
        assert hashlib.sha256((out / artifact["name"]).read_bytes()).hexdigest() == artifact["sha256"]
    names = {a["name"] for a in listing["artifacts"]}
    assert {"grid.png", "generator.safetensors", "samples/step-0000100.png"} <= names
    assert any(name.startswith("checkpoints/") for name in names)
    assert (tmp_path / "grid.png").read_bytes() == (out / "grid.png").read_bytes()
    assert (tmp_path / "generator.safetensors").read_bytes() == (out / "generator.safetensors").read_bytes()
    assert len(downloaded.stdout.splitlines()) == len(names) + 2


def test_a_job_cancelled_while_followed_exits_130(platform):
    api, _ = platform
    process = subprocess.Popen([sys.executable, "-m", "cli", "jobs", "train", "--dataset", "builtin:digits",
                                "--config", "img_size=32", "img_channels=1", "steps=100000", *SMALL, "--follow"],
                               env=cli_env(platform), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        first = process.stderr.readline()  # "job <id> submitted (train, queued)", flushed before following
        job_id = submitted_id(first)
        deadline = time.monotonic() + 300
        while (api.json("GET", f"/v1/jobs/{job_id}")[1]["progress"].get("step") or 0) == 0:
            assert time.monotonic() < deadline and process.poll() is None, first
            time.sleep(0.5)
        assert api.json("POST", f"/v1/jobs/{job_id}/cancel")[0] == 202
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.rstrip().endswith(f"job {job_id} cancelled") and steps_drawn(err)
    assert api.json("GET", f"/v1/jobs/{job_id}")[1]["status"] == "cancelled"


def test_a_job_that_fails_exits_1_with_its_reason(platform, tmp_path):
    """A dataset uploaded with `dcgan datasets upload` whose stored images are gone before the job runs:
    the worker fails the job as data_error (worker/tasks.py), an honest failure, not a staged one."""
    api, data_dir = platform
    archive = tmp_path / "digits.zip"
    archive.write_bytes(_digits_zip(16))
    uploaded = dcgan(platform, "datasets", "upload", str(archive), "--name", "doomed")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert dataset["num_images"] == 16 and dataset["num_rejected"] == 1 and dataset["name"] == "doomed"
    listed = json.loads(dcgan(platform, "datasets", "list").stdout)["datasets"]
    assert dataset["id"] in [d["id"] for d in listed]
    stored = list((data_dir / "artifacts").glob(f"tenants/*/datasets/{dataset['id']}"))
    assert len(stored) == 1
    shutil.rmtree(stored[0])

    followed = dcgan(platform, "jobs", "train", "--dataset", dataset["id"], "--config", "img_size=32",
                     "img_channels=1", "steps=50", *SMALL, "--follow", timeout=300)
    assert followed.returncode == 1, followed.stderr
    assert followed.stderr.rstrip().splitlines()[-1] == (
        f"failed: data_error: dataset {dataset['id']}: no images in the artifact store")


def _digits_zip(count: int) -> bytes:
    """`count` digits as PNG files, and one file that is no image (num_rejected counts it)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, digit in enumerate(load_digits().images[:count]):
            png = io.BytesIO()
            Image.fromarray((digit * 255 / 16).astype("uint8"), mode="L").save(png, format="PNG")
            archive.writestr(f"{index:03d}.png", png.getvalue())
        archive.writestr("notes.txt", "not an image")
    return buffer.getvalue()
