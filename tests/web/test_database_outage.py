"""PostgreSQL goes away and comes back (acceptance 5, API half): while it is down every database-backed
request -- the API key lookup included -- is answered 503 problem+json `database-unavailable` with
Retry-After, never 500 (nor 401: an unreachable key table proves nothing about the key); once it is back
the same requests succeed without restarting the API.

The API runs on a PostgreSQL cluster and a Redis of this test's own (tests/services.py), so stopping them
leaves the machine's shared servers alone. A genuine SQL bug is still a 500: the 503 is for outages only.
"""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from core.db import make_engine, make_session_factory
from core.settings import Settings
from web import create_app
from web.outages import database_unavailable

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 5, "img_size": 32, "img_channels": 1}}
HAS_API_KEYS = importlib.util.find_spec("core.auth") is not None


@pytest.fixture(scope="module")
def database_url(private_postgres, make_alembic_config):
    url = private_postgres.create_database("outage")
    command.upgrade(make_alembic_config(url), "head")
    return url


@pytest.fixture(scope="module")
def headers(database_url) -> dict[str, str]:
    """An API key's Authorization header once API keys exist; none before."""
    if not HAS_API_KEYS:
        return {}
    from core.auth import create_key

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            _, secret = create_key(session, "outage")
            session.commit()
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def app(database_url, private_redis, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("outage-data"), database_url=database_url,
                        redis_url=private_redis.url(0)).with_defaults()
    app = create_app(settings)

    @app.get("/v1/test-only/bad-sql")
    def bad_sql():  # a genuine bug on a healthy database: must stay a 500
        from web.resources import db
        db().execute(text("SELECT no_such_column FROM jobs"))
        return {}

    yield app
    app.extensions["dcgan"]["engine"].dispose()


def _assert_database_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == "/problems/database-unavailable"
    assert response.json["status"] == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "Traceback" not in response.get_data(as_text=True)


def test_requests_answer_503_while_postgres_is_down_and_succeed_once_it_is_back(app, private_postgres,
                                                                               headers):
    client = app.test_client()
    retried = {**headers, "Idempotency-Key": "sent-during-the-outage"}
    before = client.post("/v1/jobs/train", json=TRAIN, headers=headers)
    assert before.status_code == 202, before.json
    job_id = before.json["id"]
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # the pool holds live connections now

    private_postgres.stop()
    try:
        _assert_database_unavailable(client.get("/v1/jobs", headers=headers))
        _assert_database_unavailable(client.post("/v1/jobs/train", json=TRAIN, headers=retried))
        _assert_database_unavailable(client.get(f"/v1/jobs/{job_id}", headers=headers))
        if headers:  # the key cannot be checked: neither 401 nor 500
            unknown_key = {"Authorization": "Bearer dcg_unknown"}
            _assert_database_unavailable(client.get("/v1/jobs", headers=unknown_key))
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
        assert set(ready.json["checks"]) == {"database"}
    finally:
        private_postgres.start()

    listed = client.get("/v1/jobs", headers=headers)
    assert listed.status_code == 200
    assert [job["id"] for job in listed.json["jobs"]] == [job_id]
    after = client.post("/v1/jobs/train", json=TRAIN, headers=retried)  # the client's retry creates it
    assert after.status_code == 202, after.json
    assert after.headers.get("Idempotent-Replayed") is None
    assert client.get(f"/v1/jobs/{after.json['id']}", headers=headers).json["status"] == "queued"
    assert client.get("/readyz").status_code == 200


def test_a_sql_bug_is_still_a_500(app, headers):
    response = app.test_client().get("/v1/test-only/bad-sql", headers=headers)
    assert response.status_code == 500
    assert response.json["type"] == "/problems/internal"


def _raised(callable_) -> BaseException:
    with pytest.raises(Exception) as caught:
        callable_()
    return caught.value


def test_only_connection_level_errors_count_as_unavailable(database_url, private_postgres, tmp_path):
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE unique_things (n int UNIQUE)"))
            connection.execute(text("INSERT INTO unique_things VALUES (1)"))

        def execute(sql: str):
            with engine.begin() as connection:
                connection.execute(text(sql))

        bad_sql = _raised(lambda: execute("SELECT no_such_column FROM unique_things"))
        duplicate = _raised(lambda: execute("INSERT INTO unique_things VALUES (1)"))
        assert isinstance(bad_sql, ProgrammingError) and not database_unavailable(bad_sql)
        assert isinstance(duplicate, IntegrityError) and not database_unavailable(duplicate)

        # A session the server kills (an administrator, a failover) is an outage.
        with engine.connect() as victim:
            pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engine.begin() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killed = _raised(lambda: victim.execute(text("SELECT 1")))
        assert isinstance(killed, DBAPIError) and database_unavailable(killed)

        private_postgres.stop()
        try:
            engine.dispose()
            refused = _raised(lambda: execute("SELECT 1"))
        finally:
            private_postgres.start()
        assert isinstance(refused, OperationalError) and database_unavailable(refused)
    finally:
        engine.dispose()

    # SQLite raises OperationalError both for a busy file and for bad SQL: only the first is an outage.
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (n int)")
    sqlite_engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        def sqlite_execute(sql: str):
            with sqlite_engine.connect() as connection:
                connection.execute(text(sql))

        missing_table = _raised(lambda: sqlite_execute("SELECT * FROM no_such_table"))
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the file
        locked = _raised(lambda: sqlite_execute("SELECT * FROM t"))
        assert isinstance(locked, OperationalError) and "locked" in str(locked)
        assert database_unavailable(locked)
        assert isinstance(missing_table, OperationalError) and not database_unavailable(missing_table)
    finally:
        sqlite_engine.dispose()
        holder.close()
