"""Tenants' API keys: made here, stored only as their sha256, looked up by that hash on every request.

A key is `dcg_` followed by 43 URL-safe characters (32 random bytes). Its secret is shown once, when it is
made; the database keeps the sha256 hex of it (`ApiKey.key_hash`, unique) and its first 12 characters
(`prefix`), so a listing can tell keys apart without being able to use them. A revoked key keeps its row
(with `revoked_at`), so a listing still shows it and it can never authenticate again.

The secret carries 256 bits of entropy, so a plain (unsalted, fast) hash is enough: there is nothing to
guess, and an index lookup by hash needs no constant-time comparison. Functions run inside the caller's
transaction; the caller commits.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import db
from core.db import ApiKey, Tenant, utcnow

KEY_PREFIX = "dcg_"
SHOWN_PREFIX_LENGTH = 12
MAX_TENANT_NAME = 100


class KeyMatchError(LookupError):
    """No key, or more than one, matches what was given to revoke (the message says which)."""


class TenantNameError(ValueError):
    """A tenant name that cannot be used (empty, too long, or with control characters)."""


class KeyListing(NamedTuple):
    prefix: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if missing; safe when several processes create it at once."""
    if not name or len(name) > MAX_TENANT_NAME or not name.isprintable() or name != name.strip():
        raise TenantNameError(f"tenant: 1 to {MAX_TENANT_NAME} printable characters without surrounding "
                              f"spaces, got {name!r}")
    return db.ensure_tenant(session, name)


def create_key(session: Session, tenant_name: str) -> tuple[ApiKey, str]:
    """A new key for the tenant (created if missing): its row and the secret, which exists nowhere else."""
    tenant = ensure_tenant(session, tenant_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=uuid.uuid4(), tenant_id=tenant.id, key_hash=hash_key(secret),
                 prefix=secret[:SHOWN_PREFIX_LENGTH], created_at=utcnow())
    session.add(key)
    session.flush()
    return key, secret


def revoke_key(session: Session, key_or_prefix: str) -> ApiKey:
    """Revoke the key given in full, or by a prefix that matches exactly one key (listings show 12 chars).

    Revoking a revoked key is allowed and keeps its first revocation time.
    """
    if not key_or_prefix.startswith(KEY_PREFIX) or len(key_or_prefix) <= len(KEY_PREFIX):
        raise KeyMatchError(f"give a whole key or its prefix as `dcgan keys list` shows it: one that "
                            f"starts with {KEY_PREFIX!r} and is longer")
    if len(key_or_prefix) > SHOWN_PREFIX_LENGTH:  # longer than any listed prefix: a whole key
        found = list(session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key_or_prefix))))
    else:
        found = list(session.scalars(select(ApiKey).where(ApiKey.prefix.startswith(key_or_prefix,
                                                                                      autoescape=True))))
    if not found:
        raise KeyMatchError(f"no key matches {key_or_prefix[:SHOWN_PREFIX_LENGTH]!r}")
    if len(found) > 1:
        raise KeyMatchError(f"{len(found)} keys start with {key_or_prefix!r}: give more of the key")
    key = found[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_keys(session: Session) -> list[KeyListing]:
    """Every key, oldest first: prefix, tenant name, created, revoked (never the secret: it is not kept)."""
    rows = session.execute(select(ApiKey.prefix, Tenant.name, ApiKey.created_at, ApiKey.revoked_at)
                           .join(Tenant, Tenant.id == ApiKey.tenant_id)
                           .order_by(ApiKey.created_at, ApiKey.id))
    return [KeyListing(*row) for row in rows]


def authenticate(session: Session, secret: str) -> uuid.UUID | None:
    """The tenant the key belongs to, or None for an unknown or revoked key."""
    if not secret.startswith(KEY_PREFIX):
        return None
    row = session.execute(select(ApiKey.tenant_id, ApiKey.revoked_at)
                          .where(ApiKey.key_hash == hash_key(secret))).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row.tenant_id
