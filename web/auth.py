"""Who a request acts for, and how often it may ask: API keys and the per-key rate limit.

Every /v1/ route needs `Authorization: Bearer <key>` except the OpenAPI document; /healthz and /readyz
are outside /v1/ and stay open. A missing, malformed, unknown or revoked key is answered 401 with
`WWW-Authenticate: Bearer` before the view runs; a valid one sets the tenant that `tenancy.tenant_id()`
returns, so every query the view makes is scoped to it. A path or method that matches no route is
answered 404 / 405 as before: there is nothing behind it to protect.

A valid key is remembered in the process for AUTH_CACHE_SECONDS, so a client polling a job costs one
database query instead of two; a revoked key therefore stops working within that many seconds (a key
that was never accepted by this process is refused at once). Unknown keys are not cached.

The rate limit counts requests per key in fixed one-minute windows in the broker's Redis (INCR, then
EXPIRE, in one MULTI). Over the limit: 429 with `Retry-After` = the seconds left in the window. The
database, not Redis, is the source of truth, so a Redis that cannot be reached lets requests through
(with a warning in the log) instead of failing the API; after a failure Redis is left alone for a few
seconds so each request does not pay for another connection attempt.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

import redis
from flask import Flask, current_app, g, request

from core.auth import authenticate, hash_key
from core.settings import Settings

from .resources import db
from .problems import Problem

log = logging.getLogger(__name__)
OPEN_ENDPOINTS = frozenset({"health.openapi"})
WINDOW_SECONDS = 60
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_BACKOFF_SECONDS = 5.0
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_SIZE = 10_000


class KeyCache:
    """key hash -> (tenant id, when to ask the database again); thread-safe, bounded."""

    def __init__(self, seconds: float = AUTH_CACHE_SECONDS, size: int = AUTH_CACHE_SIZE) -> None:
        self.seconds, self.size = seconds, size
        self._entries: dict[str, tuple[uuid.UUID, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> uuid.UUID | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, tenant: uuid.UUID) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key_hash] = (tenant, time.monotonic() + self.seconds)


class RateLimiter:
    """At most `per_minute` hits per key in each one-minute window, counted in Redis; fails open."""

    def __init__(self, redis_url: str, per_minute: int):
        self.per_minute = per_minute
        self.client = (redis.Redis.from_url(redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                            socket_timeout=REDIS_TIMEOUT_SECONDS) if redis_url else None)
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def hit(self, key_id: str, now: float | None = None) -> int | None:
        """Count one request; the seconds to wait when over the limit, None when allowed (or unknown)."""
        if self.client is None or time.monotonic() < self._skip_until:
            return None
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS)
        name = f"dcgan:ratelimit:{key_id}:{window}"
        try:
            pipeline = self.client.pipeline(transaction=True)
            pipeline.incr(name)
            pipeline.expire(name, 2 * WINDOW_SECONDS)
            count, _ = pipeline.execute()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                if time.monotonic() >= self._skip_until:
                    log.warning("rate limit not enforced: Redis unreachable (%s); retrying in %.0f s",
                                exc, REDIS_BACKOFF_SECONDS)
                self._skip_until = time.monotonic() + REDIS_BACKOFF_SECONDS
            return None
        if count <= self.per_minute:
            return None
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def install(app: Flask, settings: Settings) -> None:
    app.extensions["dcgan"]["rate_limiter"] = RateLimiter(settings.redis_url, settings.rate_limit_per_minute)
    app.extensions["dcgan"]["key_cache"] = KeyCache()
    app.before_request(_authenticate)


def unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="dcgan"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, slug="unauthorized", title="Unauthorized",
                   headers={"WWW-Authenticate": challenge})


def open_endpoint(endpoint: str | None, path: str) -> bool:
    """Whether a route is served without a key."""
    return not path.startswith("/v1/") or endpoint in OPEN_ENDPOINTS


def _authenticate() -> None:
    if request.url_rule is None or open_endpoint(request.endpoint, request.path):
        return
    header = request.headers.get("Authorization")
    if header is None:
        raise unauthorized("send an API key: Authorization: Bearer <key> (dcgan keys create makes one)")
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        raise unauthorized("the Authorization header must be 'Bearer <key>'", "invalid_request")
    key_hash = hash_key(secret)
    cache: KeyCache = current_app.extensions["dcgan"]["key_cache"]
    tenant = cache.get(key_hash)
    if tenant is None:
        tenant = authenticate(db(), secret)
        if tenant is None:
            raise unauthorized("the API key is unknown or revoked", "invalid_token")
        cache.put(key_hash, tenant)
    g.tenant_id = tenant
    retry_after = current_app.extensions["dcgan"]["rate_limiter"].hit(key_hash[:32])
    if retry_after is not None:
        raise Problem(429, f"more than {current_app.config['SETTINGS'].rate_limit_per_minute} requests in a "
                      f"minute with this API key; retry in {retry_after} s", slug="rate-limited",
                      title="Rate limit exceeded", headers={"Retry-After": str(retry_after)})
