"""Incremental engine: the change journal, each account's position in it, and provider-kept attributes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

``record_changes`` is appended to by triggers on every insert, update and delete
of ``contacts``, ``groups`` and ``group_members`` (so plain SQL is seen like any
other edit), and by the engine (records a pull found changed, records a run left
out of step). ``sync_positions`` keeps how far each account has read it. See
``syncd/db/models.py`` ("Change detection") for the protocol.

On PostgreSQL every journal row carries the id of the transaction that wrote it
(``pg_current_xact_id()``): positions there are transaction ids, which is what
makes reading the journal safe while other transactions are still writing to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, journal entity, the column naming the changed record) for every journalled table.
JOURNALLED = (("contacts", "contact", "id"), ("group_members", "contact", "contact_id"), ("groups", "group", "id"))
_EVENTS = ("insert", "update", "delete")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "record_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=True),
        sa.Column("remote_id", sa.Text(), nullable=True),
        sa.Column("txid", sa.BigInteger(), nullable=True),
        sa.Column("writer", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_record_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_record_changes_txid"), "record_changes", ["txid"])
    op.create_table(
        "sync_positions",
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("settings", sa.String(length=64), nullable=False),
        sa.Column("full_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_sync_positions")),
    )
    for table in ("remote_groups", "remote_contacts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("kept", _json(), server_default="{}", nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def downgrade() -> None:
    postgresql_ = op.get_bind().dialect.name == "postgresql"
    for table, _entity, _column in JOURNALLED:
        for event in _EVENTS:
            suffix = f" ON {table}" if postgresql_ else ""
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_journal_{event}{suffix}")
        if postgresql_:
            for event in _EVENTS:
                op.execute(f"DROP FUNCTION IF EXISTS syncd_journal_{table}_{event}()")
    for table in ("remote_groups", "remote_contacts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("kept")
    op.drop_table("sync_positions")
    op.drop_index(op.f("ix_record_changes_txid"), table_name="record_changes")
    op.drop_table("record_changes")


def _create_postgresql_triggers() -> None:
    # Statement-level triggers with transition tables: a bulk UPDATE of 100,000
    # rows writes its journal in one INSERT ... SELECT, not 100,000 trigger calls.
    # (A trigger with transition tables serves one event, hence three per table.)
    txid = "pg_current_xact_id()::text::bigint"
    for table, entity, column in JOURNALLED:
        for event in _EVENTS:
            sources = {"insert": ["new_rows"], "delete": ["old_rows"], "update": ["new_rows", "old_rows"]}[event]
            selects = " UNION ".join(f"SELECT {column} FROM {rows}" for rows in sources)
            referencing = " ".join(f"{'NEW' if rows == 'new_rows' else 'OLD'} TABLE AS {rows}" for rows in sources)
            op.execute(
                f"""
                CREATE FUNCTION syncd_journal_{table}_{event}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO record_changes (entity, canonical_id, txid)
                    SELECT '{entity}', changed.{column}, {txid} FROM ({selects}) AS changed;
                    RETURN NULL;
                END
                $$
                """
            )
            op.execute(
                f"CREATE TRIGGER trg_{table}_journal_{event} AFTER {event.upper()} ON {table} "
                f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION syncd_journal_{table}_{event}()"
            )


def _create_sqlite_triggers() -> None:
    # SQLite has row triggers only. An UPDATE that moves a row to another id
    # journals both ids.
    for table, entity, column in JOURNALLED:
        rows = {"insert": ["NEW"], "delete": ["OLD"], "update": ["NEW", "OLD"]}
        for event, sides in rows.items():
            inserts = " ".join(
                f"INSERT INTO record_changes (entity, canonical_id) SELECT '{entity}', {side}.{column}"
                + (f" WHERE OLD.{column} IS NOT NEW.{column};" if side == "OLD" and event == "update" else ";")
                for side in sides
            )
            op.execute(
                f"""
                CREATE TRIGGER trg_{table}_journal_{event} AFTER {event.upper()} ON {table}
                FOR EACH ROW
                BEGIN
                    {inserts}
                END
                """
            )
