import os

import pytest

from core.auth import authenticate, create_key
from core.settings import Settings
from tests.conftest import flushed_redis
from web import create_app
from tests.redis_dbs import shared_redis_url

# The machine's Redis, a database of its own for these tests (another one for a second suite run beside this one).
TEST_REDIS_URL = os.environ.get("DCGAN_TEST_WEB_REDIS_URL") or shared_redis_url("web")


@pytest.fixture
def redis_client():
    yield from flushed_redis(TEST_REDIS_URL)


def authorized_client(app, tenant: str = "tests"):
    """A test client of `app` that sends a new API key of `tenant` (created if missing) on every request;
    `.api_key` is the key and `.tenant_id` its tenant."""
    with app.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, tenant)
        session.commit()
        tenant_id = authenticate(session, secret)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    client.api_key, client.tenant_id = secret, tenant_id
    return client


def make_app(engine, tmp_path, **overrides):
    url = engine.url.render_as_string(hide_password=False)
    # No cadence floor: tests train a few steps with a checkpoint or sample every few (test_quotas tests the floor).
    values = dict(data_dir=tmp_path, database_url=url, redis_url=TEST_REDIS_URL, min_checkpoint_every=1,
                  min_sample_every=1)
    values.update(overrides)
    return create_app(Settings(**values).with_defaults())


@pytest.fixture
def api_app(engine, tmp_path, redis_client):
    """The API on a migrated database (SQLite and PostgreSQL), the real Redis broker and a LocalStore."""
    app = make_app(engine, tmp_path)
    yield app
    app.extensions["dcgan"]["engine"].dispose()


@pytest.fixture
def api(api_app):
    """A client of `api_app` acting for the tenant "tests" with a key of its own."""
    return authorized_client(api_app)


def pytest_collection_modifyitems(items):
    """Schemathesis gives every operation's test (tests/web/test_fuzz_routes.py) the same node id and tells them
    apart by name only; pytest-xdist's `--dist loadfile` keys its work by node id, so all but one of them
    silently did not run under `make test`. Each gets its name in its node id."""
    for item in items:
        if item.nodeid.endswith("::" + getattr(item, "originalname", item.name)) and "[" in item.name:
            named = item.nodeid.rpartition("::")[0] + "::" + item.name
            try:
                from _pytest.nodes import coerce_node_id  # pytest 9 keeps a node's id in `_id`
            except ImportError:
                item._nodeid = named  # pytest 8
            else:
                item._id = coerce_node_id(named)
