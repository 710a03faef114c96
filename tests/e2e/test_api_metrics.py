"""`dcgan api --processes 2`: GET /metrics, answered by either process, counts the requests both of them served
(prometheus_client's multiprocess mode, in the directory `dcgan api` makes for itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_dbs import shared_redis_url
from tests.services import free_port

pytestmark = pytest.mark.timeout(180)
REPO_ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def healthz_count(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "dcgan_http_requests_total" and sample.labels["route"] == "/healthz")


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # a new connection each time
        return response.status


def test_the_request_counter_counts_both_processes(tmp_path):
    port, base_dir = free_port(), tmp_path / "metrics"
    env = {**os.environ, "DCGAN_DATA_DIR": str(tmp_path), "REDIS_URL": shared_redis_url("e2e"),
           "PROMETHEUS_MULTIPROC_DIR": str(base_dir)}
    subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port), "--processes", "2"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert "API on" in server.stdout.readline()
        workers = children_of(server.pid)
        directory = base_dir / f"api-{server.pid}"  # the server's own, under the operator's base
        assert len(workers) == 2 and directory.is_dir()
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Bursts of concurrent connections until both processes have answered some (the kernel picks).
            while sent < 800:
                assert set(pool.map(get, [f"{base}/healthz"] * 40)) == {200}
                sent += 40
                served = {pid for pid in workers if (directory / f"counter_{pid}.db").exists()}
                if served == set(workers) and sent >= 80:
                    break
        assert served == set(workers), f"only {served} of {workers} answered {sent} requests"
        # Whichever process answers the scrape, the count is every request both served.
        assert [healthz_count(base) for _ in range(4)] == [sent] * 4
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
