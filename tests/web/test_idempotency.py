"""Idempotency-Key on the creating POSTs, on SQLite and PostgreSQL with the real Redis broker: a repeated
request creates nothing and publishes nothing, a reused key with another request is a 422, keys belong to
a tenant, and concurrent requests with one key create exactly one job or dataset."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select, text

from core.db import Dataset, IdempotencyRecord, Job
from tests.web.conftest import authorized_client

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


def _key() -> str:
    return f"test-{uuid.uuid4()}"


def _count(app, model) -> int:
    with app.extensions["dcgan"]["sessions"]() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_repeated_request_replays_the_first_answer(api_app, api, redis_client):
    key = _key()
    first = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    # The same JSON with other spacing and key order is the same request.
    again = api.post("/v1/jobs/train", headers={"Idempotency-Key": key}, content_type="application/json",
                     data=json.dumps({"config": {"img_channels": 1, "img_size": 32, "steps": 20},
                                      "dataset": "builtin:digits"}, indent=2))
    assert again.status_code == 202 and again.json == first.json
    assert again.headers["Location"] == first.headers["Location"] == f"/v1/jobs/{first.json['id']}"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(api_app, Job) == 1 and redis_client.llen("train") == 1  # created and published once
    # The replay is the original answer, not the job as it is now.
    assert api.post(f"/v1/jobs/{first.json['id']}/cancel").status_code == 202
    assert api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).json["status"] == "queued"
    with api_app.extensions["dcgan"]["sessions"]() as session:
        assert session.get(Job, uuid.UUID(first.json["id"])).idempotency_key == key


def test_a_key_is_free_again_once_the_reaper_deletes_its_expired_record(api_app, api, redis_client):
    from datetime import timedelta

    from core.db import utcnow
    from core.reaper import delete_expired_idempotency_records

    key, other_key = _key(), _key()
    first = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).json
    with api_app.extensions["dcgan"]["sessions"]() as session:
        assert delete_expired_idempotency_records(session, 24, now=utcnow() + timedelta(hours=23)) == 0
        session.commit()
    assert api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).json == first  # replayed
    with api_app.extensions["dcgan"]["sessions"]() as session:
        session.add(IdempotencyRecord(tenant_id=api.tenant_id, key=other_key, request_hash="0" * 64,
                                      response_status=202, response_body={},
                                      created_at=utcnow() + timedelta(hours=2)))  # made later: kept
        assert delete_expired_idempotency_records(session, 24, now=utcnow() + timedelta(hours=25)) == 1
        session.commit()
    again = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert again.json["id"] != first["id"] and _count(api_app, Job) == 2
    assert _count(api_app, IdempotencyRecord) == 2  # the new answer for `key`, and `other_key`'s


def test_a_reused_key_with_another_request_is_422(api_app, api, redis_client, session_factory):
    key = _key()
    assert api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).status_code == 202
    other_body = {**TRAIN, "config": {**TRAIN["config"], "steps": 21}}
    for response in (api.post("/v1/jobs/train", json=other_body, headers={"Idempotency-Key": key}),
                     api.post("/v1/jobs/generate", json={"generator_job": str(uuid.uuid4()), "seeds": "1"},
                              headers={"Idempotency-Key": key}),
                     api.post("/v1/jobs/train?x=1", json=TRAIN, headers={"Idempotency-Key": key}),
                     api.post("/v1/jobs/train", data="dataset=x", headers={"Idempotency-Key": key},
                              content_type="application/x-www-form-urlencoded")):
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert response.json["type"] == "/problems/idempotency-key-reused"
    assert _count(api_app, Job) == 1 and redis_client.llen("train") == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\tinside"])
def test_malformed_keys_are_400(api_app, api, key):
    response = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    assert response.status_code == 400 and response.json["type"] == "/problems/invalid-idempotency-key"
    assert _count(api_app, Job) == 0


def test_the_longest_key_and_printable_punctuation_are_fine(api):
    for key in ("x" * 255, "a b~!@#$%^&*()[]{}"):
        assert api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).status_code == 202


def test_a_failed_request_does_not_use_up_its_key(api_app, api):
    key = _key()
    bad = api.post("/v1/jobs/train", json={**TRAIN, "config": {"steps": 0}}, headers={"Idempotency-Key": key})
    assert bad.status_code == 422 and bad.json["type"] == "/problems/validation-error"
    fixed = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    assert fixed.status_code == 202 and _count(api_app, Job) == 1
    assert _count(api_app, IdempotencyRecord) == 1


def test_keys_belong_to_a_tenant(api_app, api, redis_client):
    other = authorized_client(api_app, "another-tenant")
    key = _key()
    mine = api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    theirs = other.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 202 and mine.json["id"] != theirs.json["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert _count(api_app, Job) == 2 and redis_client.llen("train") == 2
    # ... and the other tenant's record is not replayed to anyone else.
    assert other.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key}).json["id"] == theirs.json["id"]


def test_a_replay_is_not_refused_by_the_queued_cap(engine, tmp_path, redis_client):
    from tests.web.conftest import make_app

    app = make_app(engine, tmp_path, max_queued_jobs=1)
    try:
        client = authorized_client(app)
        key = _key()
        first = client.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
        assert client.post("/v1/jobs/train", json=TRAIN).status_code == 429
        replay = client.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})
        assert replay.status_code == 202 and replay.json["id"] == first.json["id"]
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def _concurrently(count: int, send) -> list:
    """`send(i)` from `count` threads released together; each request has its own app context."""
    barrier, answers, errors = threading.Barrier(count), [None] * count, []

    def run(index: int) -> None:
        try:
            barrier.wait()
            answers[index] = send(index)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return answers


def test_concurrent_requests_with_one_key_create_one_job(api_app, api, redis_client):
    keys = [_key() for _ in range(3)]
    # 12 requests: 3 keys, each sent 4 times at once; plus 4 without a key.
    answers = _concurrently(16, lambda i: api.post("/v1/jobs/train", json=TRAIN,
                                                   headers={"Idempotency-Key": keys[i % 4]} if i % 4 < 3 else {}))
    assert [a.status_code for a in answers] == [202] * 16, [a.json for a in answers if a.status_code != 202]
    for index, key in enumerate(keys):
        ids = {a.json["id"] for i, a in enumerate(answers) if i % 4 == index}
        assert len(ids) == 1, (key, ids)
    assert _count(api_app, Job) == 3 + 4 and redis_client.llen("train") == 3 + 4


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("same_request", [True, False])
def test_the_loser_of_a_race_rolls_back_and_answers_the_winner(api_app, api, engine, redis_client, same_request):
    """Deterministic: the winner's record is inserted by the test in an open transaction, after the request's
    lookup found nothing; the request creates its job, blocks on the record's primary key, and once the
    winner commits it must roll its job back, publish nothing and answer the winner's record (or 422)."""
    from web.idempotency import request_fingerprint

    key = _key()
    with api_app.test_request_context("/v1/jobs/train", method="POST", json=TRAIN):
        fingerprint = request_fingerprint() if same_request else "0" * 64
    winner = {"id": str(uuid.uuid4()), "status": "queued", "by": "the winner"}
    answer = {}
    connection = engine.connect()
    try:
        transaction = connection.begin()
        connection.execute(IdempotencyRecord.__table__.insert().values(
            tenant_id=api.tenant_id, key=key, request_hash=fingerprint, response_status=202,
            response_body={"body": winner, "location": f"/v1/jobs/{winner['id']}"}, created_at=_now()))
        thread = threading.Thread(target=lambda: answer.setdefault(
            "response", api.post("/v1/jobs/train", json=TRAIN, headers={"Idempotency-Key": key})))
        thread.start()
        _wait_until_blocked_on_a_lock(engine, thread)
        transaction.commit()
    finally:
        connection.close()
    thread.join()
    response = answer["response"]
    if same_request:
        assert response.status_code == 202 and response.json == winner
        assert response.headers["Location"] == f"/v1/jobs/{winner['id']}"
    else:
        assert response.status_code == 422 and response.json["type"] == "/problems/idempotency-key-reused"
    assert _count(api_app, Job) == 0 and redis_client.llen("train") == 0


def _now():
    from core.db import utcnow

    return utcnow()


def _wait_until_blocked_on_a_lock(engine, thread: threading.Thread) -> None:
    """Until another session of this database waits for a lock (the request, on the record's key)."""
    with engine.connect() as watcher:
        while thread.is_alive():
            waiting = watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")).scalar()
            watcher.commit()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the request finished without waiting for the winner's transaction")


def _archive(color: int, count: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            png = io.BytesIO()
            Image.new("RGB", (8, 8), (color, index, 0)).save(png, format="PNG")
            archive.writestr(f"{index}.png", png.getvalue())
    return buffer.getvalue()


def _upload(client, data: bytes, key: str, name: str = "faces"):
    return client.post("/v1/datasets", data={"file": (io.BytesIO(data), "images.zip"), "name": name},
                       content_type="multipart/form-data", headers={"Idempotency-Key": key})


def _stored_datasets(tmp_path: Path, tenant_id) -> set[str]:
    root = tmp_path / "artifacts" / "tenants" / str(tenant_id) / "datasets"
    return {path.name for path in root.iterdir()} if root.exists() else set()


def test_dataset_upload_replays_and_refuses_another_file(api_app, api, tmp_path):
    key, archive = _key(), _archive(10)
    first = _upload(api, archive, key)
    assert first.status_code == 201
    # The test client picks a new multipart boundary for every request: the same upload all the same.
    again = _upload(api, archive, key)
    assert again.status_code == 201 and again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    for response in (_upload(api, _archive(11), key), _upload(api, archive, key, name="other")):
        assert response.status_code == 422 and response.json["type"] == "/problems/idempotency-key-reused"
    assert [d["id"] for d in api.get("/v1/datasets").json["datasets"]] == [first.json["id"]]
    assert _stored_datasets(tmp_path, api.tenant_id) == {first.json["id"]}


def test_concurrent_uploads_with_one_key_store_one_dataset(api_app, api, tmp_path):
    key, archive = _key(), _archive(20)
    answers = _concurrently(4, lambda _: _upload(api, archive, key))
    assert [a.status_code for a in answers] == [201] * 4
    ids = {a.json["id"] for a in answers}
    assert len(ids) == 1 and _count(api_app, Dataset) == 1
    # The losers' images were deleted with their rolled-back rows: only the winner's are stored.
    assert _stored_datasets(tmp_path, api.tenant_id) == ids
