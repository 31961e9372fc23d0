"""Initial schema: the public tables, the engine's tables and the updated_at triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written by hand from an autogenerate draft, so it runs unchanged on SQLite and
PostgreSQL: portable defaults (``sa.false()``, ``CURRENT_TIMESTAMP``), plain
SQLAlchemy types rather than syncd's Python-side ``UTCDateTime`` (a migration
is a snapshot and must not change when the models do), and one trigger per
engine for ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables whose ``updated_at`` the triggers keep true for direct SQL updates.
TOUCHED_TABLES = ("contacts", "groups")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column:
    default = sa.func.current_timestamp() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def _text(name: str, *, default: str | None = None, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text(), server_default=default, nullable=nullable)


def upgrade() -> None:
    _create_public_tables()
    _create_engine_tables()
    if op.get_bind().dialect.name == "postgresql":
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TOUCHED_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_updated_at ON {table}")
        op.execute("DROP FUNCTION IF EXISTS syncd_touch_updated_at()")
    else:
        for table in TOUCHED_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_updated_at")
    for table in (
        "sync_leases", "pull_state", "links", "remote_contacts", "remote_groups",
        "change_log", "sync_runs", "group_members", "groups", "contacts",
    ):
        op.drop_table(table)


def _create_public_tables() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        _text("name", default=""),
        _text("surname", default=""),
        _text("email", default=""),
        sa.Column("extra", _json(), server_default="{}", nullable=False),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("created_at", nullable=False, now=True),
        _timestamp("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("phone", name=op.f("uq_contacts_phone")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _text("name"),
        _text("description", default=""),
        _timestamp("created_at", nullable=False, now=True),
        _timestamp("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_groups_lower_name", "groups", [sa.text("lower(name)")], unique=True)
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        _timestamp("created_at", nullable=False, now=True),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_group_members_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "contact_id", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_contact_id"), "group_members", ["contact_id"])
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _timestamp("started_at", nullable=False, now=True),
        _timestamp("finished_at"),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("summary", _json(), server_default="{}", nullable=False),
        _text("error", nullable=True),
        _text("owner", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        _timestamp("at", nullable=False, now=True),
        _text("provider"),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=True),
        _text("remote_id", nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        _text("error", nullable=True),
        _text("reason", nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _timestamp("next_attempt_at"),
        _timestamp("resolved_at"),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name=op.f("fk_change_log_run_id_sync_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_change_log_run_id"), "change_log", ["run_id"])
    op.create_index(op.f("ix_change_log_at"), "change_log", ["at"])
    op.create_index(op.f("ix_change_log_provider_status"), "change_log", ["provider", "status"])
    op.create_index(
        op.f("ix_change_log_provider_entity_canonical_id"), "change_log", ["provider", "entity", "canonical_id"]
    )


def _create_engine_tables() -> None:
    op.create_table(
        "remote_groups",
        _text("provider"),
        _text("remote_id"),
        _text("name"),
        _text("description", default=""),
        _timestamp("modified_at"),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("seen_run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("provider", "remote_id", name=op.f("pk_remote_groups")),
    )
    op.create_table(
        "remote_contacts",
        _text("provider"),
        _text("remote_id"),
        _text("phone"),
        sa.Column("fields", _json(), server_default="{}", nullable=False),
        sa.Column("groups", _json(), server_default="[]", nullable=False),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("modified_at"),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("seen_run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("provider", "remote_id", name=op.f("pk_remote_contacts")),
    )
    op.create_index(op.f("ix_remote_contacts_provider_phone"), "remote_contacts", ["provider", "phone"])
    op.create_table(
        "links",
        _text("provider"),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=False),
        _text("remote_id"),
        sa.Column("base", _json(), server_default="{}", nullable=False),
        sa.Column("base_fingerprint", sa.String(length=64), nullable=False),
        _timestamp("synced_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("provider", "entity", "canonical_id", name=op.f("pk_links")),
        sa.UniqueConstraint("provider", "entity", "remote_id", name=op.f("uq_links_provider_entity_remote_id")),
    )
    op.create_table(
        "pull_state",
        _text("provider"),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("complete", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("finished_at"),
        _text("error", nullable=True),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_pull_state")),
    )
    op.create_table(
        "sync_leases",
        _text("provider"),
        _text("owner", nullable=True),
        _text("host", nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        _timestamp("acquired_at"),
        _timestamp("expires_at", nullable=False, now=True),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_sync_leases")),
    )


def _create_postgresql_triggers() -> None:
    # An UPDATE that leaves updated_at as it was gets the statement's time; one
    # that sets it explicitly (an import carrying its own time) is respected.
    op.execute(
        """
        CREATE FUNCTION syncd_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
                NEW.updated_at := statement_timestamp();
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    for table in TOUCHED_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION syncd_touch_updated_at()"
        )


def _create_sqlite_triggers() -> None:
    # SQLite triggers cannot assign NEW, so an AFTER trigger updates the row
    # again. The first condition respects an UPDATE that set updated_at itself;
    # the second makes the trigger's own UPDATE never qualify, so it cannot
    # recurse even under PRAGMA recursive_triggers. CURRENT_TIMESTAMP is UTC,
    # 'YYYY-MM-DD HH:MM:SS', which syncd's UTCDateTime reads back.
    for table in TOUCHED_TABLES:
        op.execute(
            f"""
            CREATE TRIGGER trg_{table}_updated_at AFTER UPDATE ON {table}
            FOR EACH ROW
            WHEN NEW.updated_at IS OLD.updated_at AND NEW.updated_at IS NOT CURRENT_TIMESTAMP
            BEGIN
                UPDATE {table} SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
            END
            """
        )
