"""API keys (core.auth) on SQLite and PostgreSQL; `dcgan keys` is tested in tests/cli/test_admin.py."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import select, text

from core.auth import (KeyMatchError, TenantNameError, authenticate, create_key, ensure_tenant, list_keys,
                       revoke_key)
from core.db import ApiKey, Tenant, utcnow


def test_a_key_authenticates_its_tenant_until_revoked(session):
    key, secret = create_key(session, "alice")
    other, other_secret = create_key(session, "bob")
    session.commit()
    assert secret.startswith("dcg_") and len(secret) == 4 + 43 and key.prefix == secret[:12]
    alice = session.scalars(select(Tenant).where(Tenant.name == "alice")).one()
    assert authenticate(session, secret) == alice.id
    assert authenticate(session, other_secret) == other.tenant_id != alice.id
    assert authenticate(session, secret + "x") is None and authenticate(session, "dcg_nope") is None
    assert authenticate(session, secret[4:]) is None  # the secret without its scheme prefix

    revoked = revoke_key(session, secret)
    session.commit()
    assert revoked.id == key.id and revoked.revoked_at is not None
    assert authenticate(session, secret) is None
    assert authenticate(session, other_secret) == other.tenant_id  # only that key


def test_only_the_hash_is_stored(session, engine):
    _, secret = create_key(session, "alice")
    session.commit()
    with engine.connect() as connection:
        rows = [tuple(str(value) for value in row) for row in connection.execute(text("SELECT * FROM api_keys"))]
    assert len(rows) == 1
    stored = " ".join(rows[0])
    assert secret not in stored and secret[12:] not in stored  # neither the key nor its secret part
    assert hashlib.sha256(secret.encode()).hexdigest() in rows[0]


def test_a_second_key_of_a_tenant_reuses_it(session):
    first, _ = create_key(session, "alice")
    second, _ = create_key(session, "alice")
    session.commit()
    assert first.tenant_id == second.tenant_id and first.key_hash != second.key_hash
    assert session.scalar(select(Tenant.id).where(Tenant.name == "alice")) == first.tenant_id


def test_tenant_creation_is_race_safe(session_factory):
    """Several processes making the first key of one tenant at once: one tenant, every key on it."""
    barrier, results, errors = threading.Barrier(4), [], []

    def make() -> None:
        try:
            with session_factory() as session:
                barrier.wait()
                key, _ = create_key(session, "racers")
                session.commit()
                results.append(key.tenant_id)
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 4 and len(set(results)) == 1


def test_revoke_by_prefix_and_its_errors(session):
    tenant = ensure_tenant(session, "alice")
    for prefix in ("dcg_AAAAxxxx", "dcg_AAAByyyy"):  # two keys whose listed prefixes share "dcg_AAA"
        session.add(ApiKey(tenant_id=tenant.id, key_hash=hashlib.sha256(prefix.encode()).hexdigest(),
                           prefix=prefix, created_at=utcnow()))
    session.flush()
    with pytest.raises(KeyMatchError, match="2 keys start with"):
        revoke_key(session, "dcg_AAA")
    with pytest.raises(KeyMatchError, match="no key matches"):
        revoke_key(session, "dcg_ZZZ")
    with pytest.raises(KeyMatchError, match="whole key or its prefix"):
        revoke_key(session, "dcg_")
    with pytest.raises(KeyMatchError, match="no key matches"):  # a whole key that was never made
        revoke_key(session, "dcg_" + "x" * 43)
    assert revoke_key(session, "dcg_AAAB").prefix == "dcg_AAAByyyy"
    first_time = session.scalars(select(ApiKey.revoked_at).where(ApiKey.prefix == "dcg_AAAByyyy")).one()
    assert revoke_key(session, "dcg_AAAByyyy").revoked_at == first_time  # again: unchanged
    assert {(k.prefix, k.revoked_at is not None) for k in list_keys(session)} == {
        ("dcg_AAAAxxxx", False), ("dcg_AAAByyyy", True)}


@pytest.mark.parametrize("name", ["", " padded ", "x" * 101, "tab\there"])
def test_bad_tenant_names(session, name):
    with pytest.raises(TenantNameError):
        create_key(session, name)
