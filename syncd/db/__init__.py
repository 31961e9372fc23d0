"""syncd's own database: SQLite (embedded default) or PostgreSQL.

``models``   the tables (public ones of design §3 and the engine's own), documented there
``engine``   ``make_engine(url)`` and ``session_factory(engine)``, SQLite set up for several processes
``migrate``  ``upgrade``, ``check_schema`` and the revisions, over the alembic scripts in ``migrations/``
"""
