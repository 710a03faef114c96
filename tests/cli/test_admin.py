"""`dcgan keys` and `dcgan db upgrade` (cli.admin) as a user runs them: real subprocesses on a new database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from core.auth import authenticate
from core.db import Tenant, make_engine, make_session_factory

REPO_ROOT = Path(__file__).resolve().parents[2]


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
