"""The per-key rate limit: at most `DCGAN_RATE_LIMIT_PER_MINUTE` requests a minute for each API key, across
every /v1/ route, counted by Flask-Limiter in the broker's Redis.

Flask-Limiter's fixed window (the `limits` library: one counter per key, INCR and EXPIRE in one Lua call)
starts with a key's first request and lasts a minute. Over the limit: 429 `rate-limited` with `Retry-After`
= the seconds left in the window. The check runs after web.auth has accepted the key (so it counts keys,
not guesses); requests that need no key are not counted.

The database, not Redis, is the source of truth, so a Redis that cannot be reached lets requests through
with a warning instead of failing the API, and is left alone for a few seconds after a failure so each
request does not pay for another connection attempt. Flask-Limiter's own `swallow_errors` also lets them
through, but tries Redis and logs a traceback on every request; `limits` lets a storage be extended by
subclassing it under a scheme of its own, which is what `FailOpenRedisStorage` does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

import redis
from flask import Flask, g
from flask_limiter import Limiter, RateLimitExceeded
from limits.storage import RedisStorage

from core.settings import Settings

from .problems import Problem, problem_response

log = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_BACKOFF_SECONDS = 5.0
KEY_PREFIX = "dcgan:ratelimit"


class FailOpenRedisStorage(RedisStorage):
    """limits' Redis storage (`dcgan+redis://...`), except that while Redis cannot be reached every count is
    0: the request is let through, one warning is logged, and Redis is not asked again for a few seconds."""

    STORAGE_SCHEME = ["dcgan+redis", "dcgan+rediss"]

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix("dcgan+"), **options)
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


def install(app: Flask, settings: Settings) -> Limiter:
    """Count every request that web.auth let in (install web.auth first: its check must run before this one)."""
    limiter = Limiter(
        key_func=lambda: g.get("rate_limit_key", ""),
        application_limits=[f"{settings.rate_limit_per_minute} per minute"],
        strategy="fixed-window",
        storage_uri=f"dcgan+{settings.redis_url}" if settings.redis_url else "memory://",
        storage_options={"key_prefix": KEY_PREFIX, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                         "socket_timeout": REDIS_TIMEOUT_SECONDS} if settings.redis_url else {},
        # Without Redis (a bare app in a test) nothing is counted, as before there was a broker.
        enabled=bool(settings.redis_url),
        swallow_errors=True,
        headers_enabled=False,
    )
    limiter.request_filter(lambda: "rate_limit_key" not in g)  # only requests with an accepted key count
    limiter.init_app(app)
    app.extensions["dcgan"]["rate_limiter"] = limiter

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded):
        window = limiter.current_limit
        # Flask-Limiter's own Retry-After: whole seconds until the window resets.
        retry_after = max(1, int(window.reset_at - time.time())) if window is not None else 60
        return problem_response(Problem(
            429, f"more than {settings.rate_limit_per_minute} requests in a minute with this API key; retry in "
                 f"{retry_after} s", slug="rate-limited", title="Rate limit exceeded",
            headers={"Retry-After": str(retry_after)}))

    return limiter
