"""The error tree drawn in ``syncd.errors``' docstring is the class tree."""

from __future__ import annotations

import pickle
import re

from syncd import errors

# "    │   └── TlsError       ..." -> the name and the column it starts at (its depth in the drawing).
_NODE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)\b")


def _drawn_parents() -> dict[str, str | None]:
    """Each class in the drawing, with the class drawn as its parent."""
    drawing = (errors.__doc__ or "").split("::", 1)[1].split("\n\n")[1]
    parents: dict[str, str | None] = {}
    open_at: dict[int, str] = {}  # column -> the last class drawn there
    for line in drawing.splitlines():
        match = _NODE.match(line)
        assert match, f"not a node of the tree: {line!r}"
        column, name = len(match["indent"]), match["name"]
        parents[name] = open_at.get(column - 4)
        open_at[column] = name
    return parents


def test_the_drawing_shows_each_error_class_under_its_base() -> None:
    exported = (getattr(errors, name) for name in errors.__all__)
    classes = {cls.__name__: cls for cls in exported if isinstance(cls, type) and issubclass(cls, Exception)}
    actual = {name: (None if cls is errors.SyncdError else cls.__bases__[0].__name__) for name, cls in classes.items()}

    assert _drawn_parents() == actual


def test_an_error_keeps_its_details_through_pickling() -> None:
    error = errors.Rejected("too long", field="name", provider="sms", operation="create contact", status=400)

    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), copy.reason, copy.field, copy.provider, copy.operation, copy.status) == (
        errors.Rejected, "too long", "name", "sms", "create contact", 400)
