"""`dcgan up`'s parts that need no running platform (cli.servers), and the worker and sampler commands as real
processes on the test Redis; tests/e2e runs the whole of `dcgan up`."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.auth import authenticate, revoke_key
from core.db import Tenant, make_engine, make_session_factory
from tests.conftest import flushed_redis
from tests.redis_dbs import shared_redis_url

ROOT = Path(__file__).resolve().parents[2]


def test_dcgan_up_makes_its_local_key_once(tmp_path):
    """`dcgan up`'s key file: made on the first start (mode 600, tenant "local"), reused on later starts,
    replaced when the key in it no longer authenticates."""
    from cli.admin import upgrade_database
    from cli.servers import local_api_key
    from core.settings import Settings

    settings = Settings(data_dir=tmp_path).with_defaults()
    engine = make_engine(settings.database_url)  # makes the SQLite file's directory
    upgrade_database(settings.database_url)
    try:
        path, new_key = local_api_key(settings)
        assert path == tmp_path / "api-key" and new_key is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == new_key
        with make_session_factory(engine)() as session:
            assert authenticate(session, new_key) == session.scalar(select(Tenant.id).where(Tenant.name == "local"))

        assert local_api_key(settings) == (path, None) and path.read_text().strip() == new_key

        with make_session_factory(engine)() as session:
            revoke_key(session, new_key)
            session.commit()
        path.chmod(0o644)
        _, replacement = local_api_key(settings)
        assert replacement not in (None, new_key) and path.read_text().strip() == replacement
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".api-key")] == []
    finally:
        engine.dispose()


# ----- the Celery processes: real `dcgan worker` / `dcgan sampler` processes on the test Redis -----

REDIS_URL = os.environ.get("DCGAN_TEST_REDIS_URL") or shared_redis_url("worker")
READY_SECONDS = 90


@pytest.fixture
def redis_client():
    yield from flushed_redis(REDIS_URL)


def start_dcgan(arguments: list[str], data_dir) -> tuple[subprocess.Popen, Path]:
    """`dcgan <arguments>` as a user starts it, its output in a file; returns once Celery says it is ready."""
    log_path = data_dir / "out.log"
    env = {**os.environ, "REDIS_URL": REDIS_URL, "DCGAN_DATA_DIR": str(data_dir), "DCGAN_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cli", *arguments], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + READY_SECONDS
    while " ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"dcgan {' '.join(arguments)} did not get ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return process, log_path


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def niceness(pid: int) -> int:
    # /proc/<pid>/stat: the 19th field, counted after the parenthesised command name (which may hold spaces).
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def test_worker_consumes_the_queues_it_is_given_at_lower_priority(tmp_path, redis_client):
    """`dcgan worker --queues evaluate --nice 7` is what `dcgan up` and compose run for evaluation jobs: a
    Celery worker on that queue only, at niceness 7 more than the shell's (the pid is the one `dcgan` had:
    the command execs Celery)."""
    process, log_path = start_dcgan(["worker", "--queues", "evaluate", "--nice", "7"], tmp_path)
    try:
        assert niceness(process.pid) == os.nice(0) + 7
        banner = log_path.read_text()
        assert ".> evaluate" in banner and ".> train" not in banner and "evaluate@" in banner
    finally:
        stop(process)


def test_worker_without_queues_runs_train_and_generate(tmp_path, redis_client):
    process, log_path = start_dcgan(["worker"], tmp_path)
    try:
        banner = log_path.read_text()
        assert ".> train" in banner and ".> generate" in banner and ".> sample" not in banner
        assert niceness(process.pid) == os.nice(0)
    finally:
        stop(process)


def test_webhooks_runs_the_sender_on_its_own_queue_and_up_starts_it(tmp_path, redis_client):
    from cli.servers import _up_workers

    assert _up_workers()["webhooks"] == ["webhooks"]
    process, log_path = start_dcgan(["webhooks"], tmp_path)
    try:
        deadline = time.monotonic() + 30
        while "webhook sender: polling" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        banner = log_path.read_text()
        assert ".> webhooks" in banner and ".> train" not in banner and "webhooks@" in banner
    finally:
        stop(process)


def test_an_empty_queue_list_is_refused():
    result = subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", " , "], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--queues names no queue" in result.stderr


def test_sampler_is_alive_while_it_runs_and_leaves_when_stopped(tmp_path, redis_client):
    """`dcgan sampler` warms up, then says it is alive (the API's 503 test reads the same set); SIGTERM takes
    it out of the set at once, not after its beats run out."""
    from core.sampling_channel import Liveness

    liveness = Liveness(redis_client)
    assert liveness.alive() == 0
    process, log_path = start_dcgan(["sampler"], tmp_path)
    try:
        banner = log_path.read_text()
        assert ".> sample" in banner and ".> train" not in banner and "warm in" in banner
        assert liveness.alive() == 1
    finally:
        stop(process)
    assert process.returncode == 0 and liveness.alive() == 0
