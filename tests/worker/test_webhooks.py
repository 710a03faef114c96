"""Webhooks end to end: a real `celery worker` trains (train queue) and writes the outbox; a real `celery worker`
on the webhooks queue sends it to a receiver started by the test on loopback (DCGAN_WEBHOOK_ALLOW_PRIVATE=1 and
ALLOW_HTTP=1). Endpoints are registered and the delivery log read through the API, in-process on the same
database. Retries are made short through the settings (backoff 0.2 s), not waited out."""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from core import jobs
from core.db import WebhookMessage
from tests.web.conftest import authorized_client
from tests.webhook_receiver import Receiver
from tests.worker.conftest import start_worker, stop_worker
from tests.worker.test_tasks import wait_finished
from web import create_app

TINY = dict(img_size=32, img_channels=1, z_dim=8, g_channels=8, d_channels=8, batch_size=16, num_samples=16)
SENDER_ENV = {"DCGAN_WEBHOOK_ALLOW_PRIVATE": "1", "DCGAN_WEBHOOK_ALLOW_HTTP": "1",
              "DCGAN_WEBHOOK_BACKOFF_SECONDS": "0.2", "DCGAN_WEBHOOK_TIMEOUT_SECONDS": "3"}


@pytest.fixture(scope="module")
def trainer(settings, tmp_path_factory):
    """A worker on the train queue only: it writes outbox rows, it sends nothing."""
    handle = start_worker(settings, tmp_path_factory.mktemp("trainer") / "worker.log", queues="train",
                          env=SENDER_ENV)
    yield handle
    stop_worker(handle)


@pytest.fixture
def start_sender(settings, tmp_path):
    started = []

    def start():
        handle = start_worker(settings, tmp_path / f"sender-{len(started)}.log", queues="webhooks", env=SENDER_ENV)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        stop_worker(handle)


@pytest.fixture(scope="module")
def api(settings):
    app = create_app(replace(settings, webhook_allow_private=True, webhook_allow_http=True))
    yield authorized_client(app, tenant="default")  # the tenant the worker tests' jobs belong to
    app.extensions["dcgan"]["engine"].dispose()


@pytest.fixture
def register(api):
    """Register an endpoint through the API; every one is deleted after the test."""
    made = []

    def register_endpoint(url: str, events: list[str]) -> dict:
        response = api.post("/v1/webhooks", json={"url": url, "events": events})
        assert response.status_code == 201, response.json
        made.append(response.json["id"])
        return response.json

    yield register_endpoint
    for hook_id in made:
        api.delete(f"/v1/webhooks/{hook_id}")


def train(celery_client, session_factory, tenant_id, steps: int = 5) -> uuid.UUID:
    with session_factory() as session:
        job_id = jobs.create_job(session, tenant_id, "train", dict(TINY, steps=steps), {"dataset": "builtin:digits"}).id
        session.commit()
    celery_client.send_task("dcgan.train", args=[str(job_id)], queue="train")
    return job_id


def test_started_and_succeeded_arrive_signed_and_a_500_is_retried_with_the_same_id(
        trainer, start_sender, register, api, celery_client, session_factory, tenant_id):
    start_sender()
    with Receiver() as good, Receiver(script=[500, 500]) as flaky:
        hook = register(good.url, ["job.started", "job.succeeded"])
        flaky_hook = register(flaky.url, ["job.succeeded"])
        job_id = train(celery_client, session_factory, tenant_id)
        assert wait_finished(session_factory, job_id).status == "succeeded"

        received = good.wait_for(lambda got: len(got) >= 2, 30, "job.started and job.succeeded")
        payloads = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in received]
        assert [p["type"] for p in payloads] == ["job.started", "job.succeeded"]
        assert all(p["data"]["id"] == str(job_id) for p in payloads)
        assert (payloads[0]["data"]["status"], payloads[1]["data"]["status"]) == ("running", "succeeded")

        tries = flaky.wait_for(lambda got: len(got) >= 3, 30, "three tries of job.succeeded")
        assert len({r.headers["webhook-id"] for r in tries}) == 1  # the same message each time
        for r in tries:
            Webhook(flaky_hook["secret"]).verify(r.body, r.headers)
        deadline = time.monotonic() + 10
        while True:
            [log] = api.get(f"/v1/webhooks/{flaky_hook['id']}/deliveries").json["deliveries"]
            if log["status"] == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (log["id"], log["status"]) == (tries[0].headers["webhook-id"], "delivered")
        assert [(a["attempt"], a["status_code"]) for a in log["attempt_log"]] == [(1, 500), (2, 500), (3, 200)]
        assert all(a["latency_ms"] is not None for a in log["attempt_log"])


def test_a_receiver_that_never_answers_does_not_delay_the_job(trainer, start_sender, register, celery_client,
                                                              session_factory, tenant_id):
    start_sender()
    with Receiver(default="hang") as dead:
        hook = register(dead.url, ["job.started", "job.progress", "job.succeeded"])
        job_id = train(celery_client, session_factory, tenant_id, steps=10)
        dead.wait_for(lambda got: len(got) >= 1, 30, "a request to hold")
        assert wait_finished(session_factory, job_id).status == "succeeded"
        with session_factory() as session:
            messages = session.scalars(select(WebhookMessage).where(WebhookMessage.endpoint_id == uuid.UUID(hook["id"]))
                                       ).all()
            assert "job.succeeded" in {m.event_type for m in messages}
            assert {m.status for m in messages} == {"pending"}  # the job finished while none was delivered


def test_killing_the_sender_mid_delivery_loses_no_event(start_sender, register, session_factory, tenant_id):
    first = start_sender()
    with Receiver(script=["hang"]) as receiver:
        hook = register(receiver.url, ["job.queued"])
        with session_factory() as session:
            job_id = jobs.create_job(session, tenant_id, "train", dict(TINY, steps=1), {"dataset": "builtin:digits"}).id
            session.commit()
        [held] = receiver.wait_for(lambda got: len(got) >= 1, 30, "the job.queued message")
        os.killpg(first.process.pid, signal.SIGKILL)  # while the receiver holds the request
        first.process.wait()
        receiver.release.set()
        start_sender()
        got = receiver.wait_for(lambda got: len(got) >= 2, 60, "the message again, from the new sender")
        assert got[1].headers["webhook-id"] == held.headers["webhook-id"]
        payload = Webhook(hook["secret"]).verify(got[1].body, got[1].headers)
        assert (payload["type"], payload["data"]["id"]) == ("job.queued", str(job_id))
