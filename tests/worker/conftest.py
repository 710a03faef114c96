"""Real parts for the worker tests: a migrated PostgreSQL database, a Redis database of its own, an S3
server (moto, over HTTP) and a `celery worker` subprocess wired to all three.

The worker runs as it does in production, `celery -A worker.celery_app worker`, reading its settings
from the environment; the tests talk to it only through the broker, the database and the bucket. Its log
is attached to the report of any test that fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from alembic import command

from core.db import ensure_tenant, make_engine, make_session_factory
from core.settings import Settings
from tests.redis_dbs import shared_redis_url

REPO_ROOT = Path(__file__).resolve().parents[2]
# A Redis database of the tests' own, flushed at the start, so a developer's queues are left alone.
REDIS_URL = os.environ.get("DCGAN_TEST_REDIS_URL") or shared_redis_url("worker")
BUCKET = "dcgan-test"
WORKER_START_SECONDS = 90


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def database_url(create_postgres_database, make_alembic_config):
    """A fresh PostgreSQL database (tests/db_fixtures.py) at `alembic upgrade head`."""
    url = create_postgres_database()
    command.upgrade(make_alembic_config(url), "head")
    return url


@pytest.fixture(scope="module")
def redis_url():
    import redis

    parsed = urlparse(REDIS_URL)
    if not _reachable(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        pytest.skip(f"Redis is unreachable at {REDIS_URL}")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint) -> str:
    """The test bucket on the shared moto server (tests/s3_fixtures.py)."""
    from core.storage import S3Store

    S3Store("unused", endpoint_url=s3_endpoint)._client.create_bucket(Bucket=BUCKET)
    return BUCKET


def _aws_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@pytest.fixture(scope="module")
def settings(database_url, redis_url, s3_endpoint, s3_bucket, tmp_path_factory) -> Settings:
    """What the worker reads from its environment, as a Settings object for the test's side."""
    return Settings(data_dir=tmp_path_factory.mktemp("worker-data"), database_url=database_url,
                    redis_url=redis_url, storage_url=f"s3://{s3_bucket}/artifacts",
                    s3_endpoint_url=s3_endpoint, min_checkpoint_every=1, min_sample_every=1).with_defaults()


@pytest.fixture(scope="module")
def session_factory(settings):
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def tenant_id(session_factory) -> uuid.UUID:
    with session_factory() as session:
        tenant = ensure_tenant(session, "default")
        session.commit()
        return tenant.id


@pytest.fixture(scope="module")
def store(settings):
    from core.storage import open_store

    return open_store(settings)


@pytest.fixture(scope="module")
def celery_client(settings):
    """A Celery app built like the worker's, used only to send messages."""
    with pytest.MonkeyPatch.context() as env:
        # Importing the entry point builds its own app from the environment, which needs a broker.
        env.setenv("REDIS_URL", settings.redis_url)
        from worker.celery_app import make_celery

    app = make_celery(settings)
    yield app
    app.close()


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the worker log after {timeout} s")
            time.sleep(0.2)


def start_worker(settings: Settings, log_path: Path, queues: str = "train,generate", *, pool: str | None = "solo",
                 beat: bool = False, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> WorkerProcess:
    """`celery -A worker.celery_app worker` as production runs it, in a process group of its own (so a
    test can kill it with its pool children), reading its settings from the environment. `pool=None`
    gives no --pool: the app's own default."""
    full_env = {**os.environ, **_aws_env(),
                "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                "STORAGE_URL": settings.storage_url, "S3_ENDPOINT_URL": settings.s3_endpoint_url,
                "DCGAN_DATA_DIR": str(settings.data_dir), "DCGAN_THREADS": "1", "PYTHONUNBUFFERED": "1",
                **(env or {})}
    command_line = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
                    *(["--pool", pool] if pool else []), "--concurrency", "1", "--loglevel", "INFO",
                    "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat"]
    if beat:
        command_line += ["-B", "-s", str(log_path.with_suffix(".beat-schedule"))]
    command_line = command or command_line
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command_line, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    handle = WorkerProcess(process, log_path)
    try:
        handle.wait_for_log(" ready.", WORKER_START_SECONDS)
    except BaseException:
        stop_worker(handle)  # a worker that never got ready must not outlive the test
        raise
    return handle


def stop_worker(handle: WorkerProcess) -> None:
    if handle.process.poll() is None:
        handle.process.terminate()
        try:
            handle.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(handle.process.pid, signal.SIGKILL)
            handle.process.wait()
    try:
        os.killpg(handle.process.pid, signal.SIGKILL)  # any pool child or beat left behind
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def worker(settings, tmp_path_factory):
    """`celery -A worker.celery_app worker` on both queues, one job at a time, started once per module."""
    handle = start_worker(settings, tmp_path_factory.mktemp("worker-log") / "worker.log")
    try:
        yield handle
    finally:
        stop_worker(handle)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, WorkerProcess):
                report.sections.append((f"celery worker log ({name})", value.log()[-20000:]))
        for handle in getattr(item, "started_workers", []):
            report.sections.append((f"celery worker log ({handle.log_path.name})", handle.log()[-20000:]))
