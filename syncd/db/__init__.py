"""syncd's own database: SQLite (embedded default) or PostgreSQL.

``models``   the tables (public ones of design §3 and the engine's own), documented there
``engine``   ``make_engine(url)`` and ``session_factory(engine)``, SQLite set up for several processes
``migrate``  ``upgrade``, ``check_schema`` and the revisions, over the alembic scripts in ``migrations/``

Every SQL statement of syncd lives in this package. Besides the engine's
(``repo`` and what it builds on), the modules the CLI and the daemon call:

``leases``         claiming, renewing, fencing and releasing the accounts' leases (design §7)
``book_io``        ``syncd import`` and ``syncd export``: the book in bulk
``conflicts``      ``syncd resolve``: settling a conflict the manual policy holds
``reports``        ``syncd status``, ``syncd log``, the demo's tables and the metrics' figures
``housekeeping``   the daemon's change-log retention and its runs left ``running``
``outside_edits``  plain-SQL edits, as another application makes them (``syncd demo``)
``clock``          ``utcnow``: now, in UTC, for the timestamps written
"""
