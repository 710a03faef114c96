"""The job endpoints on real parts: SQLite and PostgreSQL, the real Redis broker (messages are read back
from the queue), LocalStore. The worker side is tested in tests/worker."""

import base64
import json
import uuid
from datetime import timedelta

import pytest

from core import jobs
from core.db import JobStatus, utcnow

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


def queued_messages(redis_client, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]


def test_submit_train_job_commits_then_enqueues(api, redis_client):
    response = api.post("/v1/jobs/train", json=TRAIN)
    assert response.status_code == 202
    job = response.json
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["attempt"] == 0 and job["config"]["steps"] == 20
    assert job["config"]["lr"] == 8e-4  # stored as the full validated config
    messages = queued_messages(redis_client, "train")
    assert [m["headers"]["task"] for m in messages] == ["dcgan.train"]
    assert messages[0]["headers"]["argsrepr"] == repr([job["id"]])
    assert api.get(job["links"]["get"]).json["id"] == job["id"]


def test_bad_train_requests(api, redis_client):
    bad = api.post("/v1/jobs/train", json={"dataset": str(uuid.uuid4()), "config": {"steps": 0, "foo": 1}})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json["errors"]} >= {"dataset", "config.foo"}
    assert api.post("/v1/jobs/train", data="x", content_type="text/plain").status_code == 415
    assert api.post("/v1/jobs/train", data="{", content_type="application/json").status_code == 400
    assert queued_messages(redis_client, "train") == []  # nothing half-done: no job, no message
    assert api.get("/v1/jobs").json["jobs"] == []


def test_a_train_job_may_ask_for_a_shorter_runtime_limit_than_the_servers(api):
    server_limit = api.application.config["SETTINGS"].max_job_seconds
    job = api.post("/v1/jobs/train", json={**TRAIN, "max_runtime_seconds": 90}).json
    assert job["request"] == {"dataset": "builtin:digits", "name": "digits", "max_runtime_seconds": 90}
    assert api.post("/v1/jobs/train", json={**TRAIN, "max_runtime_seconds": server_limit}).status_code == 202
    assert "max_runtime_seconds" not in api.post("/v1/jobs/train", json=TRAIN).json["request"]  # the server's
    for bad in (0, -5, server_limit + 1, 1.5, "60", True, None):
        response = api.post("/v1/jobs/train", json={**TRAIN, "max_runtime_seconds": bad})
        assert response.status_code == 422, bad
        assert [e["field"] for e in response.json["errors"]] == ["max_runtime_seconds"], bad
        assert str(server_limit) in response.json["errors"][0]["message"]
    assert len(api.get("/v1/jobs").json["jobs"]) == 3


@pytest.mark.parametrize("job_id", ["not-a-uuid", str(uuid.UUID(int=7))], ids=["not-a-uuid", "unknown-uuid"])
def test_unknown_job_is_404(api, job_id):
    for response in (api.get(f"/v1/jobs/{job_id}"), api.post(f"/v1/jobs/{job_id}/cancel"),
                     api.get(f"/v1/jobs/{job_id}/events")):
        assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_list_newest_first_with_filters_and_cursor(api):
    ids = [api.post("/v1/jobs/train", json=TRAIN).json["id"] for _ in range(5)]
    first = api.get("/v1/jobs?limit=2").json
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2] and first["next_cursor"]
    rest = api.get(f"/v1/jobs?limit=10&cursor={first['next_cursor']}").json
    assert [j["id"] for j in rest["jobs"]] == ids[::-1][2:] and rest["next_cursor"] is None
    assert api.get("/v1/jobs?type=generate").json["jobs"] == []
    assert len(api.get("/v1/jobs?status=queued").json["jobs"]) == 5
    bad = api.get("/v1/jobs?status=done&limit=0&cursor=zzz")
    assert bad.status_code == 422 and {e["field"] for e in bad.json["errors"]} == {"status", "limit"}
    assert api.get("/v1/jobs?cursor=zzz").status_code == 422


def test_cancel_queued_then_409(api):
    job = api.post("/v1/jobs/train", json=TRAIN).json
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json["status"] == "cancelled"
    again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json["type"] == "/problems/illegal-transition"
    kinds = [e["kind"] for e in api.get(f"/v1/jobs/{job['id']}/events").json["events"]]
    assert kinds[0] == "queued" and kinds[-1] == "cancelled"


def test_cancel_running_asks_the_worker(api, session_factory):
    job = api.post("/v1/jobs/train", json=TRAIN).json
    with session_factory() as session:
        assert jobs.claim_job(session, uuid.UUID(job["id"]), "test-worker", 60) == 1
        session.commit()
    response = api.post(f"/v1/jobs/{job['id']}/cancel").json
    assert response["status"] == "running" and response["cancel_requested"] is True


def test_generate_needs_a_succeeded_training_job(api, session_factory, redis_client):
    train = api.post("/v1/jobs/train", json=TRAIN).json
    early = api.post("/v1/jobs/generate", json={"generator_job": train["id"], "seeds": "0-7"})
    assert early.status_code == 422 and "not succeeded" in early.json["errors"][0]["message"]
    with session_factory() as session:
        attempt = jobs.claim_job(session, uuid.UUID(train["id"]), "w", 60)
        jobs.finish_job(session, uuid.UUID(train["id"]), attempt, JobStatus.SUCCEEDED)
        session.commit()
    ok = api.post("/v1/jobs/generate", json={"generator_job": train["id"], "seeds": "0-7", "truncation": 0.7})
    assert ok.status_code == 202 and ok.json["type"] == "generate"
    assert ok.json["request"]["seeds"] == "0-7" and ok.json["request"]["truncation"] == 0.7  # kept as ranges
    assert [m["headers"]["task"] for m in queued_messages(redis_client, "generate")] == ["dcgan.generate"]
    bad = api.post("/v1/jobs/generate", json={"generator_job": "nope", "seeds": "9-1", "truncation": 2,
                                              "nrow": 0, "extra": 1})
    assert {e["field"] for e in bad.json["errors"]} == {"generator_job", "seeds", "truncation", "nrow", "extra"}


@pytest.mark.parametrize("path", ["/v1/jobs/train", "/v1/jobs/generate"])
def test_json_endpoints_share_the_error_contract(api, path):
    cases = [(api.post(path, data="{", content_type="application/json"), 400),
             (api.post(path, data="a=b", content_type="application/x-www-form-urlencoded"), 415),
             (api.post(path, json={"unknown": 1}), 422),
             (api.delete(path), 405)]
    for response, status in cases:
        assert response.status_code == status and response.mimetype == "application/problem+json"
        body = response.json
        assert body["status"] == status and body["type"].startswith("/problems/") and "Traceback" not in body["detail"]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("query", [
    {"cursor": _cursor("0001-01-01T00:00:00+14:00|00000000-0000-0000-0000-000000000000")},  # before year 1 in UTC
    {"cursor": _cursor("9999-12-31T23:59:59-14:00|00000000-0000-0000-0000-000000000000")},  # after year 9999
    {"cursor": _cursor("2026-12-01T00:00:00|00000000-0000-0000-0000-000000000000")},  # no zone
    {"cursor": _cursor("2026-12-01T00:00:00+00:00|not-a-uuid")},
    {"sort": "best_fid", "cursor": _cursor("fid|inf|00000000-0000-0000-0000-000000000000")},
    {"sort": "best_fid", "cursor": _cursor("fid|nan|00000000-0000-0000-0000-000000000000")},
    {"sort": "best_fid", "cursor": _cursor("fid|0x1p+2000|00000000-0000-0000-0000-000000000000")},
], ids=["year-0", "year-10000", "naive", "bad-id", "fid-inf", "fid-nan", "fid-overflow"])
def test_a_cursor_no_page_could_have_given_is_422_not_500(api, query):
    response = api.get("/v1/jobs", query_string=query)
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert [e["field"] for e in response.json["errors"]] == ["cursor"]


def test_events_and_streams_do_not_show_tenants_the_workers_host_names(api, session_factory):
    """Worker names are host:pid; the database keeps them for operators, the API leaves them out."""
    job_id = api.post("/v1/jobs/train", json=TRAIN).json["id"]
    with session_factory() as session:
        first = jobs.claim_job(session, uuid.UUID(job_id), "gpu-host-7.internal:4242", 60)
        session.commit()
        # Its lease runs out and another worker takes it over ("reclaimed_by"), then finishes it.
        second = jobs.claim_job(session, uuid.UUID(job_id), "gpu-host-8.internal:99", 60,
                                now=utcnow() + timedelta(seconds=120))
        assert second == first + 1
        jobs.finish_job(session, uuid.UUID(job_id), second, JobStatus.SUCCEEDED)
        session.commit()
        kept = [e.detail for e in jobs.list_events(session, uuid.UUID(job_id))]
    assert any("gpu-host-7" in json.dumps(detail) for detail in kept)  # still there for operators
    timeline = api.get(f"/v1/jobs/{job_id}/events").get_data(as_text=True)
    stream = api.get(f"/v1/jobs/{job_id}/stream").get_data(as_text=True)  # a finished job's stream replays, ends
    assert "lease_expired" in timeline and "claimed" in timeline and "claimed" in stream
    for text in (timeline, stream):
        assert "gpu-host" not in text and "reclaimed_by" not in text
