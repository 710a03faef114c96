"""How a synchronous sampling request and its answer travel, and how the API knows a sampling worker is there.

The request goes as a Celery task (`dcgan.sample`, queue `sample`) that expires at the request's deadline,
so a worker that starts late, or is busy past it, drops it unrendered. The answer comes back on a Redis list
of the request's own (`dcgan:sample:reply:<id>`): the worker pushes one value (LPUSH, with an EXPIRE so an
answer nobody waits for any more is gone a few seconds later) and the API waits on it with BLPOP. One list per
request works with any number of API processes and workers, and costs one round trip on each side; Celery's
result backends would poll or subscribe for the same thing.

Liveness: every sampling worker adds itself to a sorted set scored by when it is to be taken for dead, every
BEAT_SECONDS, and removes itself when it stops. Both the beat and the API's count read the time from the
Redis server (Lua `TIME`), so workers and API on machines with different clocks agree. A stopped worker is
gone from the count at once; a killed one after ALIVE_SECONDS. The API answers 503 when the count is 0
without queueing anything, and 504 when a worker is there but no answer came in time.

Torch-free: the API and the worker both use it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

REPLY_PREFIX = "dcgan:sample:reply:"
SAMPLERS_KEY = "dcgan:samplers"
# A worker beats this often, and is taken for dead when it has not for ALIVE_SECONDS (three missed beats).
BEAT_SECONDS = 1.0
ALIVE_SECONDS = 3.0
# An answer outlives its deadline by this much, then Redis drops it (its API request has given up).
REPLY_GRACE_SECONDS = 5

_BEAT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
return 1
"""
_ALIVE = """
local now = redis.call('TIME')
return redis.call('ZCOUNT', KEYS[1], tonumber(now[1]) + tonumber(now[2]) / 1e6, '+inf')
"""


class Liveness:
    """The set of live sampling workers on one Redis server."""

    def __init__(self, client: redis.Redis, key: str = SAMPLERS_KEY):
        self.key = key
        self._client = client
        self._beat = client.register_script(_BEAT)
        self._alive = client.register_script(_ALIVE)

    def beat(self, name: str, seconds: float = ALIVE_SECONDS) -> None:
        """`name` is alive for `seconds` more (and workers past their time are dropped from the set)."""
        self._beat(keys=[self.key], args=[name, seconds])

    def leave(self, name: str) -> None:
        self._client.zrem(self.key, name)

    def alive(self) -> int:
        """How many workers have beaten within ALIVE_SECONDS."""
        return int(self._alive(keys=[self.key]))


def new_reply_key() -> str:
    return REPLY_PREFIX + uuid.uuid4().hex


def encode_reply(meta: dict[str, Any], body: bytes = b"") -> bytes:
    """One Redis value: the answer's metadata as one line of JSON, then the body's bytes."""
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + body


def decode_reply(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, body = raw.partition(b"\n")
    return json.loads(head), body


def send_reply(client: redis.Redis, key: str, meta: dict[str, Any], body: bytes, seconds_left: float) -> None:
    """Push the answer onto the request's list, which lives until the request's deadline and a grace."""
    pipe = client.pipeline(transaction=False)
    pipe.lpush(key, encode_reply(meta, body))
    pipe.expire(key, max(1, int(seconds_left)) + REPLY_GRACE_SECONDS)
    pipe.execute()


def wait_reply(client: redis.Redis, key: str, seconds: float) -> tuple[dict[str, Any], bytes] | None:
    """The answer on `key`, or None when none came within `seconds`."""
    found = client.blpop([key], timeout=max(seconds, 0.01))
    return None if found is None else decode_reply(found[1])
