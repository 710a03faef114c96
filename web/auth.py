"""Who a request acts for: the API key at the door of every /v1/ route.

Every /v1/ route needs `Authorization: Bearer <key>` except the OpenAPI document; /healthz and /readyz
are outside /v1/ and stay open. A missing, malformed, unknown or revoked key is answered 401 with
`WWW-Authenticate: Bearer` before the view runs; a valid one sets the tenant that `tenancy.tenant_id()`
returns, so every query the view makes is scoped to it, and the request counts against the key's rate limit
(web.rate_limit). A path or method that matches no route is answered 404 / 405 as before: there is nothing
behind it to protect.

A request without an Authorization header may instead carry the dashboard's session cookie
(web.session_auth): the pages' scripts read the same API. A browser sends that cookie by itself, also on a
request another site makes it send, so an unsafe method (POST, PUT, PATCH, DELETE) authenticated by the
cookie must also carry the session's CSRF token in an `X-CSRFToken` header, else 403 `csrf-failed`. A Bearer
request is never a browser's ambient credential and needs no token.

A valid key is remembered in the process for AUTH_CACHE_SECONDS (a cachetools.TTLCache), so a client
polling a job costs one database query instead of two; a revoked key therefore stops working within that
many seconds (a key that was never accepted by this process is refused at once). Unknown keys are not
cached.

Guessing is throttled per client address (web.rate_limit's FailedAuthLimit): every malformed, unknown or
revoked key, and every session whose key no longer works, counts against the request's address, and an address
past DCGAN_FAILED_AUTH_PER_MINUTE in the window gets 429 `too-many-failed-authentications` (Retry-After) on
every /v1/ route before its key is looked at -- a valid key too, so a guess that hits is not told so. A request
with no credentials at all is not a guess (a dashboard whose session ended keeps polling) and is not counted;
neither is a CSRF refusal (its session is valid) nor the OpenAPI document. Signing in to the dashboard with a
key (web.pages.signin) counts and is throttled the same way.
"""

from __future__ import annotations

import threading

from cachetools import TTLCache
from flask import Flask, current_app, g, request
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from core.auth import authenticate, hash_key
from core.settings import Settings

from .problems import Problem
from .rate_limit import FailedAuthLimit, RateLimit, fixed_window_limiter
from .resources import db
from .session_auth import session_key_hash, session_tenant

OPEN_ENDPOINTS = frozenset({"health.openapi"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRFToken"
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_SIZE = 10_000


class KeyCache:
    """key hash -> tenant id, for AUTH_CACHE_SECONDS; thread-safe (a TTLCache is not), bounded."""

    def __init__(self, seconds: float = AUTH_CACHE_SECONDS, size: int = AUTH_CACHE_SIZE) -> None:
        self._entries: TTLCache = TTLCache(maxsize=size, ttl=seconds)
        self._lock = threading.Lock()

    def get(self, key_hash: str):
        with self._lock:
            return self._entries.get(key_hash)

    def put(self, key_hash: str, tenant) -> None:
        with self._lock:
            self._entries[key_hash] = tenant


def install(app: Flask, settings: Settings) -> None:
    app.extensions["dcgan"]["key_cache"] = KeyCache()
    limiter = fixed_window_limiter(settings)  # one Redis storage for both limits
    app.extensions["dcgan"]["rate_limiter"] = RateLimit(settings, limiter)
    app.extensions["dcgan"]["failed_auth"] = FailedAuthLimit(settings, limiter)
    app.before_request(_authenticate)


def open_endpoint(endpoint: str | None, path: str) -> bool:
    """Whether a route is served without a key."""
    return not path.startswith("/v1/") or endpoint in OPEN_ENDPOINTS


def unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="dcgan"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, slug="unauthorized", title="Unauthorized",
                   headers={"WWW-Authenticate": challenge})


def failed_authentication(detail: str, error: str) -> Problem:
    """A 401 for credentials that were sent and refused, counted against the client's address."""
    current_app.extensions["dcgan"]["failed_auth"].count(request.remote_addr)
    return unauthorized(detail, error)


def _authenticate() -> None:
    if request.url_rule is None or open_endpoint(request.endpoint, request.path):
        return
    parts = current_app.extensions["dcgan"]
    header = request.headers.get("Authorization")
    secret = _bearer_secret(header) if header is not None else None
    key_hash = hash_key(secret) if secret else None
    cache: KeyCache = parts["key_cache"]
    if key_hash is not None and (tenant := cache.get(key_hash)) is not None:
        # A key this process accepted moments ago (most requests): the address's failed authentications and
        # the key's rate limit in one Redis round trip, in the order of the path below.
        parts["rate_limiter"].check_with(parts["failed_auth"], request.remote_addr, key_hash[:32])
        g.tenant_id = tenant
        return
    parts["failed_auth"].check(request.remote_addr)
    if header is None and (session_hash := session_key_hash()) is not None:
        _authenticate_session(session_hash)
        return
    if header is None:
        raise unauthorized("send an API key: Authorization: Bearer <key> (dcgan keys create makes one)")
    if key_hash is None:
        raise failed_authentication("the Authorization header must be 'Bearer <key>'", "invalid_request")
    tenant = authenticate(db(), secret)
    if tenant is None:
        raise failed_authentication("the API key is unknown or revoked", "invalid_token")
    cache.put(key_hash, tenant)
    g.tenant_id = tenant
    parts["rate_limiter"].check(key_hash[:32])  # accepted keys only: no guesses


def _bearer_secret(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None when the header is not of that form."""
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        return None
    return secret


def _authenticate_session(key_hash: str) -> None:
    """A request of the dashboard's scripts: the session's key must still work, and an unsafe method must
    prove with the CSRF token that a page of this site sent it."""
    tenant = session_tenant()
    if tenant is None:
        raise failed_authentication("the API key this session signed in with is revoked or unknown; sign in again",
                                    "invalid_token")
    if request.method not in SAFE_METHODS:
        try:
            validate_csrf(request.headers.get(CSRF_HEADER))
        except ValidationError as exc:
            raise Problem(403, f"a request signed in by the session cookie must send the page's CSRF token in "
                               f"{CSRF_HEADER} ({exc})", slug="csrf-failed", title="CSRF check failed") from None
    g.tenant_id = tenant
    current_app.extensions["dcgan"]["rate_limiter"].check(key_hash[:32])
