"""Failed authentications throttled per client address (web.rate_limit.FailedAuthLimit, real Redis), on SQLite
and PostgreSQL: refused keys and sign-ins count, a valid key from a throttled address is 429 too, other
addresses and successful requests are not affected, the window ends, and a Redis outage locks nobody out."""

from __future__ import annotations

import pytest

from core.auth import create_key, revoke_key
from tests.web.conftest import authorized_client, make_app
from tests.web.test_auth import _closed_port
from tests.web.test_dashboard import csrf_token as _csrf_token

ATTACKER, BYSTANDER = "203.0.113.7", "198.51.100.2"
UNKNOWN = "Bearer dcg_" + "A" * 43


def _from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _revoked(app) -> str:
    with app.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, "revoked")
        revoke_key(session, secret)
        session.commit()
    return f"Bearer {secret}"


@pytest.fixture
def throttled_app(engine, tmp_path, redis_client):
    app = make_app(engine, tmp_path, failed_auth_per_minute=3)
    yield app
    app.extensions["dcgan"]["engine"].dispose()


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == "/problems/too-many-failed-authentications"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_failures_past_the_limit_are_429_even_for_a_valid_key(throttled_app):
    valid = authorized_client(throttled_app)
    attacker = _from(throttled_app, ATTACKER)
    guesses = [UNKNOWN, "Basic dXNlcjpwYXNz", _revoked(throttled_app)]
    assert [attacker.get("/v1/jobs", headers={"Authorization": g}).status_code for g in guesses] == [401] * 3
    for authorization in (f"Bearer {valid.api_key}", UNKNOWN):  # the key is not looked at any more
        _assert_throttled(attacker.get("/v1/jobs", headers={"Authorization": authorization}))
    _assert_throttled(attacker.post("/v1/jobs/train", json={}, headers={"Authorization": f"Bearer {valid.api_key}"}))
    # Another address is not affected, with a valid key or a bad one.
    bystander = _from(throttled_app, BYSTANDER)
    assert bystander.get("/v1/jobs", headers={"Authorization": f"Bearer {valid.api_key}"}).status_code == 200
    assert bystander.get("/v1/jobs", headers={"Authorization": UNKNOWN}).status_code == 401
    # Open routes stay open.
    assert attacker.get("/v1/openapi.json").status_code == 200 and attacker.get("/healthz").status_code == 200


def test_successes_and_missing_credentials_do_not_count(throttled_app):
    valid = authorized_client(throttled_app)
    client = _from(throttled_app, ATTACKER)
    key = {"Authorization": f"Bearer {valid.api_key}"}
    assert {client.get("/v1/jobs", headers=key).status_code for _ in range(10)} == {200}
    assert {client.get("/v1/jobs").status_code for _ in range(10)} == {401}  # no credentials: not a guess
    assert [client.get("/v1/jobs", headers={"Authorization": UNKNOWN}).status_code for _ in range(2)] == [401, 401]
    assert client.get("/v1/jobs", headers=key).status_code == 200  # 2 failures of 3
    assert client.get("/v1/jobs", headers={"Authorization": UNKNOWN}).status_code == 401
    _assert_throttled(client.get("/v1/jobs", headers=key))


def test_a_request_refused_for_its_address_does_not_count_against_its_key(engine, tmp_path, redis_client):
    """A key this process already accepted is checked against its address's failures and counted against its
    own rate limit in one Redis call (web.rate_limit.RateLimit.check_with); refused for the address, it is not
    counted, exactly as when the two were separate calls."""
    app = make_app(engine, tmp_path, failed_auth_per_minute=3, rate_limit_per_minute=3)
    try:
        valid = authorized_client(app)
        key = {"Authorization": f"Bearer {valid.api_key}"}
        attacker, bystander = _from(app, ATTACKER), _from(app, BYSTANDER)
        assert attacker.get("/v1/jobs", headers=key).status_code == 200  # 1 of the key's 3; the key is cached now
        assert [attacker.get("/v1/jobs", headers={"Authorization": UNKNOWN}).status_code for _ in range(3)] == [401] * 3
        for _ in range(5):
            _assert_throttled(attacker.get("/v1/jobs", headers=key))
        assert [bystander.get("/v1/jobs", headers=key).status_code for _ in range(3)] == [200, 200, 429]
        limited = bystander.get("/v1/jobs", headers=key)
        assert limited.status_code == 429 and limited.json["type"] == "/problems/rate-limited"
    finally:
        app.extensions["dcgan"]["engine"].dispose()


def test_the_window_ends(throttled_app, redis_client):
    """The count lives a minute from the address's first failure (the counter's TTL, what Retry-After says);
    once the counter is gone the address is served again."""
    valid = authorized_client(throttled_app)
    client = _from(throttled_app, ATTACKER)
    for _ in range(3):
        client.get("/v1/jobs", headers={"Authorization": UNKNOWN})
    refused = client.get("/v1/jobs", headers={"Authorization": f"Bearer {valid.api_key}"})
    _assert_throttled(refused)
    [counter] = [name for name in redis_client.keys() if b"failed-auth" in name]
    assert ATTACKER.encode() in counter
    left = redis_client.ttl(counter)
    assert 55 <= left <= int(refused.headers["Retry-After"]) <= left + 1 <= 61
    redis_client.delete(counter)  # what Redis does when the window's TTL runs out
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {valid.api_key}"}).status_code == 200


def test_refused_sign_ins_count_and_are_throttled(throttled_app):
    valid = authorized_client(throttled_app)
    browser = _from(throttled_app, ATTACKER)

    def sign_in(key: str):
        return browser.post("/signin", data={"api_key": key, "csrf_token": _csrf_token(browser), "next": "/"})

    assert [sign_in(f"dcg_guess{i}").status_code for i in range(3)] == [401] * 3
    throttled = sign_in(valid.api_key)
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert "failed authentications" in throttled.get_data(as_text=True)
    # The same address's API requests are throttled too: one count per address.
    _assert_throttled(browser.get("/v1/jobs", headers={"Authorization": f"Bearer {valid.api_key}"}))


def test_a_session_whose_key_was_revoked_counts(throttled_app):
    browser = _from(throttled_app, ATTACKER)
    with throttled_app.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, "browser")
        session.commit()
    response = browser.post("/signin", data={"api_key": secret, "csrf_token": _csrf_token(browser), "next": "/"})
    assert response.status_code == 303
    assert browser.get("/v1/jobs").status_code == 200
    with throttled_app.extensions["dcgan"]["sessions"]() as session:
        revoke_key(session, secret)
        session.commit()
    throttled_app.extensions["dcgan"]["key_cache"]._entries.clear()  # as if AUTH_CACHE_SECONDS had passed
    assert browser.get("/v1/jobs").status_code == 401  # counted; the session is cleared
    for _ in range(2):
        browser.get("/v1/jobs", headers={"Authorization": UNKNOWN})
    _assert_throttled(browser.get("/v1/jobs"))


def test_redis_down_throttles_nobody(engine, tmp_path):
    app = make_app(engine, tmp_path, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", failed_auth_per_minute=1)
    try:
        valid = authorized_client(app)
        client = _from(app, ATTACKER)
        assert [client.get("/v1/jobs", headers={"Authorization": UNKNOWN}).status_code for _ in range(3)] == [401] * 3
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {valid.api_key}"}).status_code == 200
    finally:
        app.extensions["dcgan"]["engine"].dispose()

