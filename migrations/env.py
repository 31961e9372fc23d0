"""Alembic environment for syncd, on SQLite and PostgreSQL.

syncd configures alembic in code (``syncd.db.migrate``) and hands it an open
connection inside its own transaction (``config.attributes["connection"]``).
Without one, the URL comes from the ``sqlalchemy.url`` option (how a developer
autogenerates a new revision: see ``migrations/README``).

Batch mode is on for every engine: SQLite can alter a table only by copying
it, and batch operations do that there while running as plain ALTERs on
PostgreSQL, so one migration script serves both.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from syncd.db.engine import make_engine
from syncd.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kw: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        **kw,
    )


def run_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
