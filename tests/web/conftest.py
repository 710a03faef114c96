import pytest

from core.settings import Settings
from web import create_app

TEST_REDIS_URL = "redis://127.0.0.1:6379/12"  # the machine's Redis, a database of its own for these tests


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is unreachable at 127.0.0.1:6379 (make test starts it)")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def api(engine, tmp_path, redis_client):
    """The API on a migrated database (SQLite and PostgreSQL), the real Redis broker and a LocalStore."""
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path, database_url=url, redis_url=TEST_REDIS_URL).with_defaults()
    app = create_app(settings)
    yield app.test_client()
    app.extensions["dcgan"]["engine"].dispose()
