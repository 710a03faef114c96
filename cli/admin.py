"""`dcgan db upgrade` and `dcgan keys create|revoke|list`: the schema and the API keys.

Both read `DATABASE_URL` / `DCGAN_DATA_DIR` like the servers; `keys` brings the schema up to date first, so
it works on a new database. The migrations are the Alembic revisions under migrations/ beside this package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = ("db", "keys")


def add_commands(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply every Alembic migration")
    keys = sub.add_parser("keys", help="API keys (reads DATABASE_URL / DCGAN_DATA_DIR like the servers)")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    create = keys_sub.add_parser("create", help="make a key for a tenant (created if new); prints it once, "
                                                "as the last line")
    create.add_argument("--tenant", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key, given whole or by the prefix `keys list` shows")
    revoke.add_argument("key")
    keys_sub.add_parser("list", help="prefix, tenant, created and revoked time of every key (never the key)")


def run(args: argparse.Namespace) -> int:
    return {"db": _db, "keys": _keys}[args.command](args)


def upgrade_database(database_url: str) -> None:
    """Apply every Alembic migration to `database_url`."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[1]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def _db(args: argparse.Namespace) -> int:
    from core.settings import Settings

    upgrade_database(Settings.from_env().database_url)
    print("database schema is at the newest revision")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from core.auth import KeyMatchError, TenantNameError, create_key, list_keys, revoke_key
    from core.db import make_engine, make_session_factory
    from core.settings import Settings

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)  # first: it makes a SQLite file's directory
    upgrade_database(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if args.keys_action == "create":
                key, secret = create_key(session, args.tenant)
                session.commit()
                print(f"API key {key.prefix}... for tenant {args.tenant!r}; it is shown only now, keep it:")
                print(secret, flush=True)
            elif args.keys_action == "revoke":
                key = revoke_key(session, args.key)
                session.commit()
                print(f"revoked {key.prefix}... (at {key.revoked_at.isoformat(timespec='seconds')})")
            else:
                print(f"{'prefix':<16} {'tenant':<24} {'created':<25} revoked")
                for row in list_keys(session):
                    revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
                    print(f"{row.prefix + '...':<16} {row.tenant:<24} "
                          f"{row.created_at.isoformat(timespec='seconds'):<25} {revoked}")
    except (KeyMatchError, TenantNameError) as exc:
        print(f"dcgan keys: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0
