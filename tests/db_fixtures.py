"""Database fixtures: real PostgreSQL and SQLite, both migrated by the repository's Alembic revisions.

PostgreSQL: one throwaway database per test session (dcgan_test_<random>), dropped at the end; extra
ones for migration tests. Set DCGAN_TEST_POSTGRES_URL to point at another server; tests skip only when no
server answers at all.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from core.db import Base, ensure_tenant, make_engine, make_session_factory

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URLS = [url for url in (
    os.environ.get("DCGAN_TEST_POSTGRES_URL"),
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
) if url]
BACKENDS = ["sqlite", "postgresql"]


def alembic_config(url: str) -> Config:
    """The repository's alembic.ini aimed at `url`, as `alembic -c alembic.ini` would load it."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    config.attributes["configure_logger"] = False  # leave pytest's logging alone
    return config


@pytest.fixture(scope="session")
def make_alembic_config():
    """`alembic_config` for test modules (a fixture, so they don't import this conftest)."""
    return alembic_config


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin() -> Engine:
    """An AUTOCOMMIT engine on the server's maintenance database, for CREATE/DROP DATABASE."""
    if not any(_reachable(url) for url in POSTGRES_ADMIN_URLS):
        pytest.skip("PostgreSQL is unreachable at 127.0.0.1:5432: start it with "
                    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
    errors = []
    for url in POSTGRES_ADMIN_URLS:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect():
                return engine
        except OperationalError as error:
            errors.append(f"{make_url(url).username}: {error.orig}")
            engine.dispose()
    pytest.fail("PostgreSQL answers but no role could connect:\n" + "\n".join(errors))


@pytest.fixture(scope="session")
def create_postgres_database(postgres_admin):
    """A factory of empty PostgreSQL databases; every one is dropped when the session ends."""
    created = []

    def create() -> str:
        name = f"dcgan_test_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_admin.url.set(database=name).render_as_string(hide_password=False)

    yield create
    with postgres_admin.connect() as connection:
        for name in created:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres_admin.dispose()


@pytest.fixture(scope="session")
def migrated_postgres_engine(create_postgres_database):
    """The session's PostgreSQL database at `alembic upgrade head`."""
    url = create_postgres_database()
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def empty_database_url(backend, tmp_path, request) -> str:
    """A database with nothing in it, on the test's backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("create_postgres_database")()


@pytest.fixture
def engine(backend, tmp_path, request):
    """A migrated database on each backend. SQLite: a new file per test. PostgreSQL: the session's
    database, emptied after each test (cheaper than migrating a new database every time)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'dcgan.db'}"
        command.upgrade(alembic_config(url), "head")
        engine = make_engine(url)
        yield engine
        engine.dispose()
        return
    engine = request.getfixturevalue("migrated_postgres_engine")
    yield engine
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def session_factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory):
    with session_factory() as session:
        yield session


@pytest.fixture
def tenant_id(session) -> uuid.UUID:
    tenant = ensure_tenant(session, "default")
    session.commit()
    return tenant.id
