"""A job's history over the API (issue 9): /metrics, /samples and the /stream of Server-Sent Events, on
SQLite and PostgreSQL with the real Redis broker and a LocalStore. The rows are written with core.jobs the
way the worker writes them; tests/e2e/test_stream.py reads the stream of a real training run over HTTP."""

from __future__ import annotations

import json
import uuid

import pytest

from core import jobs
from core.storage import sample_key
from tests.web.conftest import authorized_client, make_app

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def values(loss: float) -> dict:
    return {"loss_d": loss, "loss_g": 2 * loss, "d_real": 0.6, "d_fake": 0.4, "images_per_second": 100.0}


def run_job(app, client, steps: int = 100, finish: str | None = "succeeded") -> tuple[str, uuid.UUID]:
    """A train job that a worker claimed and logged `steps` steps of (one point each 10), with a sample
    at each 50 and a checkpoint, finished as `finish`."""
    job_id = client.post("/v1/jobs/train", json=TRAIN).json["id"]
    parsed = uuid.UUID(job_id)
    store = app.extensions["dcgan"]["store"]
    with app.extensions["dcgan"]["sessions"]() as session:
        attempt = jobs.claim_job(session, parsed, "w", 60)
        for step in range(10, steps + 1, 10):
            assert jobs.record_progress(session, parsed, attempt, {"step": step, "total_steps": steps},
                                        [(step, values(1 / step))])
            if step % 50 == 0:
                key = sample_key(client.tenant_id, parsed, step)
                stored = store.put_bytes(key, PNG + bytes([step % 256]))
                assert jobs.record_artifact(session, parsed, attempt, f"samples/step-{step:07d}.png", key,
                                            stored.size, stored.sha256, "image/png", step)
                assert jobs.record_event(session, parsed, attempt, "sample", {"step": step})
        assert jobs.set_checkpoint(session, parsed, attempt, f"jobs/{job_id}/checkpoints/x.pt", steps)
        if finish:
            assert jobs.finish_job(session, parsed, attempt, finish, *(("data_error", "no images") if
                                                                     finish == "failed" else ()))
        session.commit()
    return job_id, parsed


def parse(body: str) -> list[dict]:
    """The events of a text/event-stream body: id, event and JSON data of each (comments dropped)."""
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


def test_metrics_are_every_logged_step_in_order(api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=1000)
    answer = client.get(f"/v1/jobs/{job_id}/metrics").json
    assert answer["interval"] == 10 and answer["total_points"] == 100
    assert [p["step"] for p in answer["points"]] == list(range(10, 1001, 10))
    assert answer["points"][0] == {"step": 10, **values(0.1), "at": answer["points"][0]["at"]}


def test_max_points_spreads_evenly_and_keeps_the_first_and_the_last(api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=1000)
    steps = [p["step"] for p in client.get(f"/v1/jobs/{job_id}/metrics?max_points=12").json["points"]]
    assert len(steps) == 12 and steps[0] == 10 and steps[-1] == 1000 and steps == sorted(set(steps))
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert max(gaps) - min(gaps) <= 10  # even, to within one logged step
    assert len(client.get(f"/v1/jobs/{job_id}/metrics?max_points=10000").json["points"]) == 100
    for bad in ("1", "0", "x", "10001", "2.5"):
        response = client.get(f"/v1/jobs/{job_id}/metrics?max_points={bad}")
        assert response.status_code == 422 and response.mimetype == "application/problem+json", bad
        assert [e["field"] for e in response.json["errors"]] == ["max_points"]


def test_a_job_without_history_has_no_points(api):
    job = api.post("/v1/jobs/train", json=TRAIN).json
    job_id = job["id"]
    assert {name: job["links"][name] for name in ("metrics", "samples", "stream")} == {
        "metrics": f"/v1/jobs/{job_id}/metrics", "samples": f"/v1/jobs/{job_id}/samples",
        "stream": f"/v1/jobs/{job_id}/stream"}
    assert api.get(f"/v1/jobs/{job_id}/metrics").json["points"] == []
    assert api.get(f"/v1/jobs/{job_id}/samples").json == {"samples": []}


def test_samples_list_and_serve_each_grid(api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=100)
    samples = client.get(f"/v1/jobs/{job_id}/samples").json["samples"]
    assert samples == [{"step": 50, "url": f"/v1/jobs/{job_id}/samples/50"},
                       {"step": 100, "url": f"/v1/jobs/{job_id}/samples/100"}]
    grid = client.get(samples[1]["url"])
    assert grid.status_code == 200 and grid.mimetype == "image/png" and grid.data == PNG + bytes([100])
    for step in (60, 99_999_999):
        missing = client.get(f"/v1/jobs/{job_id}/samples/{step}")
        assert missing.status_code == 404 and missing.mimetype == "application/problem+json"


def test_the_stream_of_a_finished_job_replays_everything_then_completed_and_ends(api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=100, finish="failed")
    response = client.get(f"/v1/jobs/{job_id}/stream")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    events = parse(response.get_data(as_text=True))
    names = [e["event"] for e in events]
    assert names[:2] == ["status", "status"] and names[-2:] == ["status", "completed"]
    assert names.count("progress") == 10 and names.count("sample") == 2 and names.count("checkpoint") == 1
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})  # increasing, no repeats
    assert events[0]["data"]["kind"] == "queued" and events[1]["data"]["status"] == "running"
    samples = [e["data"] for e in events if e["event"] == "sample"]
    assert samples[0] == {"step": 50, "url": f"/v1/jobs/{job_id}/samples/50"}
    assert events[-1]["data"] == {"status": "failed", "error": {"type": "data_error", "detail": "no images"}}


def test_last_event_id_resumes_exactly_after_that_event(api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=100)
    everything = parse(client.get(f"/v1/jobs/{job_id}/stream").get_data(as_text=True))
    middle = everything[7]["id"]
    rest = parse(client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": str(middle)})
                 .get_data(as_text=True))
    assert rest == everything[8:]
    last = everything[-1]["id"]
    assert parse(client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": str(last)})
                 .get_data(as_text=True)) == []  # nothing after the end, and the stream closes
    for bad in ("x", "-1", "1.5", "9" * 19):
        response = client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": bad})
        assert response.status_code == 400 and response.json["type"] == "/problems/bad-last-event-id", bad


def test_the_stream_of_a_running_job_sends_new_events_as_they_are_committed(api_app):
    client = authorized_client(api_app)
    job_id, parsed = run_job(api_app, client, steps=20, finish=None)
    response = client.get(f"/v1/jobs/{job_id}/stream")
    chunks = iter(response.response)
    seen = []
    while not seen or seen[-1]["event"] != "checkpoint":
        seen += parse(next(chunks).decode())
    with api_app.extensions["dcgan"]["sessions"]() as session:  # the worker, meanwhile
        attempt = session.get(jobs.Job, parsed).attempt
        jobs.record_progress(session, parsed, attempt, {"step": 30}, [(30, values(0.5))])
        session.commit()
        jobs.finish_job(session, parsed, attempt, "succeeded")
        session.commit()
    before = len(seen)
    while seen[-1]["event"] != "completed":
        seen += parse(next(chunks).decode())
    assert [e["event"] for e in seen[before:]] == ["progress", "status", "completed"]
    assert seen[before]["data"] == {"step": 30} and seen[-1]["data"]["status"] == "succeeded"
    with pytest.raises(StopIteration):  # the stream ends after completed
        next(chunks)


def test_another_tenants_stream_metrics_and_samples_are_404(api_app):
    owner, other = authorized_client(api_app, "owner"), authorized_client(api_app, "other")
    job_id, _ = run_job(api_app, owner, steps=50)
    for path in ("stream", "metrics", "samples", "samples/50"):
        response = other.get(f"/v1/jobs/{job_id}/{path}")
        assert response.status_code == 404 and response.mimetype == "application/problem+json", path
        assert owner.get(f"/v1/jobs/{job_id}/{path}").status_code == 200, path


def test_streams_beyond_the_processes_limit_are_refused_with_503_and_freed_when_closed(engine, tmp_path,
                                                                                       redis_client):
    app = make_app(engine, tmp_path, max_streams=2)
    client = authorized_client(app)
    job_id = client.post("/v1/jobs/train", json=TRAIN).json["id"]  # queued: its stream stays open
    open_streams = [client.get(f"/v1/jobs/{job_id}/stream") for _ in range(2)]
    refused = client.get(f"/v1/jobs/{job_id}/stream")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json["type"] == "/problems/too-many-streams"
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200  # polls are still answered
    open_streams[0].close()  # the client went away
    assert client.get(f"/v1/jobs/{job_id}/stream").status_code == 200
    app.extensions["dcgan"]["engine"].dispose()


def test_the_openapi_document_lists_the_new_routes(api):
    paths = api.get("/v1/openapi.json").json["paths"]
    for path in ("/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/samples", "/v1/jobs/{job_id}/samples/{step}",
                 "/v1/jobs/{job_id}/stream"):
        assert "get" in paths[path], path
    parameters = {p["name"] for p in paths["/v1/jobs/{job_id}/metrics"]["get"]["parameters"]}
    assert "max_points" in parameters


def test_two_streams_of_one_job_joining_at_different_points_each_get_exactly_their_events(api_app):
    """One hub thread reads for both (web.stream.StreamHub): the later one, which asks from an earlier id,
    is caught up without the first one seeing anything twice."""
    client = authorized_client(api_app)
    job_id, parsed = run_job(api_app, client, steps=20, finish=None)
    everything = []
    first = iter(client.get(f"/v1/jobs/{job_id}/stream").response)
    while not everything or everything[-1]["event"] != "checkpoint":
        everything += parse(next(first).decode())
    second = iter(client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": str(everything[1]["id"])})
                  .response)
    seen_by_second = []
    while not seen_by_second or seen_by_second[-1]["event"] != "checkpoint":
        seen_by_second += parse(next(second).decode())
    assert seen_by_second == everything[2:]
    with api_app.extensions["dcgan"]["sessions"]() as session:
        attempt = session.get(jobs.Job, parsed).attempt
        jobs.finish_job(session, parsed, attempt, "cancelled")
        session.commit()
    for chunks, seen in ((first, everything), (second, seen_by_second)):
        while seen[-1]["event"] != "completed":
            seen += parse(next(chunks).decode())
    assert seen_by_second == everything[2:]
    assert [e["event"] for e in everything[-2:]] == ["status", "completed"]
    assert len({e["id"] for e in everything}) == len(everything)


def test_a_replay_longer_than_one_hub_read_arrives_whole(api_app, monkeypatch):
    import web.stream

    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=100)
    expected = parse(client.get(f"/v1/jobs/{job_id}/stream").get_data(as_text=True))
    monkeypatch.setattr(web.stream, "READ_BATCH", 3)
    monkeypatch.setattr(web.stream, "POLL_SECONDS", 0.01)
    assert parse(client.get(f"/v1/jobs/{job_id}/stream").get_data(as_text=True)) == expected
    assert len(expected) > 15


def test_last_event_id_may_come_in_the_query_for_a_first_connection_and_the_timeline_says_where_to_start(
        api_app):
    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=100)
    everything = parse(client.get(f"/v1/jobs/{job_id}/stream").get_data(as_text=True))
    timeline = client.get(f"/v1/jobs/{job_id}/events").json
    assert timeline["last_event_id"] == everything[-1]["id"]  # stream-only events count too
    assert [e["id"] for e in timeline["events"]] == [e["id"] for e in everything if e["event"] == "status"]
    middle = everything[5]["id"]
    by_query = client.get(f"/v1/jobs/{job_id}/stream?last_event_id={middle}")
    assert parse(by_query.get_data(as_text=True)) == everything[6:]
    header_wins = client.get(f"/v1/jobs/{job_id}/stream?last_event_id=0", headers={"Last-Event-ID": str(middle)})
    assert parse(header_wins.get_data(as_text=True)) == everything[6:]
    bad = client.get(f"/v1/jobs/{job_id}/stream?last_event_id=-3")
    assert bad.status_code == 422 and [e["field"] for e in bad.json["errors"]] == ["last_event_id"]


def test_an_event_written_while_the_timeline_is_read_is_listed_or_left_to_the_stream(api_app, monkeypatch):
    # The timeline is two queries (the events, the newest id); a worker may write an event between them. Each
    # event must be either in the list or after last_event_id, where the stream sends it, never neither.
    client = authorized_client(api_app)
    job_id, parsed = run_job(api_app, client, steps=20, finish=None)
    written: list[bool] = []

    def then_a_worker_writes(read):
        def wrapped(session, *args, **kwargs):
            result = read(session, *args, **kwargs)
            if not written:
                with api_app.extensions["dcgan"]["sessions"]() as other:
                    written.append(jobs.record_event(other, parsed, 1, "log", {"message": "between the reads"}))
                    other.commit()
            return result
        return wrapped

    for name in ("list_events", "newest_event_id"):
        monkeypatch.setattr(jobs, name, then_a_worker_writes(getattr(jobs, name)))
    timeline = client.get(f"/v1/jobs/{job_id}/events").json
    assert written == [True]
    monkeypatch.undo()
    everything = client.get(f"/v1/jobs/{job_id}/events").json["events"]
    listed = {e["id"] for e in timeline["events"]}
    lost = [e for e in everything if e["id"] not in listed and e["id"] <= timeline["last_event_id"]]
    assert not lost and everything[-1]["detail"] == {"message": "between the reads"}, (timeline, everything)


def test_when_the_hub_cannot_read_its_streams_end_so_their_clients_reconnect(api_app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    client = authorized_client(api_app)
    job_id, _ = run_job(api_app, client, steps=20, finish=None)
    chunks = iter(client.get(f"/v1/jobs/{job_id}/stream").response)
    seen = []
    while not seen or seen[-1]["event"] != "checkpoint":
        seen += parse(next(chunks).decode())
    hub = api_app.extensions["dcgan"]["stream_hub"]

    def unreachable(_cursors):
        raise OperationalError("SELECT", {}, Exception("the database is gone"))

    monkeypatch.setattr(hub, "_read", unreachable)
    with pytest.raises(StopIteration):  # no `completed`: the stream just ends, and EventSource reconnects
        while True:
            assert parse(next(chunks).decode()) == []
    monkeypatch.undo()
    again = client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": str(seen[-1]["id"])})
    assert again.status_code == 200  # the hub starts again with the next stream
    assert api_app.extensions["dcgan"]["stream_slots"].acquire(blocking=False)  # the ended stream gave its slot back
