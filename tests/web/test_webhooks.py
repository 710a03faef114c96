"""/v1/webhooks on SQLite and PostgreSQL: registering (the secret shown once), the SSRF guard and bad input as
422 naming the field, tenancy, secret rotation, the delivery log and a manual retry to a real receiver on
loopback (with the private-address and http overrides on)."""

from __future__ import annotations

import uuid

import pytest
from standardwebhooks import Webhook

from core import jobs
from core.job_view import job_links
from core.webhook_delivery import disable_endpoint
from tests.web.conftest import authorized_client, make_app
from tests.webhook_receiver import Receiver

PUBLIC_URL = "https://93.184.215.14/hooks"  # a public address literal: no DNS needed


@pytest.fixture
def open_app(engine, tmp_path, redis_client):
    """The API with the overrides a test receiver on loopback needs."""
    app = make_app(engine, tmp_path, webhook_allow_http=True, webhook_allow_private=True)
    yield app
    app.extensions["dcgan"]["engine"].dispose()


def test_register_shows_the_secret_once_and_reads_list_and_delete_never_do(api):
    created = api.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.succeeded", "job.failed"],
                                             "description": "ci"})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["secret"].startswith("whsec_") and Webhook(body["secret"])
    assert (body["url"], body["events"], body["description"], body["enabled"]) == (
        PUBLIC_URL, ["job.succeeded", "job.failed"], "ci", True)
    assert created.headers["Location"].endswith(f"/v1/webhooks/{body['id']}")
    shown = api.get(f"/v1/webhooks/{body['id']}").json
    assert "secret" not in shown and shown["id"] == body["id"]
    assert [w["id"] for w in api.get("/v1/webhooks").json["webhooks"]] == [body["id"]]
    assert body["secret"] not in api.get("/v1/webhooks").get_data(as_text=True)
    assert api.delete(f"/v1/webhooks/{body['id']}").status_code == 204
    assert api.get(f"/v1/webhooks/{body['id']}").status_code == 404


@pytest.mark.parametrize("url, says", [
    ("https://127.0.0.1/hook", "loopback"), ("https://10.0.0.7/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "metadata"), ("https://[::1]:8443/hook", "loopback"),
    ("https://localhost/hook", "loopback"), ("http://93.184.215.14/hook", "https"), ("ftp://x/", "https"),
    ("https://user:pw@93.184.215.14/", "credentials"), ("not a url", "spaces")])
def test_refused_urls_are_422_naming_the_url(api, url, says):
    response = api.post("/v1/webhooks", json={"url": url, "events": ["job.succeeded"]})
    assert response.status_code == 422 and response.mimetype == "application/problem+json", response.json
    [error] = response.json["errors"]
    assert error["field"] == "url" and says in error["message"], error
    assert api.get("/v1/webhooks").json["webhooks"] == []


@pytest.mark.parametrize("body, field", [
    ({"url": PUBLIC_URL, "events": ["job.nope"]}, "events"), ({"url": PUBLIC_URL, "events": []}, "events"),
    ({"url": PUBLIC_URL, "events": "job.succeeded"}, "events"), ({"events": ["job.succeeded"]}, "url"),
    ({"url": PUBLIC_URL, "events": ["job.succeeded"], "secret": "mine"}, "secret"),
    ({"url": PUBLIC_URL, "events": ["job.succeeded"], "description": "x" * 501}, "description")])
def test_bad_bodies_are_422_naming_the_field(api, body, field):
    response = api.post("/v1/webhooks", json=body)
    assert response.status_code == 422 and field in {e["field"] for e in response.json["errors"]}, response.json


def test_another_tenants_endpoint_is_404_everywhere(api, api_app):
    hook = api.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.queued"]}).json["id"]
    other = authorized_client(api_app, tenant="other")
    assert other.get("/v1/webhooks").json["webhooks"] == []
    for method, path in (("get", ""), ("delete", ""), ("post", "/rotate-secret"), ("get", "/deliveries"),
                         ("post", "/deliveries/msg_x/retry")):
        assert getattr(other, method)(f"/v1/webhooks/{hook}{path}").status_code == 404, path
    assert api.get(f"/v1/webhooks/{hook}").status_code == 200
    assert api.get(f"/v1/webhooks/{uuid.uuid4()}").status_code == 404
    assert api.get("/v1/webhooks/not-an-id").status_code == 404


def test_rotate_secret_shows_the_new_one_once_and_states_the_overlap(api):
    first = api.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.queued"]}).json
    rotated = api.post(f"/v1/webhooks/{first['id']}/rotate-secret")
    assert rotated.status_code == 200
    body = rotated.json
    assert body["secret"].startswith("whsec_") and body["secret"] != first["secret"]
    assert body["previous_secret_overlap_seconds"] == 86400 and "86400 s" in body["detail"]
    assert body["previous_secret_expires_at"] is not None
    assert api.get(f"/v1/webhooks/{first['id']}").json["previous_secret_expires_at"] == body[
        "previous_secret_expires_at"]


def test_a_repeated_registration_or_rotation_with_one_idempotency_key_is_answered_once(api):
    """A client whose answer was lost asks again: it gets the same secret back, and a rotation is not done twice
    (a second one would end the overlap of the secret its receiver still checks)."""
    key = {"Idempotency-Key": "hook-1"}
    first = api.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.queued"]}, headers=key)
    again = api.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.queued"]}, headers=key)
    assert (first.status_code, again.status_code) == (201, 201) and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [hook["id"] for hook in api.get("/v1/webhooks").json["webhooks"]] == [first.json["id"]]
    rotate = f"/v1/webhooks/{first.json['id']}/rotate-secret"
    once = api.post(rotate, headers={"Idempotency-Key": "rotate-1"})
    twice = api.post(rotate, headers={"Idempotency-Key": "rotate-1"})
    assert twice.json["secret"] == once.json["secret"] != first.json["secret"]
    third = api.post(rotate, headers={"Idempotency-Key": "rotate-2"})
    assert third.json["secret"] not in (once.json["secret"], first.json["secret"])


def test_a_retry_sends_the_message_again_with_the_same_id_and_the_log_shows_each_attempt(open_app):
    api = authorized_client(open_app)
    with Receiver(script=[500, 200]) as receiver:
        hook = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.queued"]}).json
        with open_app.extensions["dcgan"]["sessions"]() as session:
            job = jobs.create_job(session, api.tenant_id, "train", {"steps": 1}, {"dataset": "builtin:digits"})
            session.commit()
            job_id = str(job.id)
        [message] = api.get(f"/v1/webhooks/{hook['id']}/deliveries").json["deliveries"]
        assert (message["event_type"], message["job_id"], message["status"]) == ("job.queued", job_id, "pending")
        retry = f"/v1/webhooks/{hook['id']}/deliveries/{message['id']}/retry"
        first = api.post(retry).json
        assert (first["status"], first["attempts"], first["last_error"]) == ("pending", 1, "HTTP 500")
        second = api.post(retry).json
        assert (second["status"], second["attempts"]) == ("delivered", 2)
        assert [(a["status_code"], a["trigger"]) for a in second["attempt_log"]] == [(500, "manual"), (200, "manual")]
        assert all(a["latency_ms"] >= 0 for a in second["attempt_log"])
        assert [r.headers["webhook-id"] for r in receiver.received] == [message["id"]] * 2
        payload = Webhook(hook["secret"]).verify(receiver.received[-1].body, receiver.received[-1].headers)
        assert payload["type"] == "job.queued" and payload["data"]["id"] == job_id
        assert payload["data"] == api.get(f"/v1/jobs/{job_id}").json  # the job as a poll shows it
        [logged] = api.get(f"/v1/webhooks/{hook['id']}/deliveries").json["deliveries"]
        assert logged["status"] == "delivered" and len(logged["attempt_log"]) == 2
    assert api.post(f"/v1/webhooks/{hook['id']}/deliveries/msg_nope/retry").status_code == 404
    with open_app.extensions["dcgan"]["sessions"]() as session:  # as a 410 from the receiver leaves it
        disable_endpoint(session, uuid.UUID(hook["id"]), "the receiver answered 410 Gone")
        session.commit()
    refused = api.post(retry)
    assert refused.status_code == 409 and "410 Gone" in refused.json["detail"]
    assert api.get(f"/v1/webhooks/{hook['id']}").json["enabled"] is False


def test_the_job_links_core_builds_are_the_ones_the_api_routes(api):
    job = api.post("/v1/jobs/train", json={"dataset": "builtin:digits",
                                           "config": {"steps": 5, "img_size": 32, "img_channels": 1}}).json
    assert job["links"] == job_links(job["id"])
