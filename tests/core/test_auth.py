"""API keys (core.auth) on SQLite and PostgreSQL, and the `dcgan keys` command run as a user runs it."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from core.auth import (KeyMatchError, TenantNameError, authenticate, create_key, ensure_tenant, list_keys,
                       revoke_key)
from core.db import ApiKey, Tenant, make_engine, make_session_factory, utcnow

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def _dcgan(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "keys", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_dcgan_keys_on_a_new_database(empty_database_url, tmp_path):
    """`dcgan keys create` migrates a database that has no schema yet, prints the key as its last line;
    `list` never shows it; `revoke` by the listed prefix makes it fail to authenticate."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DCGAN_DATA_DIR")}
    env.update(DATABASE_URL=empty_database_url, DCGAN_DATA_DIR=str(tmp_path / "unused"))
    created = _dcgan("create", "--tenant", "ci", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("dcg_") and len(secret) == 47

    engine = make_engine(empty_database_url)
    try:
        with make_session_factory(engine)() as session:
            tenant = authenticate(session, secret)
            assert tenant == session.scalar(select(Tenant.id).where(Tenant.name == "ci"))

        listed = _dcgan("list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert secret[:12] in listed.stdout and "ci" in listed.stdout and secret not in listed.stdout

        revoked = _dcgan("revoke", secret[:12], env=env)
        assert revoked.returncode == 0, revoked.stderr
        with make_session_factory(engine)() as session:
            assert authenticate(session, secret) is None
        row = [line for line in _dcgan("list", env=env).stdout.splitlines() if line.startswith(secret[:12])]
        assert len(row) == 1 and not row[0].rstrip().endswith("-")  # a revocation time is shown

        unknown = _dcgan("revoke", "dcg_" + uuid.uuid4().hex[:8], env=env)
        assert unknown.returncode == 2 and "no key matches" in unknown.stderr
        assert _dcgan("create", "--tenant", "", env=env).returncode == 2
    finally:
        engine.dispose()


def test_dcgan_up_makes_its_local_key_once(tmp_path):
    """`dcgan up`'s key file: made on the first start (mode 600, tenant "local"), reused on later starts,
    replaced when the key in it no longer authenticates."""
    from cli.admin import upgrade_database
    from cli.servers import local_api_key
    from core.settings import Settings

    settings = Settings(data_dir=tmp_path).with_defaults()
    engine = make_engine(settings.database_url)  # makes the SQLite file's directory
    upgrade_database(settings.database_url)
    try:
        path, new_key = local_api_key(settings)
        assert path == tmp_path / "api-key" and new_key is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == new_key
        with make_session_factory(engine)() as session:
            assert authenticate(session, new_key) == session.scalar(select(Tenant.id).where(Tenant.name == "local"))

        assert local_api_key(settings) == (path, None) and path.read_text().strip() == new_key

        with make_session_factory(engine)() as session:
            revoke_key(session, new_key)
            session.commit()
        path.chmod(0o644)
        _, replacement = local_api_key(settings)
        assert replacement not in (None, new_key) and path.read_text().strip() == replacement
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".api-key")] == []
    finally:
        engine.dispose()
