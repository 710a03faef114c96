"""The per-key rate limit: at most `DCGAN_RATE_LIMIT_PER_MINUTE` requests a minute for each API key, across
every /v1/ route, counted in the broker's Redis by the `limits` library.

`limits` is the engine of Flask-Limiter, used here directly: its fixed window (one counter per key, INCR
and EXPIRE in one Lua call, the window starting with the key's first request) on its Redis storage. Over
the limit: 429 `rate-limited` with `Retry-After` = the whole seconds left in the window. web.auth calls
`RateLimit.check` once it has accepted the key, so keys are counted, not guesses; for a key its process
accepted moments ago it calls `RateLimit.check_with`, which makes the failed-authentication check below and
this count one Redis call (one Lua script, TEST_THEN_INCR) instead of two.

Why not Flask-Limiter itself: it resolves which limits apply on every request, and that cost shows here.
Measured on this project's 2-core VM (2026-12-01, AVX-512 CPU with avx512_bf16 and amx_bf16; a bare Flask
view, real Redis, CPU per request): no limit ~320 us, the hand-written limiter this replaced ~525 us,
`limits` directly ~565 us, Flask-Limiter ~700 us; at the 200 polls/s of bench/load_test.py that is 4% of a
core more, which a saturated 2-core machine pays in its poll p99.

The database, not Redis, is the source of truth, so a Redis that cannot be reached lets requests through
with one warning instead of failing the API, and is left alone for a few seconds after a failure so each
request does not pay for another connection attempt (`FailOpenRedisStorage`, a subclass of `limits`'
storage, the library's way to extend one).

Failed authentications are limited too, per client address (`FailedAuthLimit`, DCGAN_FAILED_AUTH_PER_MINUTE in
the same fixed windows and storage): web.auth counts every refused key or session of an address, and once an
address has used up its window, its requests to /v1/ routes are 429 `too-many-failed-authentications` before
their key is looked at, so guessing keys stops there while other addresses go on. The address is the
connection's (`request.remote_addr`): the app trusts no X-Forwarded-For, so behind a proxy every client shares
the proxy's address unless the deployment wraps the app in werkzeug's ProxyFix.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, TypeVar

import redis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from core.settings import Settings

from .problems import Problem

log = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_BACKOFF_SECONDS = 5.0
KEY_PREFIX = "dcgan:ratelimit"


class FailOpenRedisStorage(RedisStorage):
    """limits' Redis storage, except that while Redis cannot be reached every count is 0: the request is let
    through, one warning is logged, and Redis is not asked again for REDIS_BACKOFF_SECONDS."""

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def _fail_open(self, operation: Callable[[], T], allowed: T) -> T:
        if time.monotonic() < self._skip_until:
            return allowed
        try:
            return operation()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                if time.monotonic() >= self._skip_until:
                    log.warning("rate limit not enforced: Redis unreachable (%s); retrying in %.0f s",
                                exc, REDIS_BACKOFF_SECONDS)
                self._skip_until = time.monotonic() + REDIS_BACKOFF_SECONDS
            return allowed

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._fail_open(lambda: super(FailOpenRedisStorage, self).incr(key, expiry, amount), 0)

    def get(self, key: str) -> int:
        return self._fail_open(lambda: super(FailOpenRedisStorage, self).get(key), 0)

    def get_expiry(self, key: str) -> float:
        return self._fail_open(lambda: super(FailOpenRedisStorage, self).get_expiry(key), time.time())

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_test_then_incr = self.get_connection().register_script(TEST_THEN_INCR)

    def test_then_incr(self, tested: str, allowed: int, key: str, expiry: int) -> tuple[int, int]:
        """In one round trip: the count of `tested`, and -- unless it has reached `allowed` -- `key` counted
        as `incr` counts it (its new count; 0 when not counted)."""
        counts = self._fail_open(lambda: self.lua_test_then_incr([self.prefixed_key(tested), self.prefixed_key(key)],
                                                                 [allowed, expiry]), [0, 0])
        return int(counts[0]), int(counts[1])


# FailedAuthLimit.check and RateLimit.check of one request in one Redis call (web.auth, for a key this process
# already accepted): with limits' own calls they were two round trips, each a wait for the GIL again on a busy
# server. The increment is limits' incr_expire.lua, with an amount of 1.
TEST_THEN_INCR = """
local tested = tonumber(redis.call("get", KEYS[1]) or "0")
if tested >= tonumber(ARGV[1]) then
    return {tested, 0}
end
local current = redis.call("incrby", KEYS[2], 1)
if tonumber(current) == 1 then
    redis.call("expire", KEYS[2], ARGV[2])
end
return {tested, current}
"""


def fixed_window_limiter(settings: Settings) -> FixedWindowRateLimiter | None:
    """A fixed-window limiter on the broker's Redis (fail-open), or None without Redis (a bare app in a test):
    then nothing is counted, as before there was a broker."""
    if not settings.redis_url:
        return None
    storage = FailOpenRedisStorage(settings.redis_url, key_prefix=KEY_PREFIX,
                                   socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)
    return FixedWindowRateLimiter(storage)


def _retry_after(limiter: FixedWindowRateLimiter, item: RateLimitItem, *identifiers: str) -> int:
    """Whole seconds until the window of `identifiers` resets (at least 1)."""
    reset_at, _ = limiter.get_window_stats(item, *identifiers)
    return max(1, math.ceil(reset_at - time.time()))


class RateLimit:
    """`settings.rate_limit_per_minute` requests per key and fixed window."""

    def __init__(self, settings: Settings, limiter: FixedWindowRateLimiter | None = None) -> None:
        self.per_minute = settings.rate_limit_per_minute
        self.item = RateLimitItemPerMinute(self.per_minute)
        self.limiter = limiter if limiter is not None else fixed_window_limiter(settings)

    def check(self, key: str) -> None:
        """Count one request of `key`; a 429 Problem when it is one too many."""
        if self.limiter is None or self.limiter.hit(self.item, key):
            return
        raise self.refusal(key)

    def check_with(self, failed_auth: "FailedAuthLimit", address: str | None, key: str) -> None:
        """`failed_auth.check(address)` then `check(key)`, in one Redis round trip (both on this limiter's storage):
        the first refusal is raised, and a request refused for its address's failures is not counted."""
        if self.limiter is None:
            return
        failures, count = self.limiter.storage.test_then_incr(
            failed_auth.item.key_for(failed_auth.NAMESPACE, address or "unknown"), failed_auth.per_minute,
            self.item.key_for(key), self.item.get_expiry())
        if failures >= failed_auth.per_minute:
            raise failed_auth.refusal(address)
        if count > self.per_minute:
            raise self.refusal(key)

    def refusal(self, key: str) -> Problem:
        retry_after = _retry_after(self.limiter, self.item, key)
        return Problem(429, f"more than {self.per_minute} requests in a minute with this API key; retry in "
                            f"{retry_after} s", slug="rate-limited", title="Rate limit exceeded",
                       headers={"Retry-After": str(retry_after)})


class FailedAuthLimit:
    """`settings.failed_auth_per_minute` failed authentications per client address and fixed window: `check`
    before a key is looked at, `count` for each one refused."""

    NAMESPACE = "failed-auth"  # beside the per-key counters in the same storage

    def __init__(self, settings: Settings, limiter: FixedWindowRateLimiter | None = None) -> None:
        self.per_minute = settings.failed_auth_per_minute
        self.item = RateLimitItemPerMinute(self.per_minute)
        self.limiter = limiter if limiter is not None else fixed_window_limiter(settings)

    def check(self, address: str | None) -> None:
        """A 429 Problem when `address` has used up its failed authentications in this window."""
        if self.limiter is None or self.limiter.test(self.item, self.NAMESPACE, address or "unknown"):
            return
        raise self.refusal(address)

    def refusal(self, address: str | None) -> Problem:
        retry_after = _retry_after(self.limiter, self.item, self.NAMESPACE, address or "unknown")
        return Problem(429, f"{self.per_minute} failed authentications in a minute from this address "
                            f"(DCGAN_FAILED_AUTH_PER_MINUTE); retry in {retry_after} s",
                       slug="too-many-failed-authentications",
                       title="Too many failed authentications", headers={"Retry-After": str(retry_after)})

    def count(self, address: str | None) -> None:
        """Count one failed authentication of `address`."""
        if self.limiter is not None:
            self.limiter.hit(self.item, self.NAMESPACE, address or "unknown")
