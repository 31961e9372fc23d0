"""SQLAlchemy models of syncd's database (design §3), for SQLite and PostgreSQL.

The schema is created and upgraded only by the alembic migrations in
``migrations/`` (``syncd db upgrade``); these models must agree with them, and
a test runs alembic's autogenerate comparison on both engines to prove it.

Public tables
=============

Users read these, and may write ``contacts``, ``groups`` and ``group_members``
with plain SQL: the next run carries the change out. Columns may be added,
never renamed.

``contacts`` — the canonical contact book
    ``id`` (integer, never reused, even on SQLite), ``phone`` (E.164, unique;
    rows written by SQL in another format are normalised or reported by the
    engine), ``name``, ``surname``, ``email`` (text, ``''`` when unknown),
    ``extra`` (JSON object of further fields), ``opted_out`` (sticky: syncd
    never clears it), ``created_at``, ``updated_at``.
``groups`` — canonical groups
    ``id``, ``name`` (unique case-insensitively: a unique index on
    ``lower(name)``; SQLite's ``lower`` folds ASCII letters only),
    ``description``, ``created_at``, ``updated_at``.
``group_members`` — canonical memberships
    ``group_id``, ``contact_id`` (both cascade when the group or the contact is
    deleted), ``created_at``.
``sync_runs`` — one row per run
    ``id``, ``started_at``, ``finished_at`` (null while running), ``trigger``
    (``schedule``/``manual``), ``status`` (``running``/``ok``/``partial``/
    ``failed``), ``summary`` (JSON counts), ``error``, ``owner`` (the
    ``host:pid`` of the replica that ran it).
``change_log`` — every change, in and out
    ``id``, ``run_id``, ``at``, ``provider`` (the account's configured name),
    ``entity`` (``contact``/``group``/``membership``), ``action`` (``create``/
    ``update``/``delete``/``link``/``conflict``/``duplicate``/``guarded``),
    ``direction`` (``inbound``/``outbound``), ``canonical_id``, ``remote_id``,
    ``status`` (``planned``/``pending``/``applied``/``failed``/``rejected``/
    ``skipped``; a pending delete: ``awaiting_approval``/``approved``/
    ``declined``/``cancelled``), ``before``, ``after`` (JSON), ``error``, ``reason`` (why the
    operation was planned), ``attempts``, ``next_attempt_at``, ``resolved_at``
    (when a manual conflict was settled), ``fingerprint`` (the local
    projection a rejected operation was planned for: it is retried only once
    the canonical record changed).

``updated_at`` stays true for direct SQL: a trigger made by the migration sets
it on every ``UPDATE`` of ``contacts`` or ``groups`` that does not itself set
it to a new value (PostgreSQL: ``statement_timestamp()``; SQLite:
``CURRENT_TIMESTAMP``, to the second). Adding or removing a membership does
not touch the contact's ``updated_at``; it is journalled (below) like any other
change, which is how the engine notices it.

Change detection
================

A run reconciles only the records that may be out of step; everything else is
known to be in step and is not read, parsed or projected.

* **The journal** (``record_changes``). Triggers append a row for every
  ``INSERT``, ``UPDATE`` and ``DELETE`` of ``contacts``, ``groups`` and
  ``group_members`` (a membership change journals its contact), so edits made
  with plain SQL are seen exactly like the engine's own. The engine appends
  rows too, naming one account: the remote records a pull found new, changed
  or gone (written with the mirror rows, in the same transaction, so a run
  killed after its pull still hands them on), and the records a run left out
  of step (a failed push, a guarded delete, a link dropped...).
* **Positions** (``sync_positions``). Each account remembers how far it has
  read the journal. A run reads the rows past the account's position (the
  account's own rows and those of no account), reconciles those records, and
  on success moves the position to where the journal stood *when the run
  started*, so whatever others wrote during the run is read again next time.
  The run's own writes are tagged with its id as they are made (``writer``,
  in the writing transaction: SQLite's rows past the highest ``seq`` when the
  transaction took the write lock, PostgreSQL's rows of its transaction id),
  and an account that finished a run skips that run's rows: what a run did is
  not work for the next one, and a run that did not finish hands all of it on.
  On SQLite writers are serialised, so the position is the highest ``seq``
  seen. On PostgreSQL transactions commit out of ``seq`` order, so each row
  carries its writer's transaction id and the position is the oldest
  transaction still running when the run started (``pg_snapshot_xmin``): every
  row of an older transaction is already visible, and a row of a transaction
  still running then is at or past the position, so it is read by the next run
  whatever order the transactions commit in.
* **Remote side.** Each pulled record is fingerprinted as its page arrives and
  compared with the mirror's stored fingerprint (one lean query); an unchanged
  record is dropped there and then.
* **Full runs** reconcile every record: ``syncd sync --full``, every
  ``sync.full_every``, and whenever an account has no position yet, its
  settings changed in a way that changes projections, or its position fell
  behind the journal's pruned start. A full run and an incremental run plan
  the same operations (a hypothesis state-machine test holds them to it).

The journal is pruned at the end of each run up to the lowest position of the
configured accounts.

Engine tables
=============

Private to the engine; readable, but not an interface.

``remote_groups`` — the mirror of each account's groups, as last pulled
    ``provider``, ``remote_id`` (together the key), ``name``,
    ``description``, ``modified_at`` (when the provider reports one),
    ``fingerprint``, ``seen_run_id`` (the last run whose pull listed it),
    ``kept`` (JSON: attributes the provider owns and syncd must resend on a
    write that replaces the record, such as a SendHub group's keyword).
``remote_contacts`` — the mirror of each account's contacts
    ``provider``, ``remote_id`` (key), ``phone`` (E.164 when it parses, else
    the provider's value; indexed with ``provider``), ``fields`` (JSON, the
    provider's field space), ``groups`` (JSON list of remote group ids),
    ``opted_out``, ``modified_at``, ``fingerprint`` (of the record as the
    provider sent it), ``seen_run_id``, ``kept`` (as for groups). For an
    outbound-only account (smsend contacts) it holds what syncd last wrote.
``links`` — which remote record is which canonical record, with the base
    ``provider``, ``entity`` (``contact``/``group``), ``canonical_id``,
    ``remote_id``, ``base`` (JSON: the projected field values at the last
    successful sync), ``base_fingerprint``, ``synced_at``. Key (provider,
    entity, canonical_id); (provider, entity, remote_id) is unique. No foreign
    key to the canonical tables on purpose: a link whose canonical row was
    deleted by SQL is how the engine sees that deletion.
``pull_state`` — the last pull per account
    ``provider`` (key), ``run_id``, ``complete`` (an incomplete pull infers no
    deletion), ``finished_at``, ``error``.
``record_changes`` — the change journal (see "Change detection")
    ``seq`` (key, never reused), ``provider`` (null: a change to the canonical
    book; else the account an engine-written row concerns), ``entity``
    (``contact``/``group``), ``canonical_id`` or ``remote_id``, ``txid``
    (PostgreSQL: the writing transaction's id; null on SQLite), ``writer``
    (the run whose own writes the row records; null for every other writer).
``sync_positions`` — each account's place in the journal
    ``provider`` (key), ``position`` (a ``seq`` on SQLite, a transaction id on
    PostgreSQL), ``settings`` (a fingerprint of the settings projections
    depend on: when it changes, the next run is a full one), ``full_at``
    (the last full run), ``run_id`` (the run that moved it there). The row
    ``*`` holds the journal's pruned start.
``opt_outs`` — opt-outs providers reported, remembered by number
    ``phone`` (key, E.164), ``provider`` and ``origin`` (how it got there:
    smsend's ``STOPSMS``/``WEB``/``API``, SendHub's ``STOP``), ``listed_at``
    (when the provider recorded it, when it says), ``recorded_at``. A number
    the book does not hold yet starts opted out once it is added.
``sync_leases`` — which replica syncs which account (design §7)
    ``provider`` (key: the account name), ``owner`` (``host:pid:uuid``),
    ``host``, ``pid``, ``acquired_at``, ``expires_at``, ``generation`` (the
    fencing token, raised at every take-over). A lease is free when
    ``owner`` is null or ``expires_at`` has passed.

Conventions: timestamps are timezone-aware UTC in Python (``UTCDateTime``);
JSON columns are ``jsonb`` on PostgreSQL and text on SQLite, and SQL ``NULL``
(not JSON ``null``) when None; JSON values are replaced, never mutated in place
(in-place changes are not tracked). Constraint and index names follow
``NAMING_CONVENTION`` so migrations name them the same on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "OptOutRow",
    "ChangeLogRow",
    "ContactRow",
    "EMPTY",
    "GroupMemberRow",
    "GroupRow",
    "JSONValue",
    "LinkRow",
    "PullStateRow",
    "RecordChangeRow",
    "RemoteContactRow",
    "RemoteGroupRow",
    "SyncLeaseRow",
    "SyncPositionRow",
    "SyncRunRow",
    "UTCDateTime",
    "table_of",
]

#: Deterministic names for every constraint and index, identical on SQLite and
#: PostgreSQL, so a later migration can drop or alter one by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back timezone-aware in UTC.

    Naive datetimes are refused on write: a naive value is ambiguous and
    silently storing local time as UTC is the bug this type exists to stop.
    On SQLite the value is text; both the ORM's ``YYYY-MM-DD HH:MM:SS.ffffff``
    and ``CURRENT_TIMESTAMP``'s ``YYYY-MM-DD HH:MM:SS`` (and any ISO 8601 a
    user writes by SQL) read back; strings without an offset are UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: syncd stores timezone-aware UTC only")
        utc = value.astimezone(UTC)
        # SQLite has no timezone type: store the UTC wall time as text.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def JSONValue() -> JSON:  # noqa: N802 (reads as a type in column definitions)
    """JSON text on SQLite, ``jsonb`` on PostgreSQL (comparable, indexable); None is SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _now_column(*, on_update: bool = False) -> Mapped[datetime]:
    """A not-null timestamp defaulting to the database's current time.

    ``on_update`` marks a column the updated_at trigger maintains: the ORM then
    reloads it after an UPDATE instead of trusting its stale value.
    """
    return mapped_column(
        UTCDateTime(),
        nullable=False,
        server_default=func.current_timestamp(),
        server_onupdate=FetchedValue() if on_update else None,
    )


#: The empty-string default, spelled as SQL: alembic's SQLite comparison
#: misreads a plain ``""`` default as different from the migrated ``DEFAULT ''``.
EMPTY = text("''")


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """A model's table, for Core statements (the ORM types ``__table__`` loosely)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# --- public tables -----------------------------------------------------------------


class ContactRow(Base):
    """A canonical contact (table ``contacts``)."""

    __tablename__ = "contacts"
    # AUTOINCREMENT: SQLite would otherwise reuse the id of a deleted last row,
    # and a link still pointing at that id would mistake a new contact for it.
    __table_args__ = (UniqueConstraint("phone"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False, server_default=EMPTY)
    surname: Mapped[str] = mapped_column(Text, nullable=False, server_default=EMPTY)
    email: Mapped[str] = mapped_column(Text, nullable=False, server_default=EMPTY)
    extra: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")
    opted_out: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column(on_update=True)


class GroupRow(Base):
    """A canonical group (table ``groups``)."""

    __tablename__ = "groups"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default=EMPTY)
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column(on_update=True)


# Case-insensitive uniqueness of group names. An expression index works on both
# engines, unlike a CHECK or a citext column (PostgreSQL only).
Index("uq_groups_lower_name", func.lower(GroupRow.__table__.c.name), unique=True)


class GroupMemberRow(Base):
    """A canonical membership (table ``group_members``)."""

    __tablename__ = "group_members"
    __table_args__ = (PrimaryKeyConstraint("group_id", "contact_id"),)

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    # Indexed: "which groups is this contact in" is the engine's common lookup;
    # the primary key already serves lookups by group.
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _now_column()


class SyncRunRow(Base):
    """One sync run (table ``sync_runs``)."""

    __tablename__ = "sync_runs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = _now_column()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(Text)


class ChangeLogRow(Base):
    """One planned or performed change (table ``change_log``)."""

    __tablename__ = "change_log"
    __table_args__ = (
        Index(None, "provider", "status"),
        Index(None, "provider", "entity", "canonical_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"), index=True)
    at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=func.current_timestamp(), index=True
    )
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    entity: Mapped[str] = mapped_column(String(16), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    canonical_id: Mapped[int | None] = mapped_column(Integer)
    remote_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONValue())
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONValue())
    error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fingerprint: Mapped[str | None] = mapped_column(String(64))


# --- engine tables -----------------------------------------------------------------


class RemoteGroupRow(Base):
    """A provider's group as last pulled (table ``remote_groups``)."""

    __tablename__ = "remote_groups"
    __table_args__ = (PrimaryKeyConstraint("provider", "remote_id"),)

    provider: Mapped[str] = mapped_column(Text)
    remote_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default=EMPTY)
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    seen_run_id: Mapped[int | None] = mapped_column(Integer)
    kept: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")


class RemoteContactRow(Base):
    """A provider's contact as last pulled, or as last written (table ``remote_contacts``)."""

    __tablename__ = "remote_contacts"
    __table_args__ = (
        PrimaryKeyConstraint("provider", "remote_id"),
        Index(None, "provider", "phone"),
    )

    provider: Mapped[str] = mapped_column(Text)
    remote_id: Mapped[str] = mapped_column(Text)
    phone: Mapped[str] = mapped_column(Text, nullable=False)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")
    groups: Mapped[list[str]] = mapped_column(JSONValue(), nullable=False, server_default="[]")
    opted_out: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    seen_run_id: Mapped[int | None] = mapped_column(Integer)
    kept: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")


class LinkRow(Base):
    """Remote id ↔ canonical id, with the base of the three-way merge (table ``links``)."""

    __tablename__ = "links"
    __table_args__ = (
        PrimaryKeyConstraint("provider", "entity", "canonical_id"),
        UniqueConstraint("provider", "entity", "remote_id"),
    )

    provider: Mapped[str] = mapped_column(Text)
    entity: Mapped[str] = mapped_column(String(16))
    canonical_id: Mapped[int] = mapped_column(Integer)
    remote_id: Mapped[str] = mapped_column(Text, nullable=False)
    base: Mapped[dict[str, Any]] = mapped_column(JSONValue(), nullable=False, server_default="{}")
    base_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    synced_at: Mapped[datetime] = _now_column()


class PullStateRow(Base):
    """The last pull of one account and whether it was complete (table ``pull_state``)."""

    __tablename__ = "pull_state"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class SyncLeaseRow(Base):
    """The lease one replica holds on one account (table ``sync_leases``)."""

    __tablename__ = "sync_leases"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    owner: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Defaults to "now": a row inserted without an expiry is free at once.
    expires_at: Mapped[datetime] = _now_column()
    generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")



class RecordChangeRow(Base):
    """One journal entry: a record that may have changed (table ``record_changes``)."""

    __tablename__ = "record_changes"
    __table_args__ = {"sqlite_autoincrement": True}

    # INTEGER on SQLite: only an INTEGER PRIMARY KEY can be AUTOINCREMENT (never reused).
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                     autoincrement=True)
    provider: Mapped[str | None] = mapped_column(Text)
    entity: Mapped[str] = mapped_column(String(16), nullable=False)
    canonical_id: Mapped[int | None] = mapped_column(Integer)
    remote_id: Mapped[str | None] = mapped_column(Text)
    txid: Mapped[int | None] = mapped_column(BigInteger, index=True)
    writer: Mapped[int | None] = mapped_column(Integer)


class SyncPositionRow(Base):
    """How far one account has read the journal (table ``sync_positions``)."""

    __tablename__ = "sync_positions"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, nullable=False)
    settings: Mapped[str] = mapped_column(String(64), nullable=False)
    full_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    run_id: Mapped[int | None] = mapped_column(Integer)


class OptOutRow(Base):
    """An opt-out a provider reported (table ``opt_outs``)."""

    __tablename__ = "opt_outs"
    __table_args__ = (Index(None, "provider", "listed_at"),)

    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    origin: Mapped[str] = mapped_column(Text, nullable=False)
    listed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = _now_column()
