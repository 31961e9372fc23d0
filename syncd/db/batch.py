"""Statements over many values: bounded ``IN`` lists and ``executemany`` chunks (both engines)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

__all__ = ["CHUNK", "IN_CHUNK", "chunks", "insert_ids", "insert_rows", "rows_in", "update_by_id"]

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


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) in ``executemany`` chunks of Core statements.

    Core, not the ORM's bulk path: the ORM's bookkeeping per row cost more than the insert itself.
    """
    for chunk in chunks(rows):
        session.execute(insert(table), chunk)


def update_by_id(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = ...`` for each row (dicts with ``id`` and the same other keys)."""
    if not rows:
        return
    columns = [key for key in rows[0] if key != "id"]
    statement = update(table).where(table.c.id == bindparam("b_id")).values(
        {column: bindparam(f"b_{column}") for column in columns})
    for chunk in chunks(rows):
        session.execute(statement, [{f"b_{key}": value for key, value in row.items()} for row in chunk])
