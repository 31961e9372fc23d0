"""Statements over many values: bounded ``IN`` lists and ``executemany`` chunks (both engines)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

__all__ = ["CHUNK", "IN_CHUNK", "chunks", "insert_ids", "rows_in"]

#: Rows per INSERT/UPDATE batch.
CHUNK = 500
#: Values per ``IN (...)`` list.
IN_CHUNK = 1000

T = TypeVar("T")


def chunks(rows: list[T], size: int = CHUNK) -> Iterable[list[T]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def rows_in(session: Session, query: Any, column: Any, values: Collection[Any] | None) -> Iterator[Any]:
    """The rows of ``query`` whose ``column`` is in ``values`` (every row when None), a bounded IN list at a time."""
    if values is None:
        yield from session.execute(query)
        return
    for chunk in chunks(sorted(values), IN_CHUNK):
        yield from session.execute(query.where(column.in_(chunk)))


def insert_ids(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` into ``table`` (an integer ``id`` key) in a few statements; their new ids, in order.

    PostgreSQL answers them with ``RETURNING`` in one statement per chunk. On
    SQLite, RETURNING in parameter order would cost one statement per row, so the
    rows go in one ``executemany`` and their ids are read back: the transaction
    holds the write lock from its first insert, and an AUTOINCREMENT key numbers
    the rows of one ``executemany`` consecutively, ending at the highest id.
    """
    ids: list[int] = []
    for chunk in chunks(rows):
        if session.get_bind().dialect.name == "postgresql":
            statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            ids.extend(session.scalars(statement, chunk))
            continue
        session.execute(insert(table), chunk)
        last = session.execute(select(func.max(table.c.id))).scalar_one()
        ids.extend(range(last - len(chunk) + 1, last + 1))
    return ids
