"""Alembic entry point: migrates the database the platform's settings point at to core.db's schema.

The URL is, first found: `alembic -x url=...`, `sqlalchemy.url` in the Alembic config (tests set it),
then DATABASE_URL through `Settings.from_env()` (SQLite under DCGAN_DATA_DIR when unset), the same
object the web app and the worker read. A caller may also hand over an open connection in
`config.attributes["connection"]`; it is used as is.

On SQLite, migrations run with foreign keys off: batch mode rebuilds a table by copying it and dropping
the original, and with enforcement on that drop would cascade into the child tables. The integrity of
the result is checked afterwards instead.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import JSON, Connection, create_engine, event, pool, text

from core.db import Base, UTCDateTime, engine_url
from core.settings import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return (context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
            or Settings.from_env().database_url)


def render_item(type_: str, obj, autogen_context) -> str | bool:
    """Write core.db's column types into new revisions as plain SQLAlchemy types, so revisions never
    import app code and read like 0001_initial.py."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, JSON) and "postgresql" in getattr(obj, "_variant_mapping", {}):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def configure(**kwargs) -> None:
    url_or_dialect = kwargs.get("url") or kwargs["connection"].dialect.name
    context.configure(target_metadata=target_metadata, compare_type=True, render_item=render_item,
                      render_as_batch=str(url_or_dialect).startswith("sqlite"), **kwargs)


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    configure(url=engine_url(database_url()), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        violations = connection.execute(text("PRAGMA foreign_key_check")).all()
        if violations:
            raise RuntimeError(f"migration left rows that break foreign keys: {violations[:10]}")


def run_migrations_online() -> None:
    """Migrate over the caller's connection if given (used as is), else over a fresh one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = create_engine(engine_url(database_url()), poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        # Must be set outside a transaction, so on connect rather than in run_on.
        event.listen(engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute(
            "PRAGMA foreign_keys=OFF"))
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
