"""Statements over many values: bounded ``IN`` lists and ``executemany`` chunks (both engines)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy.orm import Session

__all__ = ["CHUNK", "IN_CHUNK", "chunks", "rows_in"]

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
