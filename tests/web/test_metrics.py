"""GET /metrics on both backends: the exposition parses with prometheus_client's own text parser, requests are
counted by route (the Flask rule, never the raw path), the database's series show what the rows say, and
DCGAN_METRICS_TOKEN guards it with a 401 problem."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from core import jobs
from core.db import Job, WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from tests.web.conftest import authorized_client, make_app


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_method_and_status(api):
    route = "/v1/jobs/<job_id>"
    missing = "00000000-0000-0000-0000-000000000007"
    before = scrape(api)
    for _ in range(3):
        assert api.get(f"/v1/jobs/{missing}").status_code == 404
    assert api.get("/no/such/path/abc").status_code == 404
    anonymous = api.application.test_client()
    assert anonymous.get("/v1/jobs").status_code == 401  # refused before the view: counted too
    after = scrape(api)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("dcgan_http_requests_total", route=route, method="GET", status="404") == 3
    assert delta("dcgan_http_request_duration_seconds_count", route=route, method="GET", status="404") == 3
    assert delta("dcgan_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert delta("dcgan_http_requests_total", route="/v1/jobs", method="GET", status="401") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == "dcgan_http_requests_total"}
    assert not any(missing in route or "abc" in route for route in routes), routes  # raw paths never become labels


def test_database_series_show_jobs_queues_workers_transitions_and_webhooks(api_app, api):
    sessions = api_app.extensions["dcgan"]["sessions"]
    t0 = utcnow() - timedelta(minutes=10)
    with sessions() as session:
        queued = jobs.create_job(session, api.tenant_id, "train", {}, {}, now=t0)
        jobs.create_job(session, api.tenant_id, "generate", {}, {})
        running = jobs.create_job(session, api.tenant_id, "train", {}, {})
        # A deleted job (its row a tombstone) counts nowhere.
        jobs.request_cancel(session, jobs.create_job(session, api.tenant_id, "generate", {}, {}).id)
        session.execute(update(Job).where(Job.status == "cancelled").values(deleted_at=utcnow()))
        session.commit()
        # A second job whose lease runs out, is re-queued, then resumed from its checkpoint by another worker.
        lost = jobs.create_job(session, api.tenant_id, "train", {}, {})
        lost_attempt = jobs.claim_job(session, lost.id, "gpu-host:7", lease_seconds=60)
        jobs.set_checkpoint(session, lost.id, lost_attempt, "jobs/x/checkpoints/step-0000010.pt", 10)
        assert jobs.requeue_expired(session, now=utcnow() + timedelta(minutes=5)) == [lost.id]
        jobs.claim_job(session, lost.id, "gpu-host:9", lease_seconds=60)
        jobs.record_progress(session, lost.id, lost_attempt + 1, {"step": 12, "images_per_second": 100.0})
        attempt = jobs.claim_job(session, running.id, "gpu-host:41", lease_seconds=60)
        jobs.record_progress(session, running.id, attempt, {"step": 120, "images_per_second": 850.5})
        endpoint = WebhookEndpoint(tenant_id=api.tenant_id, url="https://example.com/hook", events=["job.started"],
                                   secret="whsec_x")
        session.add(endpoint)
        session.flush()
        for message_id, status in (("msg_1", "delivered"), ("msg_2", "pending")):
            session.add(WebhookMessage(id=message_id, endpoint_id=endpoint.id, tenant_id=api.tenant_id,
                                       event_type="job.started", payload={}, status=status))
        session.flush()
        for number, code in enumerate((500, None, 200), start=1):
            session.add(WebhookAttempt(message_id="msg_1", endpoint_id=endpoint.id, attempt=number,
                                       status_code=code, error=None if code else "timed out"))
        session.commit()

    samples = scrape(api)
    assert value(samples, "dcgan_jobs", type="train", status="queued") == 1
    assert value(samples, "dcgan_jobs", type="train", status="running") == 2
    assert value(samples, "dcgan_jobs", type="generate", status="queued") == 1
    assert ("dcgan_jobs", (("status", "cancelled"), ("type", "generate"))) not in samples
    assert value(samples, "dcgan_queue_depth", queue="train") == 1
    assert value(samples, "dcgan_queue_depth", queue="generate") == 1
    assert value(samples, "dcgan_queue_depth", queue="evaluate") == 0
    assert 590 < value(samples, "dcgan_queue_oldest_job_age_seconds", queue="train") < 3600, queued.created_at
    assert value(samples, "dcgan_running_jobs", worker="gpu-host:41", type="train") == 1
    assert value(samples, "dcgan_running_jobs", worker="gpu-host:9", type="train") == 1
    assert value(samples, "dcgan_training_images_per_second", worker="gpu-host:41") == 850.5
    assert value(samples, "dcgan_training_step", worker="gpu-host:41") == 120
    assert ("dcgan_running_jobs", (("type", "train"), ("worker", "gpu-host:7"))) not in samples  # it lost the job
    assert value(samples, "dcgan_job_lease_expiries_total") == 1
    assert value(samples, "dcgan_job_retries_total") == 1
    assert value(samples, "dcgan_job_resumes_total") == 1
    assert value(samples, "dcgan_webhook_messages", status="delivered") == 1
    assert value(samples, "dcgan_webhook_messages", status="pending") == 1
    assert value(samples, "dcgan_webhook_deliveries_total", outcome="success") == 1
    assert value(samples, "dcgan_webhook_deliveries_total", outcome="failure") == 2


def test_the_metrics_token_is_required_when_set(engine, tmp_path, redis_client):
    app = make_app(engine, tmp_path, metrics_token="scrape-secret")
    try:
        client = app.test_client()
        keyed = authorized_client(app)  # an API key is not the metrics token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-secret"}, None):
            response = keyed.get("/metrics") if headers is None else client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.content_type == "application/problem+json"
            assert response.json["type"].endswith("/unauthorized") and "DCGAN_METRICS_TOKEN" in response.json["detail"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "dcgan_jobs" in {family.name for family in text_string_to_metric_families(
            client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).get_data(as_text=True))}
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_metrics_is_open_without_a_token_and_not_in_the_api_document(api):
    assert api.application.test_client().get("/metrics").status_code == 200
    assert "/metrics" not in api.get("/v1/openapi.json").json["paths"]
