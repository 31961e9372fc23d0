"""Fixtures shared by the whole suite: databases, and the hypothesis profiles.

Databases:

``sqlite_url``
    A SQLite file in the test's tmp_path (not created yet).
``pg_url``
    An empty PostgreSQL schema of its own, on a database created for this test
    session on the server named by ``SYNCD_TEST_POSTGRES_URL`` (dropped at the
    end). Skips, saying why, when that variable is unset. Each test gets a
    fresh schema (``search_path`` set in the URL): as isolated as a fresh
    database, at a fraction of the cost.
``db_url``
    Both of the above, one test per engine (ids ``sqlite`` and ``postgresql``).
``migrated_engine``
    An engine on ``db_url`` with the schema upgraded to head; disposed after.

Hypothesis: the default profile is quick with no deadline (the machine is
shared); ``HYPOTHESIS_PROFILE=ci`` runs many more examples.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from syncd.db.engine import make_engine, normalise_url
from syncd.db.migrate import upgrade

POSTGRES_ENV = "SYNCD_TEST_POSTGRES_URL"

settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'syncd.db'}"


@pytest.fixture(scope="session")
def _pg_session_database() -> Iterator[URL]:
    """A database of this test session's own, dropped at the end."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    admin_url = normalise_url(server)
    name = f"syncd_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def _pg_admin(_pg_session_database: URL) -> Iterator[Engine]:
    engine = create_engine(_pg_session_database, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(_pg_session_database: URL, _pg_admin: Engine) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with _pg_admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = _pg_session_database.update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with _pg_admin.connect() as connection:
        # A connection a test leaked mid-transaction must fail the drop, not hang it.
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(fixture)


@pytest.fixture
def migrated_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()
