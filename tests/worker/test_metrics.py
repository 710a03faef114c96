"""Issue 13's acceptance for metrics, with a real `dcgan worker` (the CLI entry point, so its multiprocess
directory and DCGAN_WORKER_METRICS_PORT are set as in production) training a tiny job: the API's /metrics,
parsed by prometheus_client's text parser, shows the job running and its worker's images/s; the worker's own
port counts the steps it ran and, once the job is cancelled, the job's duration under its final status."""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import jobs
from tests.services import free_port
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_tasks import wait_until
from web import create_app

pytestmark = pytest.mark.timeout(300)
TINY = dict(img_size=32, img_channels=1, z_dim=8, g_channels=8, d_channels=8, batch_size=16, num_samples=16)


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def metrics_worker(settings, tmp_path_factory):
    """`dcgan worker --queues train` serving its metrics on a port of its own."""
    port = free_port()
    log = tmp_path_factory.mktemp("metrics-worker") / "worker.log"
    handle = start_worker(settings, log, command=[sys.executable, "-m", "cli", "worker", "--queues", "train"],
                          env={"DCGAN_WORKER_METRICS_PORT": str(port)})
    handle.metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        yield handle
    finally:
        stop_worker(handle)


def test_metrics_show_a_running_job_and_the_worker_counts_its_steps(metrics_worker, celery_client, session_factory,
                                                                   tenant_id, settings):
    with session_factory() as session:
        job_id = jobs.create_job(session, tenant_id, "train", dict(TINY, steps=100_000),
                                 {"dataset": "builtin:digits"}).id
        session.commit()
    celery_client.send_task("dcgan.train", args=[str(job_id)], queue="train")
    job = wait_until(session_factory, job_id, lambda job: job.status == "running" and job.progress.get("step", 0) > 0)

    app = create_app(settings)
    try:
        api = parse(app.test_client().get("/metrics").get_data(as_text=True))
    finally:
        app.extensions["dcgan"]["engine"].dispose()
    assert value(api, "dcgan_jobs", type="train", status="running") == 1
    assert value(api, "dcgan_running_jobs", worker=job.worker, type="train") == 1
    assert value(api, "dcgan_training_images_per_second", worker=job.worker) > 0
    assert value(api, "dcgan_training_step", worker=job.worker) > 0

    with urllib.request.urlopen(metrics_worker.metrics_url, timeout=10) as response:
        own = parse(response.read().decode())
    steps = value(own, "dcgan_worker_training_steps_total")
    assert steps >= job.progress["step"] > 0
    assert value(own, "dcgan_worker_training_images_total") == steps * TINY["batch_size"]
    assert ("dcgan_storage_upload_errors_total", ()) in own  # exported before the first failure
    assert value(own, "dcgan_job_duration_seconds_count", type="train", status="cancelled") == 0

    with session_factory() as session:
        jobs.request_cancel(session, job_id)
        session.commit()
    job = wait_until(session_factory, job_id, lambda job: job.finished_at is not None)
    assert job.status == "cancelled"
    deadline = time.monotonic() + 30
    while True:  # observed right after the attempt returns, a moment after the row says cancelled
        with urllib.request.urlopen(metrics_worker.metrics_url, timeout=10) as response:
            own = parse(response.read().decode())
        if value(own, "dcgan_job_duration_seconds_count", type="train", status="cancelled") or \
                time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(own, "dcgan_job_duration_seconds_count", type="train", status="cancelled") == 1
    elapsed = (job.finished_at - job.started_at).total_seconds()
    assert value(own, "dcgan_job_duration_seconds_sum", type="train", status="cancelled") == pytest.approx(elapsed)


def test_every_failed_upload_try_is_counted(monkeypatch):
    """dcgan_storage_upload_errors_total counts each try the store refused, also when the upload then gives up."""
    import types
    import uuid

    from core.storage import StorageError
    from worker import attempt as attempt_module
    from worker.metrics import UPLOAD_ERRORS

    monkeypatch.setattr(attempt_module, "UPLOAD_RETRY_PAUSES", (0, 0))  # three tries, no waiting
    holder = types.SimpleNamespace(job_id=uuid.uuid4(), ensure_holds=lambda: None)
    tries = []

    def refused():
        tries.append(1)
        raise StorageError("503 Slow Down")

    before = UPLOAD_ERRORS._value.get()
    with pytest.raises(attempt_module.StorageUnavailable):
        attempt_module.Attempt._put(holder, refused, "jobs/x/grid.png")
    assert len(tries) == 3 and UPLOAD_ERRORS._value.get() - before == 3
