"""The schema: migrations agree with the models, and the database enforces what design §3 promises.

Every test that takes ``db_url`` or ``migrated_engine`` runs on SQLite and, when
``SYNCD_TEST_POSTGRES_URL`` is set, on PostgreSQL.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import tomllib
import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from syncd.db import migrate
from syncd.db.engine import make_engine, session_factory
from syncd.db.migrate import alembic_config, check_schema, current_revision, head_revision, upgrade
from syncd.db.models import Base, ChangeLogRow, ContactRow, GroupMemberRow, GroupRow, SyncRunRow
from syncd.errors import SchemaError

ROOT = Path(__file__).resolve().parents[2]
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def _insert_contact(engine: Engine, phone: str = "+393401234567", **values: object) -> int:
    with session_factory(engine).begin() as session:
        row = ContactRow(phone=phone, **values)
        session.add(row)
        session.flush()
        return row.id


# --- upgrade ----------------------------------------------------------------------


def test_upgrade_applies_once_then_reports_up_to_date(db_url: str) -> None:
    assert upgrade(db_url) is True
    assert upgrade(db_url) is False
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision() == "0004"
        check_schema(engine)
    finally:
        engine.dispose()


def test_concurrent_upgrades_apply_exactly_once(db_url: str) -> None:
    results: list[bool] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(upgrade(db_url))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [False, True]


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(migrated_engine).get_table_names()) <= {"alembic_version"}
    assert upgrade(migrated_engine) is True
    assert set(Base.metadata.tables) <= set(inspect(migrated_engine).get_table_names())


# --- models and migrations agree --------------------------------------------------------


def test_autogenerate_finds_no_difference_between_models_and_migrations(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            diff = compare_metadata(context, Base.metadata)
    assert diff == []
    skipped = {str(w.message) for w in caught}
    if migrated_engine.dialect.name == "sqlite":
        # SQLAlchemy cannot reflect expression indexes on SQLite, so both it and
        # alembic skip the one on lower(name), saying so; that index is checked
        # directly in test_sqlite_has_the_case_insensitive_group_index. Nothing
        # else may be skipped.
        assert skipped and all("expression-based index" in m and "uq_groups_lower_name" in m for m in skipped)
    else:
        assert skipped == set()


def test_sqlite_has_the_case_insensitive_group_index(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as connection:
        (sql,) = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'uq_groups_lower_name'"
        ).fetchone()
    connection.close()
    assert " ".join(sql.split()) == "CREATE UNIQUE INDEX uq_groups_lower_name ON groups (lower(name))"


# --- constraints ----------------------------------------------------------------------


def test_phone_is_unique(migrated_engine: Engine) -> None:
    _insert_contact(migrated_engine, "+393401234567")
    with pytest.raises(IntegrityError):
        _insert_contact(migrated_engine, "+393401234567", name="Other")


def test_group_names_are_unique_case_insensitively(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.execute(text("INSERT INTO groups (name) VALUES ('Friends'), ('Family')"))
    with pytest.raises(IntegrityError), migrated_engine.begin() as connection:
        connection.execute(text("INSERT INTO groups (name) VALUES ('FRIENDS')"))


def test_memberships_cascade_with_their_contact_and_their_group(migrated_engine: Engine) -> None:
    alice, bob = _insert_contact(migrated_engine, "+393401111111"), _insert_contact(migrated_engine, "+393402222222")
    with session_factory(migrated_engine).begin() as session:
        friends, family = GroupRow(name="Friends"), GroupRow(name="Family")
        session.add_all([friends, family])
        session.flush()
        session.add_all(
            GroupMemberRow(group_id=g.id, contact_id=c) for g in (friends, family) for c in (alice, bob)
        )
    with migrated_engine.begin() as connection:
        connection.execute(text("DELETE FROM contacts WHERE id = :id"), {"id": alice})
        connection.execute(text("DELETE FROM groups WHERE id = :id"), {"id": family.id})
    with migrated_engine.connect() as connection:
        rows = connection.execute(text("SELECT group_id, contact_id FROM group_members")).all()
    assert [tuple(r) for r in rows] == [(friends.id, bob)]


def test_ids_of_deleted_contacts_are_never_reused(migrated_engine: Engine) -> None:
    first = _insert_contact(migrated_engine, "+393401111111")
    last = _insert_contact(migrated_engine, "+393402222222")
    with migrated_engine.begin() as connection:
        connection.execute(delete(ContactRow).where(ContactRow.id == last))
    assert _insert_contact(migrated_engine, "+393403333333") > last > first


def test_contact_defaults_fill_the_columns_a_plain_sql_insert_leaves_out(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.execute(text("INSERT INTO contacts (phone) VALUES ('+15005550006')"))
    with session_factory(migrated_engine)() as session:
        row = session.scalars(select(ContactRow)).one()
    assert (row.name, row.surname, row.email, row.extra, row.opted_out) == ("", "", "", {}, False)
    assert row.created_at.tzinfo is UTC and abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_json_none_is_sql_null_and_values_round_trip(migrated_engine: Engine) -> None:
    with session_factory(migrated_engine).begin() as session:
        run = SyncRunRow(trigger="manual", summary={"created": 2})
        session.add(run)
        session.flush()
        session.add_all([
            ChangeLogRow(run_id=run.id, provider="sendhub", entity="contact", action="create",
                         direction="outbound", status="planned", before=None, after={"name": "Ada", "tags": [1]}),
        ])
    with migrated_engine.connect() as connection:
        nulls = connection.execute(text("SELECT count(*) FROM change_log WHERE before IS NULL")).scalar_one()
    with session_factory(migrated_engine)() as session:
        entry = session.scalars(select(ChangeLogRow)).one()
        summary = session.scalars(select(SyncRunRow.summary)).one()
    assert nulls == 1
    assert (entry.after, entry.attempts, summary) == ({"name": "Ada", "tags": [1]}, 0, {"created": 2})


# --- updated_at --------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["contacts", "groups"])
def test_updated_at_trigger_advances_on_plain_sql_update(migrated_engine: Engine, table: str) -> None:
    with migrated_engine.begin() as connection:
        if table == "contacts":
            connection.execute(text("INSERT INTO contacts (phone, name) VALUES ('+393401234567', 'Ada')"))
        else:
            connection.execute(text("INSERT INTO groups (name) VALUES ('Ada')"))
        # Setting updated_at explicitly is respected: the trigger leaves it alone.
        connection.execute(text(f"UPDATE {table} SET updated_at = :old"), {"old": LONG_AGO})
    assert _updated_at(migrated_engine, table) == LONG_AGO

    before = datetime.now(UTC).replace(microsecond=0)
    with migrated_engine.begin() as connection:
        connection.execute(text(f"UPDATE {table} SET name = 'Grace'"))
    touched = _updated_at(migrated_engine, table)
    assert before <= touched <= datetime.now(UTC) + timedelta(seconds=1)


def test_updated_at_advances_on_orm_update_and_the_object_sees_it(migrated_engine: Engine) -> None:
    contact_id = _insert_contact(migrated_engine, updated_at=LONG_AGO)
    with session_factory(migrated_engine)() as session:
        row = session.get(ContactRow, contact_id)
        assert row is not None and row.updated_at == LONG_AGO
        row.name = "Grace"
        session.commit()
        assert row.updated_at > LONG_AGO + timedelta(days=365)
        assert row.updated_at.tzinfo is UTC


def _updated_at(engine: Engine, table: str) -> datetime:
    model = ContactRow if table == "contacts" else GroupRow
    with session_factory(engine)() as session:
        return session.scalars(select(model.updated_at)).one()


# --- timestamps ---------------------------------------------------------------------------

_instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instant=_instants)
def test_timestamps_round_trip_as_the_same_instant_in_utc(migrated_engine: Engine, instant: datetime) -> None:
    with session_factory(migrated_engine).begin() as session:
        run = SyncRunRow(trigger="manual", started_at=instant)
        session.add(run)
    with session_factory(migrated_engine)() as session:
        stored = session.scalars(select(SyncRunRow.started_at).where(SyncRunRow.id == run.id)).one()
    assert stored == instant
    assert stored.tzinfo is UTC


def test_naive_datetimes_are_refused(migrated_engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_factory(migrated_engine).begin() as session:
        session.add(SyncRunRow(trigger="manual", started_at=datetime(2024, 1, 1)))


@pytest.mark.parametrize(
    "written",
    ["2024-05-06 07:08:09", "2024-05-06 07:08:09.250000", "2024-05-06T07:08:09.25Z", "2024-05-06T09:08:09.25+02:00"],
)
def test_sqlite_reads_every_timestamp_format_sql_may_write(sqlite_url: str, written: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO sync_runs (trigger, started_at) VALUES ('manual', :t)"), {"t": written})
        with session_factory(engine)() as session:
            stored = session.scalars(select(SyncRunRow.started_at)).one()
    finally:
        engine.dispose()
    expected = datetime(2024, 5, 6, 7, 8, 9, 250000 if "." in written else 0, tzinfo=UTC)
    assert stored == expected and stored.tzinfo is UTC


# --- check_schema -------------------------------------------------------------------------


def test_check_schema_refuses_an_empty_database_naming_the_fix(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaError, match="schema is missing.*run `syncd db upgrade`"):
            check_schema(engine)
        if engine.dialect.name == "postgresql":
            # PostgreSQL is never created implicitly, whatever the caller allows.
            with pytest.raises(SchemaError, match="syncd db upgrade"):
                check_schema(engine, allow_create_sqlite=True)
            assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_check_schema_refuses_a_schema_behind_the_code(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(db_url)
    shipped = head_revision()
    scripts = _scripts_with_a_second_revision(tmp_path)
    monkeypatch.setattr(migrate, "script_location", lambda: str(scripts))
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaError, match=rf"behind \(at {shipped}, code needs probe\).*run `syncd db upgrade`"):
            check_schema(engine, allow_create_sqlite=True)
        assert upgrade(engine) is True
        check_schema(engine)
    finally:
        engine.dispose()


def test_check_schema_refuses_a_schema_newer_than_the_code(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaError, match="at 0099, which this syncd does not know"):
        check_schema(migrated_engine)


def test_check_schema_creates_a_brand_new_sqlite_file_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "state" / "new.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        check_schema(engine, allow_create_sqlite=True)
        assert current_revision(engine) == head_revision()
        assert path.exists()
    finally:
        engine.dispose()


def test_check_schema_does_not_take_over_a_sqlite_file_holding_other_tables(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE notes (body TEXT)"))
        with pytest.raises(SchemaError, match="syncd db upgrade"):
            check_schema(engine, allow_create_sqlite=True)
    finally:
        engine.dispose()


def _scripts_with_a_second_revision(tmp_path: Path) -> Path:
    """A copy of the shipped scripts plus a trivial revision ``probe`` on top of the head."""
    scripts = tmp_path / "scripts"
    shutil.copytree(migrate.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_probe.py").write_text(
        f'revision = "probe"\ndown_revision = "{head_revision()}"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    return scripts


# --- engine -------------------------------------------------------------------------------


def test_sqlite_engine_is_set_up_for_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "dir" / "syncd.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                for name in ("foreign_keys", "journal_mode", "busy_timeout", "synchronous")
            }
    finally:
        engine.dispose()
    # synchronous 1 = NORMAL: a WAL commit survives the process's death (kill -9) without an fsync each
    assert pragmas == {"foreign_keys": 1, "journal_mode": "wal", "busy_timeout": 30000, "synchronous": 1}
    assert path.exists()


def test_sqlite_immediate_transactions_hold_the_write_lock_from_the_start(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection, connection.begin():
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg() -> None:
    engine = make_engine("postgresql://user:secret@db.example/syncd")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


# --- packaging ----------------------------------------------------------------------------


def test_pyproject_lists_every_syncd_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "syncd").rglob("__init__.py")
    }
    assert found <= set(config["packages"]), "add the missing packages to [tool.setuptools] packages"
    assert config["package-dir"]["syncd._migrations"] == "migrations"


def test_migrations_are_importable_as_package_resources() -> None:
    scripts = Path(migrate.script_location())
    assert {"env.py", "script.py.mako"} <= {p.name for p in scripts.iterdir()}
    assert (scripts / "versions" / "0001_initial.py").is_file()


def test_sqlite_autocommit_connections_open_no_transaction(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("CREATE TABLE notes (body TEXT)")
            assert not connection.connection.dbapi_connection.in_transaction
        with engine.connect() as connection, connection.begin():
            assert connection.connection.dbapi_connection.in_transaction
    finally:
        engine.dispose()


# --- the change journal (issue 11) ---------------------------------------------------------------


def _journal(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(
            "SELECT entity, canonical_id FROM record_changes ORDER BY seq"))]


def test_plain_sql_edits_of_the_book_are_journalled(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.execute(text("INSERT INTO contacts (phone, name) VALUES ('+16502530001', 'A'), ('+16502530002', 'B')"))
        connection.execute(text("INSERT INTO groups (name) VALUES ('G')"))
    ids = {phone: cid for cid, phone in _rows(migrated_engine, "SELECT id, phone FROM contacts")}
    [(gid,)] = _rows(migrated_engine, "SELECT id FROM groups")
    a, b = ids["+16502530001"], ids["+16502530002"]
    with migrated_engine.begin() as connection:
        connection.execute(text("DELETE FROM record_changes"))
        connection.execute(text("UPDATE contacts SET name = 'A2' WHERE id = :a"), {"a": a})
        connection.execute(text("INSERT INTO group_members (group_id, contact_id) VALUES (:g, :b)"), {"g": gid, "b": b})
        connection.execute(text("DELETE FROM groups WHERE id = :g"), {"g": gid})  # cascades to the membership
        connection.execute(text("DELETE FROM contacts WHERE id = :a"), {"a": a})
    assert set(_journal(migrated_engine)) == {("contact", a), ("contact", b), ("group", gid)}


def test_the_journal_position_survives_pruning(migrated_engine: Engine) -> None:
    from syncd.db import journal

    with migrated_engine.begin() as connection:
        connection.execute(text("INSERT INTO contacts (phone) VALUES ('+16502530001')"))
        before = journal.current_position(connection)
        connection.execute(text("DELETE FROM record_changes"))
        assert journal.current_position(connection) >= before  # never back to the start: nothing is read twice


def _rows(engine: Engine, statement: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(statement))]
