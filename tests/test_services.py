"""The private services that outage tests stop and start (tests/services.py) really go down and come back
on the same port, and never touch the machine's shared PostgreSQL and Redis."""

from __future__ import annotations

import socket

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_private_redis_stops_starts_on_the_same_port_and_flushes(private_redis):
    assert private_redis.port != 6379
    client = redis.Redis.from_url(private_redis.url(3))
    client.set("kept", "1")
    assert redis.Redis.from_url(private_redis.url(0)).get("kept") is None  # db number honoured

    private_redis.stop()
    assert not _listening(private_redis.port)
    with pytest.raises(redis.ConnectionError):
        client.ping()

    private_redis.start()
    assert client.ping()
    assert client.get("kept") is None  # no persistence: a restart loses everything, like a wipe

    client.set("a", "1")
    redis.Redis.from_url(private_redis.url(5)).set("b", "2")
    private_redis.flush()
    assert client.dbsize() == 0 and redis.Redis.from_url(private_redis.url(5)).dbsize() == 0
    client.close()


def test_private_postgres_stops_and_starts_with_its_data(private_postgres):
    assert private_postgres.port != 5432
    url = private_postgres.create_database("services_check")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE kept (n int)"))
            connection.execute(text("INSERT INTO kept VALUES (7)"))

        private_postgres.stop()
        assert not private_postgres.running and not _listening(private_postgres.port)
        engine.dispose()
        with pytest.raises(OperationalError), engine.connect():
            pass

        private_postgres.start()
        assert private_postgres.running
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM kept")).scalar_one() == 7
            assert connection.execute(text("SHOW port")).scalar_one() == str(private_postgres.port)
    finally:
        engine.dispose()
