"""`dcgan up`'s parts that need no running platform (cli.servers); tests/e2e runs the whole of it."""

from __future__ import annotations

import stat

from sqlalchemy import select

from core.auth import authenticate, revoke_key
from core.db import Tenant, make_engine, make_session_factory


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
