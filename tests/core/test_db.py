"""The schema behaves the same on PostgreSQL and SQLite: JSON, UTC timestamps, constraints, engine setup."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from core.db import Artifact, Job, Tenant, engine_url, ensure_tenant, make_engine

PLUS_TWO = timezone(timedelta(hours=2))


def add_job(session, tenant_id, **values) -> Job:
    job = Job(id=uuid.uuid4(), tenant_id=tenant_id, type="train", **values)
    session.add(job)
    session.flush()
    return job


def test_json_round_trip(session, tenant_id):
    config = {"z_dim": 100, "lr": 2e-4, "betas": [0.5, 0.999], "name": "chiffres \u00e9\u2713", "ema": None,
              "nested": {"augment": True, "policy": ["color", "translation"]}}
    job_id = add_job(session, tenant_id, config=config).id
    session.commit()
    session.expire_all()
    assert session.get(Job, job_id).config == config


def test_timestamps_come_back_as_utc(session, tenant_id):
    if session.get_bind().dialect.name == "postgresql":
        # The server hands timestamptz back in the session's zone; the column type must normalise it.
        session.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
    local = datetime(2030, 6, 1, 14, 30, 15, 123456, tzinfo=PLUS_TWO)
    job_id = add_job(session, tenant_id, created_at=local, started_at=local).id
    session.expire_all()  # read back from the database, in the same transaction as SET LOCAL
    job = session.get(Job, job_id)
    assert job.started_at == local and job.started_at.tzinfo == timezone.utc
    assert job.started_at.isoformat() == "2030-06-01T12:30:15.123456+00:00"
    assert job.updated_at.tzinfo == timezone.utc  # filled by the model's default
    if session.get_bind().dialect.name == "postgresql":
        assert session.execute(text("SELECT started_at::text FROM jobs")).scalar() == "2030-06-01 08:30:15.123456-04"


def test_timestamps_compare_as_instants(session, tenant_id):
    # SQLite compares the stored text, which is only right if every value was converted to UTC first.
    add_job(session, tenant_id, started_at=datetime(2030, 1, 1, 12, 0, tzinfo=PLUS_TWO))  # 10:00 UTC
    session.commit()
    eleven_utc = datetime(2030, 1, 1, 11, 0, tzinfo=timezone.utc)
    assert session.scalar(select(func.count()).select_from(Job).where(Job.started_at < eleven_utc)) == 1


def test_naive_datetimes_are_refused(session, tenant_id):
    add_job(session, tenant_id)
    with pytest.raises(StatementError, match="naive datetime"):
        session.execute(select(Job).where(Job.created_at < datetime(2030, 1, 1))).all()


def test_foreign_keys_are_enforced(session):
    with pytest.raises(IntegrityError):
        add_job(session, uuid.uuid4())


def test_deleting_a_job_deletes_its_artifacts(session, tenant_id):
    job_id = add_job(session, tenant_id).id
    session.add(Artifact(job_id=job_id, name="grid.png", key=f"jobs/{job_id}/grid.png", size=1, sha256="0" * 64,
                         content_type="image/png", attempt=1))
    session.commit()
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Artifact)) == 0


def test_status_must_be_a_known_one(session, tenant_id):
    with pytest.raises(IntegrityError, match="ck_jobs_status"):
        add_job(session, tenant_id, status="paused")


def test_ensure_tenant_is_idempotent(session):
    first = ensure_tenant(session, "default")
    session.commit()
    assert ensure_tenant(session, "default").id == first.id
    assert session.scalar(select(func.count()).select_from(Tenant)) == 1


def test_sqlite_file_engine_settings(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'dcgan.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
    assert (tmp_path / "nested" / "dir" / "dcgan.db").exists()


def test_in_memory_sqlite_is_one_shared_database():
    engine = make_engine("sqlite://")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()


def test_a_bare_postgresql_url_uses_psycopg3():
    assert engine_url("postgresql://u@db/x").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg://u@db/x").drivername == "postgresql+psycopg"
    assert engine_url("sqlite:///var/dcgan.db").drivername == "sqlite"
