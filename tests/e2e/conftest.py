"""The embedded platform as a user runs it, shared by every e2e module: one `dcgan up` in a subprocess
(SQLite, its bundled Redis, LocalStore, one real worker process, the API under waitress) for the whole
session, driven over HTTP only. Tests make their own jobs and never assume an empty platform."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    def __init__(self, base: str, key: str = ""):
        self.base = base
        self.key = key

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.key}"}
        if data:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, _, raw = self.request(method, path, body)
        return status, json.loads(raw)

    def wait(self, job_id: str, until: set[str], seconds: float = 240) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _, job = self.json("GET", f"/v1/jobs/{job_id}")
            if job["status"] in until:
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job['status']} after {seconds} s")


def _wait_for_text(path: Path, text: str, process: subprocess.Popen, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        content = path.read_text()
        if text in content:
            return content
        assert process.poll() is None, content
        assert time.monotonic() < deadline, f"{text!r} not printed within {seconds} s:\n{content}"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("platform")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL")}
    # No cadence floor (1): the tests train a few steps with a checkpoint or sample every few.
    env.update(DCGAN_THREADS="1", PYTHONUNBUFFERED="1", DCGAN_MIN_CHECKPOINT_EVERY="1", DCGAN_MIN_SAMPLE_EVERY="1")
    log = open(data_dir / "up.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "cli", "up", "--port", str(port), "--data-dir",
                                str(data_dir)], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    # Stopped however the fixture ends: a failed check during setup must not leave `dcgan up` running.
    try:
        api = Api(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if api.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, (data_dir / "up.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail("dcgan up did not become ready:\n" + (data_dir / "up.log").read_text())
        # The key `dcgan up` made on its first start: only its owner may read the file, and it was printed.
        key_file = data_dir / "api-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        api.key = key_file.read_text().strip()
        assert api.key.startswith("dcg_")
        # /readyz answers as soon as the API process listens; `dcgan up` prints its banner (with the key) only
        # after it has seen that port open itself, a moment later.
        banner = _wait_for_text(data_dir / "up.log", "dcgan-platform is up", process, seconds=30)
        assert api.key in banner
        yield api, data_dir
    finally:
        process.send_signal(2)  # Ctrl-C
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        log.close()
