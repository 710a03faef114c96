"""PostgreSQL going away under a running job: the worker waits it out, and the job still succeeds once the
database is back (issue 4, acceptance 5). The database is a private cluster (tests/services.py) that this
module stops and starts; the machine's shared PostgreSQL is never touched.
"""

from __future__ import annotations

import time
import uuid

import pytest
from alembic import command

from core.db import Job
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_faults import FAST_LEASES, assert_one_consistent_set_of_artifacts, long_job
from tests.worker.test_tasks import send, wait_finished, wait_until


@pytest.fixture(scope="module")
def database_url(private_postgres, make_alembic_config):  # overrides tests/worker/conftest.py's
    url = private_postgres.create_database(f"outage_{uuid.uuid4().hex[:8]}")
    command.upgrade(make_alembic_config(url), "head")
    return url


def test_a_running_job_outlives_a_database_outage(settings, session_factory, tenant_id, celery_client, store,
                                                 private_postgres, tmp_path):
    handles = [start_worker(settings, tmp_path / "reaper.log", "maintenance", beat=True, env=FAST_LEASES),
               start_worker(settings, tmp_path / "worker.log", env=FAST_LEASES)]
    try:
        job_id = long_job(session_factory, tenant_id, steps=200, checkpoint_every=20, sample_every=50)
        send(celery_client, job_id)
        wait_until(session_factory, job_id, lambda job: (job.checkpoint_step or 0) >= 20 or job.finished_at)
        session_factory.kw["bind"].dispose()  # the test's own pooled connections die with the server
        private_postgres.stop()
        try:
            handles[1].wait_for_log("database unavailable", timeout=60)
            time.sleep(4)  # longer than the lease: the job's lease runs out while nobody can see it
        finally:
            private_postgres.start()
        job = wait_finished(session_factory, job_id)
        assert job.status == "succeeded", (job.error_type, job.error_detail)
        with session_factory() as session:
            assert session.get(Job, job_id).progress["step"] == 200
        assert_one_consistent_set_of_artifacts(session_factory, store, job_id)
    finally:
        for handle in handles:
            stop_worker(handle)
