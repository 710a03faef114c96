"""cli.metrics_dir: each server gets an empty directory of its own for prometheus_client's multiprocess files,
and the directories of servers that are gone are removed."""

from __future__ import annotations

import subprocess
import sys

from cli.metrics_dir import VARIABLE, use_fresh_multiprocess_dir


def test_each_server_gets_a_fresh_directory_and_dead_servers_leave_none(tmp_path):
    base = tmp_path / "metrics"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    (base / f"worker-{dead_pid}").mkdir(parents=True)
    (base / f"worker-{dead_pid}" / f"counter_{dead_pid}.db").write_bytes(b"old counts")
    (base / "api-1").mkdir()  # pid 1 is alive: another server's, left alone
    (base / "api-1" / "counter_9.db").write_bytes(b"its counts")
    stale = base / "api-4242"  # this server's name, left by a server that had the same pid
    stale.mkdir()
    (stale / "counter_4242.db").write_bytes(b"old counts")
    environ = {VARIABLE: str(base)}

    directory = use_fresh_multiprocess_dir(environ, "api", pid=4242)
    assert directory == stale and environ[VARIABLE] == str(stale)
    assert list(directory.iterdir()) == []  # wiped: an earlier server's counts would add to this one's
    assert not (base / f"worker-{dead_pid}").exists()
    assert (base / "api-1" / "counter_9.db").exists()


def test_without_a_base_the_directory_is_under_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    environ: dict[str, str] = {}
    directory = use_fresh_multiprocess_dir(environ, "worker", pid=77)
    assert directory == tmp_path / "dcgan-metrics" / "worker-77" and directory.is_dir()
    assert environ[VARIABLE] == str(directory)
