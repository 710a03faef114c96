"""API keys at the door of every /v1/ route, the per-key rate limit (real Redis) and the cap on queued jobs,
on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import socket
import time
import uuid

import pytest
from sqlalchemy import select

from core.auth import create_key, revoke_key
from core.db import Job, Tenant
from tests.web.conftest import authorized_client, make_app

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


def _assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == "/problems/unauthorized" and response.json["status"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _revoked_key(app) -> str:
    with app.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, "tests")
        revoke_key(session, secret)
        session.commit()
    return secret


def test_every_v1_route_needs_a_valid_key(api_app, api, redis_client):
    job_id = api.post("/v1/jobs/train", json=TRAIN).json["id"]  # something to ask about
    client = api_app.test_client()  # sends no key
    headers_cases = {
        "no header": {},
        "another scheme": {"Authorization": f"Basic {api.api_key}"},
        "no key": {"Authorization": "Bearer "},
        "two words": {"Authorization": f"Bearer {api.api_key} extra"},
        "unknown key": {"Authorization": "Bearer dcg_" + "x" * 43},
        "revoked key": {"Authorization": f"Bearer {_revoked_key(api_app)}"},
    }
    requests = [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events"),
                ("GET", f"/v1/jobs/{job_id}/grid"), ("GET", f"/v1/jobs/{job_id}/artifacts"),
                ("POST", f"/v1/jobs/{job_id}/cancel"), ("POST", "/v1/jobs/train"), ("GET", "/v1/datasets"),
                ("POST", "/v1/datasets")]
    for number, (case, headers) in enumerate(headers_cases.items()):
        for method, path in requests:
            # Each case from an address of its own: its refusals stay under DCGAN_FAILED_AUTH_PER_MINUTE.
            response = client.open(path, method=method, headers=headers, environ_overrides={
                "REMOTE_ADDR": f"192.0.2.{number + 1}"}, json=TRAIN if path == "/v1/jobs/train" else None)
            _assert_unauthorized(response)
    # Nothing was done for them: one job, still queued, one message.
    assert [j["id"] for j in api.get("/v1/jobs").json["jobs"]] == [job_id]
    assert api.get(f"/v1/jobs/{job_id}").json["status"] == "queued"
    assert redis_client.llen("train") == 1


def test_health_and_the_openapi_document_stay_open(api_app):
    client = api_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    document = client.get("/v1/openapi.json")
    assert document.status_code == 200 and document.json["openapi"].startswith("3.")
    # A path that names no route is a 404 without a key too: nothing is behind it.
    assert client.get("/v1/no-such-thing").status_code == 404


def test_the_key_decides_the_tenant_and_no_default_tenant_is_made(api_app, api):
    job_id = api.post("/v1/jobs/train", json=TRAIN).json["id"]
    with api_app.extensions["dcgan"]["sessions"]() as session:
        assert session.get(Job, uuid.UUID(job_id)).tenant_id == api.tenant_id
        assert session.scalars(select(Tenant.name)).all() == ["tests"]


def _same_minute(action):
    """Run `action` inside one rate-limit window (again if the minute turned while it ran)."""
    for _ in range(3):
        window = int(time.time() // 60)
        result = action()
        if int(time.time() // 60) == window:
            return result
    pytest.fail("the minute turned three times in a row")


def test_rate_limit_per_key(engine, tmp_path, redis_client):
    app = make_app(engine, tmp_path, rate_limit_per_minute=3)
    try:
        first, second = authorized_client(app), authorized_client(app)

        def burst():
            redis_client.flushdb()
            return [first.get("/v1/jobs") for _ in range(4)], second.get("/v1/jobs")

        answers, other_key = _same_minute(burst)
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.mimetype == "application/problem+json" and limited.json["type"] == "/problems/rate-limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert other_key.status_code == 200  # counted per key
        assert any(name.startswith(b"dcgan:ratelimit:") for name in redis_client.keys())
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_the_window_moves_on(engine, tmp_path, redis_client):
    """A key's window starts with its first request and lasts a minute: the refused request is told the
    seconds left in it (the counter's TTL in Redis), and once it has passed the key is served again."""
    app = make_app(engine, tmp_path, rate_limit_per_minute=2)
    try:
        client = authorized_client(app)
        redis_client.flushdb()
        answers = [client.get("/v1/jobs") for _ in range(3)]
        [counter] = [name for name in redis_client.keys() if name.startswith(b"dcgan:ratelimit:")]
        assert [r.status_code for r in answers] == [200, 200, 429]
        left = redis_client.ttl(counter)
        assert 55 <= left <= int(answers[-1].headers["Retry-After"]) <= left + 1 <= 61
        redis_client.expire(counter, 1)  # the window's last second
        late = client.get("/v1/jobs")
        assert late.status_code == 429 and late.headers["Retry-After"] == "1"
        time.sleep(1.2)  # the next window
        assert client.get("/v1/jobs").status_code == 200
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_queued_jobs_cap(engine, tmp_path, redis_client, session_factory):
    from core import jobs

    app = make_app(engine, tmp_path, max_queued_jobs=2)
    try:
        client, other = authorized_client(app, "capped"), authorized_client(app, "someone-else")
        accepted = [client.post("/v1/jobs/train", json=TRAIN) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202]
        refused = client.post("/v1/jobs/train", json=TRAIN)
        assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
        assert refused.json["type"] == "/problems/too-many-queued-jobs" and int(refused.headers["Retry-After"]) > 0
        assert len(client.get("/v1/jobs").json["jobs"]) == 2 and redis_client.llen("train") == 2

        # Generation counts too: finish one training job so a generate job can be asked for.
        finished = accepted[0].json["id"]
        with session_factory() as session:
            attempt = jobs.claim_job(session, uuid.UUID(finished), "w", 60)
            jobs.finish_job(session, uuid.UUID(finished), attempt, "succeeded")
            session.commit()
        assert client.post("/v1/jobs/generate", json={"generator_job": finished, "seeds": "0-3"}).status_code == 202
        generate = client.post("/v1/jobs/generate", json={"generator_job": finished, "seeds": "0-3"})
        assert generate.status_code == 429 and "Retry-After" in generate.headers

        assert other.post("/v1/jobs/train", json=TRAIN).status_code == 202  # the cap is per tenant
        queued = client.get("/v1/jobs?status=queued").json["jobs"]
        assert client.post(f"/v1/jobs/{queued[0]['id']}/cancel").status_code == 202
        assert client.post("/v1/jobs/train", json=TRAIN).status_code == 202  # room again
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def _closed_port() -> int:
    with socket.socket() as sock:  # free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_down_fails_open(engine, tmp_path, caplog, session_factory):
    """Without Redis the rate limit is not enforced (logged) and a submitted job is still 202: it stays
    queued in the database, unpublished, for the reaper."""
    app = make_app(engine, tmp_path, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", rate_limit_per_minute=1)
    try:
        client = authorized_client(app)
        with caplog.at_level(logging.WARNING):
            assert [client.get("/v1/jobs").status_code for _ in range(3)] == [200, 200, 200]
            submitted = client.post("/v1/jobs/train", json=TRAIN)
        assert submitted.status_code == 202, submitted.json
        assert submitted.headers["Location"] == f"/v1/jobs/{submitted.json['id']}"
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "rate limit not enforced" in messages and "not published" in messages
        with session_factory() as session:
            job = session.get(Job, uuid.UUID(submitted.json["id"]))
            assert job.status == "queued" and job.published_at is None and job.publish_count == 0
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_a_published_job_is_marked(api, session_factory):
    submitted = api.post("/v1/jobs/train", json=TRAIN)
    with session_factory() as session:
        job = session.get(Job, uuid.UUID(submitted.json["id"]))
        assert job.published_at is not None and job.publish_count == 1


def test_the_openapi_document_declares_keys_limits_and_idempotency():
    from web.openapi import openapi_document

    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearer"] == {**document["components"]["securitySchemes"][
        "bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in ("/healthz", "/readyz", "/v1/openapi.json"):
                assert operation["security"] == [], path
                continue
            assert {"401", "429"} <= set(operation["responses"]), (method, path)
            # Every POST takes an Idempotency-Key but the ones whose repeat is harmless: a cancel, and a
            # webhook delivery's retry (asking to send again).
            creates = method == "post" and not path.endswith(("/cancel", "/retry"))
            has_key = {"$ref": "#/components/parameters/IdempotencyKey"} in operation.get("parameters", [])
            assert has_key == creates, (method, path)
    assert document["components"]["parameters"]["IdempotencyKey"]["in"] == "header"
    validator = pytest.importorskip("openapi_spec_validator")  # comes with moto[server]
    validator.validate(document)
