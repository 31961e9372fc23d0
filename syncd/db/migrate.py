"""Schema migrations: apply them, and refuse to run on a schema that is behind.

Alembic is configured in code (no ``alembic.ini``): the scripts ship inside the
package as ``syncd._migrations`` (the top-level ``migrations/`` folder, mapped
by ``pyproject.toml``), so an installed syncd finds them wherever it runs. The
version table is alembic's default, ``alembic_version``.

Policy (issue 2, item 3): every command that touches the database calls
``check_schema`` first and refuses, naming ``syncd db upgrade``, when the schema
is missing or behind. One exception: a brand-new SQLite database (no tables at
all, typically a file that did not exist yet) may be created on the spot when
the caller passes ``allow_create_sqlite=True``, so the embedded default works
on first run. PostgreSQL is never created implicitly: a production database is
changed only by an explicit ``syncd db upgrade`` (``ExecStartPre`` in the
systemd unit).

``upgrade`` is safe to run from several processes at once (replicas starting
together): it serialises on a transaction-scoped lock (PostgreSQL advisory
transaction lock; SQLite ``BEGIN IMMEDIATE``) and re-reads the revision under it.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL

from syncd.db.engine import is_sqlite, make_engine
from syncd.errors import SchemaError

__all__ = ["alembic_config", "check_schema", "current_revision", "head_revision", "script_location", "upgrade"]

#: Key of the PostgreSQL advisory lock that serialises concurrent upgrades
#: (an arbitrary constant: "syncd" in ASCII).
_UPGRADE_LOCK_KEY = 0x73796E6364


def script_location() -> str:
    """The directory of the migration scripts (``env.py``, ``versions/``)."""
    return str(files("syncd._migrations"))


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic configuration pointing at the packaged scripts.

    With ``connection``, migrations run on it (inside the caller's transaction).
    """
    config = Config()
    config.set_main_option("script_location", script_location())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the code needs: the head of the packaged migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "syncd ships at least one migration"
    return head


def current_revision(engine: Engine | Connection) -> str | None:
    """The revision the database is at; None when it has no syncd schema."""
    if isinstance(engine, Connection):
        return MigrationContext.configure(engine).get_current_revision()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(url_or_engine: str | URL | Engine) -> bool:
    """Apply every pending migration; True if anything was applied, False if up to date."""
    if isinstance(url_or_engine, Engine):
        return _upgrade(url_or_engine)
    engine = make_engine(url_or_engine)
    try:
        return _upgrade(engine)
    finally:
        engine.dispose()


def check_schema(engine: Engine, *, allow_create_sqlite: bool = False) -> None:
    """Return if the schema is at the code's head; else raise ``SchemaError``.

    With ``allow_create_sqlite``, a SQLite database without any table gets the
    schema created instead (see the module docstring).
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None and allow_create_sqlite and is_sqlite(engine) and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    raise SchemaError(_schema_problem(engine, current, head))


def _upgrade(engine: Engine) -> bool:
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
        if current_revision(connection) == head_revision():
            return False
        command.upgrade(alembic_config(connection), "head")
        return True


def _schema_problem(engine: Engine, current: str | None, head: str) -> str:
    where = engine.url.render_as_string(hide_password=True)
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is None:
        return f"database schema is missing in {where} (code needs {head}): run `syncd db upgrade`"
    if current not in known:
        return (
            f"database schema in {where} is at {current}, which this syncd does not know "
            f"(newer than {head}?): upgrade syncd, or point it at another database"
        )
    return f"database schema is behind (at {current}, code needs {head}) in {where}: run `syncd db upgrade`"
