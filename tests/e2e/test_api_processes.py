"""`dcgan api --processes 2` as an operator runs it: one port, two API processes answering on it, both
ready before the port is announced, all of them gone after SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port
from tests.redis_dbs import shared_redis_url

pytestmark = pytest.mark.timeout(180)
REPO_ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_two_api_processes_share_one_port_and_stop_together(tmp_path):
    port = free_port()
    env = {**os.environ, "DCGAN_DATA_DIR": str(tmp_path), "REDIS_URL": shared_redis_url("e2e")}
    subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port), "--processes", "2"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        announced = server.stdout.readline()
        assert f"API on http://127.0.0.1:{port} (2 processes x 8 threads + 64 for event streams)" in announced, \
            announced
        workers = children_of(server.pid)
        assert len(workers) == 2
        for _ in range(20):  # a new connection each time: the kernel hands them to either process
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                assert response.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
                  for pid in workers):
            assert time.monotonic() < deadline, "an API process outlived its parent"
            time.sleep(0.1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
