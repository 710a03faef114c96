"""Who a browser acts for: the dashboard's signed session cookie, which the pages (web.pages) require and the
/v1 API (web.auth) accepts beside Bearer keys.

Signing in with an API key keeps the key's tenant and the key's sha256 in the Flask session -- never the key
itself -- in a cookie signed with the app's secret key: `DCGAN_SECRET_KEY`, else a random one kept in
`<data_dir>/secret-key` (mode 0600), which every API process of one data directory reads, so a cookie signed
by one process is good in the others and after a restart. Every request checks the hash again against the
database (through web.auth's KeyCache, as a Bearer key is), so a revoked key ends its sessions within the
cache's seconds. The cookie is HttpOnly, SameSite=Lax, Secure when the request came over https, and lasts
SESSION_HOURS from signing in: it is not renewed by use, so a dashboard left open (its scripts poll) does not
keep a session alive forever, and the API's answers to those polls carry no Set-Cookie.
"""

from __future__ import annotations

import os
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select

from core.auth import authenticate, hash_key
from core.db import ApiKey
from core.settings import Settings

from .resources import db

SESSION_HOURS = 12
SECRET_KEY_FILE = "secret-key"
_TENANT, _KEY_HASH = "tenant", "key_hash"


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure exactly when the request came over https: a platform reached
    over plain http on 127.0.0.1 (`dcgan up`) must still be able to sign in. Behind a TLS-terminating proxy
    the proxy must say so (X-Forwarded-Proto with werkzeug's ProxyFix) for the flag to be set."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def install(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.secret_key or stored_secret_key(settings.data_dir)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME="dcgan_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
                      SESSION_REFRESH_EACH_REQUEST=False)


def stored_secret_key(data_dir: Path) -> str:
    """The secret in `<data_dir>/secret-key`, made on first use. Several API processes may start at once:
    each writes a complete candidate to a file of its own and links it into place, and a link that finds
    the name taken loses to the file already there, so nobody ever reads a half-written key."""
    path = Path(data_dir) / SECRET_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(candidate, path)
            except FileExistsError:
                pass  # another process was first: use its key
        finally:
            candidate.unlink()
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it (a new one is made) or set DCGAN_SECRET_KEY")
    return key


def sign_in(secret: str) -> bool:
    """Start a session for the key's tenant; False (and no session) for an unknown or revoked key. The old
    session's contents, its CSRF token included, are dropped, so a session cannot be planted beforehand."""
    tenant = authenticate(db(), secret.strip())
    session.clear()
    if tenant is None:
        return False
    session[_TENANT], session[_KEY_HASH] = str(tenant), hash_key(secret.strip())
    session.permanent = True
    return True


def sign_out() -> None:
    session.clear()


def session_key_hash() -> str | None:
    """The hash of the key the session was signed in with, or None without a session."""
    value = session.get(_KEY_HASH)
    return value if isinstance(value, str) else None


def session_tenant() -> uuid.UUID | None:
    """The tenant the request's session acts for, if its key still works; a session whose key was revoked
    (or whose tenant no longer matches it) is cleared and None returned."""
    key_hash = session_key_hash()
    if key_hash is None:
        return None
    tenant = tenant_of_key_hash(key_hash)
    if tenant is None or str(tenant) != session.get(_TENANT):
        session.clear()
        return None
    return tenant


def tenant_of_key_hash(key_hash: str) -> uuid.UUID | None:
    """The tenant of the unrevoked key with this hash, remembered in web.auth's KeyCache like a Bearer key."""
    cache = current_app.extensions["dcgan"]["key_cache"]
    tenant = cache.get(key_hash)
    if tenant is None:
        tenant = db().scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash,
                                                            ApiKey.revoked_at.is_(None)))
        if tenant is not None:
            cache.put(key_hash, tenant)
    return tenant
