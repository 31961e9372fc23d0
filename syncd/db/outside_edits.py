"""Edits to the canonical book as another application sharing the database makes them: plain SQL.

syncd's own writes go through :class:`~syncd.db.repo.Store`; these go behind
its back, the way the design expects other programs to edit the book (the
journal's triggers are what notice them). ``syncd demo`` makes its local
changes with them, to show the engine picking such edits up.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, text

__all__ = ["NewContact", "insert_contacts", "rename_contact"]

NewContact = tuple[str, str, str, str]
"""(phone as written, name, surname, email)."""


def insert_contacts(engine: Engine, contacts: Iterable[NewContact]) -> None:
    """INSERT ``contacts`` as given: a phone may be in any format, as SQL users write them."""
    rows = [{"phone": phone, "name": name, "surname": surname, "email": email}
            for phone, name, surname, email in contacts]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO contacts (phone, name, surname, email) "
                          "VALUES (:phone, :name, :surname, :email)"), rows)


def rename_contact(engine: Engine, phone: str, name: str, surname: str) -> None:
    """UPDATE the name and surname of the contacts stored with exactly ``phone``."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET name = :name, surname = :surname WHERE phone = :phone"),
                     {"name": name, "surname": surname, "phone": phone})
