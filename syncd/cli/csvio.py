"""``syncd import FILE.csv`` and ``syncd export FILE.csv``: bulk load into, and dump out of, the canonical book.

The file
========
Comma-separated, one header line naming the columns (case-insensitive,
trimmed; blank lines anywhere are skipped). ``phone`` is required; ``name``,
``surname``, ``email``, ``groups`` (names separated by ``;``) and
``opted_out`` are optional. Every other column is a key of ``extra`` (a value
is a string; an empty cell means "no such key"). A column ``extra.KEY`` is
the extra key ``KEY``: that is how export writes keys that would clash with a
column above (``extra.phone``). A header with an empty or repeated column name
is an error.

Encoding
========
UTF-8, with or without a BOM. A file that is not valid UTF-8 is read as
Windows-1252 (Latin-1 as spreadsheets on Windows save it; ISO-8859-1 when even
that fails) and a warning names the encoding used and the first byte that was
not UTF-8, so a mis-read file can be spotted; NUL bytes (a binary or UTF-16
file) are an error. Export writes UTF-8 without a BOM, ``\\n`` line ends.

Validation
==========
Every problem is reported at once, naming the line and the column
(``contacts.csv:7: column phone: '12ab' is not a phone number``): a row with
more or fewer cells than the header, a missing or invalid phone (read in
``sync.default_region`` when written without ``+country``), the same number
twice after E.164 normalisation (the later row is the error and names the
earlier line), an email that is not ``local@domain.tld``, ``opted_out`` that is
not yes/no, a cell longer than 10,000 characters. Without ``--skip-invalid`` a
file with any error imports nothing (exit 2); with it, each invalid row is
reported and skipped, the others imported (exit 0). Problems with the file as
a whole (unreadable, empty, no header or no phone column, a bad header,
broken quoting) import nothing in either case (exit 2).

Import
======
An upsert by E.164 phone in ONE transaction (a database failure midway rolls
everything back, exit 1), written by :func:`syncd.db.book_io.import_contacts`,
whose module states the rules: an existing contact gets the file's columns
and extra keys, and keeps the others; ``opted_out`` is sticky; groups are
created when missing and memberships only added (a CSV lists what a contact
is in, not what it left); an unchanged contact is not written.

Export
======
All contacts by id: ``phone,name,surname,email,groups``, one column per extra
key (sorted union), then ``opted_out`` (``true``/``false``) and
``opted_out_origin``: where an opted-out contact's opt-out came from, as
``provider:origin`` (``smsend:STOPSMS``, ``smsend:WEB``, ``sendhub:STOP``…),
empty when no provider reported it (set in the book, by CSV or SQL). Import
reads that column as information only and ignores it. Non-string extra
values are written as JSON. A cell a spreadsheet would run as a formula
(starting with ``=``, ``+``, ``-``, ``@``, tab or CR) gets a leading ``'``; so
does a cell that already starts with quotes followed by one of those, and
import strips one such quote, so export then import gives back every string.
The phone column is exempt when it is a plain E.164 number (``+`` and digits
cannot form a formula). The file is written to a temporary file and renamed:
an interrupted export leaves no half file, and the result is readable by its
owner only (mode 0600: it holds personal data). A group name containing ``;``
and an ``extra`` that is not a JSON object cannot be written faithfully: each
is named in a warning.

Exit codes
==========
0 done (also with ``--skip-invalid`` and skipped rows: they are printed as
warnings); 2 nothing imported because of the file (or an export file that
cannot be written); 1 the database failed and the import was rolled back.

Import and export share the format's rules (the ``extra.`` prefix, the quote
that neutralises formulas, the group separator), which must stay in step: that
is why both live in this one module, longer than most. What they read and
write in the database is :mod:`syncd.db.book_io`'s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy.exc import SQLAlchemyError

from syncd.db.book_io import BookExport, ContactImport, StoredContact, export_contacts, import_contacts
from syncd.model import group_key
from syncd.phones import InvalidPhone, to_e164

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.cli.app import AppContext

__all__ = [
    "CsvFileError",
    "Export",
    "Problem",
    "Record",
    "export_csv",
    "export_rows",
    "extra_column",
    "import_csv",
    "neutralise",
    "parse_csv",
    "read_text",
    "unneutralise",
    "write_rows",
]

KNOWN_COLUMNS = ("phone", "name", "surname", "email", "groups", "opted_out", "opted_out_origin")  # the last: export only
EXTRA_PREFIX = "extra."
GROUP_SEPARATOR = ";"
#: Longest cell accepted: far above any real name or note, low enough that a
#: quote never closed (which swallows the rest of the file) is caught.
MAX_CELL = 10_000

_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # a cell a spreadsheet would evaluate, behind any quotes
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_YES = frozenset({"true", "yes", "y", "1", "x"})
_NO = frozenset({"false", "no", "n", "0", ""})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the file, at a line and (when it is about a cell) a column."""

    line: int
    message: str
    column: str | None = None

    def render(self, label: str) -> str:
        where = f"{label}:{self.line}:" if self.line else f"{label}:"
        return f"{where} column {self.column}: {self.message}" if self.column else f"{where} {self.message}"


class CsvFileError(Exception):
    """The file as a whole cannot be imported; ``problems`` says why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = list(problems)


class _Invalid(ValueError):
    """One cell's value is not acceptable; the message says why."""


@dataclass(frozen=True, slots=True)
class Column:
    """A header cell: ``label`` as written, ``field`` a known column or an extra key."""

    label: str
    field: str
    extra: bool


@dataclass(frozen=True, slots=True)
class Record(ContactImport):
    """One valid data row: the contact to upsert, and the line of the file it is on."""

    line: int


@dataclass
class Parsed:
    """A parsed file: the valid records, and the problems of the invalid rows."""

    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    invalid_rows: int = 0


# --- the command entry points ------------------------------------------------------


def import_csv(app: AppContext, file: str, *, skip_invalid: bool) -> int:
    """``syncd import``: validate ``file``, then upsert it in one transaction. Returns the exit code."""
    parsed = _read_and_parse(file, app.config.sync.default_region)
    if parsed is None:
        return 2
    _report(file, parsed.problems)
    if parsed.problems and not skip_invalid:
        click.echo(f"error: {file}: {parsed.invalid_rows} invalid row(s); nothing imported (fix them, or pass "
                   f"--skip-invalid to import the {len(parsed.records)} valid row(s))", err=True)
        return 2
    try:
        counts = import_contacts(app.engine(), parsed.records, app.config.sync.default_region)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        click.echo(f"error: {file}: the import failed and was rolled back, nothing imported: {reason}", err=True)
        return 1
    click.echo(f"{file}: {counts.created} created, {counts.updated} updated, {counts.unchanged} unchanged, "
               f"{counts.groups_created} groups created, {counts.memberships_added} memberships added, "
               f"{parsed.invalid_rows} skipped")
    if parsed.invalid_rows:
        click.echo(f"warning: {file}: skipped {parsed.invalid_rows} invalid row(s), listed above", err=True)
    return 0


def _read_and_parse(file: str, region: str) -> Parsed | None:
    """``file`` read and validated; None, once the reason is printed, when the file as a whole is unusable."""
    try:
        text, warning = read_text(Path(file))
        if warning:
            click.echo(f"warning: {warning.render(file)}", err=True)
        return parse_csv(text, region)
    except OSError as exc:
        click.echo(f"error: cannot read {file}: {exc.strerror or exc}", err=True)
    except CsvFileError as err:
        _report(file, err.problems)
        click.echo(f"error: {file}: nothing imported", err=True)
    return None


def export_csv(app: AppContext, file: str) -> int:
    """``syncd export``: write every contact to ``file``. Returns the exit code."""
    export = export_rows(app.engine())
    try:
        _write_atomically(Path(file), [export.header, *export.rows])
    except OSError as exc:
        click.echo(f"error: cannot write {file}: {exc.strerror or exc}", err=True)
        return 2
    for warning in export.warnings:
        click.echo(f"warning: {file}: {warning}", err=True)
    click.echo(f"{file}: exported {len(export.rows)} contacts")
    return 0


def _report(label: str, problems: Iterable[Problem]) -> None:
    for problem in problems:
        click.echo(problem.render(label), err=True)


# --- reading and validating --------------------------------------------------------


def read_text(path: Path) -> tuple[str, Problem | None]:
    """The file's text and, when it was not UTF-8, a warning naming the encoding used instead."""
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _position(data, nul)
        raise CsvFileError([Problem(line, f"NUL byte at byte {col}: not a text file, or UTF-16; "
                                          "re-save it as CSV UTF-8")])
    try:
        text, warning = data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        text, warning = _decode_legacy(data, exc.start)
    if not text.strip():
        raise CsvFileError([Problem(0, "the file is empty; the first line must name the columns, "
                                       "e.g. phone,name,surname,email,groups")])
    return text, warning


def _decode_legacy(data: bytes, bad: int) -> tuple[str, Problem]:
    line, col = _position(data, bad)
    try:
        text, name = data.decode("cp1252"), "Windows-1252 (Latin-1)"
    except UnicodeDecodeError:  # bytes cp1252 leaves undefined: ISO-8859-1 maps every byte
        text, name = data.decode("latin-1"), "ISO-8859-1 (Latin-1)"
    return text, Problem(line, f"not UTF-8 (byte 0x{data[bad]:02x} at byte {col} of the line); read the file as "
                               f"{name}: check accented letters, or re-save it as CSV UTF-8")


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and byte column of ``offset``."""
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def parse_csv(text: str, region: str) -> Parsed:
    """Validate every row of ``text``; raises :class:`CsvFileError` when the file as a whole is unusable."""
    rows = _rows(csv.reader(io.StringIO(text, newline=""), strict=True))
    first = next(rows, None)
    if first is None:
        raise CsvFileError([Problem(0, "the file has no header line")])
    columns = parse_header(*first)
    parsed, reader = Parsed(), _RowReader(columns, region)
    try:
        for line, cells in rows:
            record, problems = reader.read(line, cells)
            if record is not None:
                parsed.records.append(record)
            else:
                parsed.problems.extend(problems)
                parsed.invalid_rows += 1
    except CsvFileError as err:  # broken quoting: report the rows before it too
        raise CsvFileError([*parsed.problems, *err.problems]) from None
    return parsed


def _rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each non-blank record; broken quoting ends the file with an error."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = "a quoted cell is never closed" if "end of data" in str(exc) else f"malformed CSV: {exc}"
            raise CsvFileError([Problem(start, reason)]) from None
        if any(cell.strip() for cell in cells):
            yield start, cells


def parse_header(line: int, cells: list[str]) -> tuple[Column, ...]:
    """The columns the header names; every problem (empty, repeated, no phone) raised at once."""
    problems: list[Problem] = []
    columns: list[Column] = []
    seen: dict[tuple[bool, str], int] = {}
    for index, raw in enumerate(cells, 1):
        label = unneutralise(raw).strip()
        if not label:
            problems.append(Problem(line, f"column {index} of the header has no name"))
            continue
        column = _column(label)
        first = seen.setdefault((column.extra, column.field), index)
        if first != index:
            problems.append(Problem(line, f"column {index} ({label!r}) repeats column {first} of the header"))
        columns.append(column)
    if not any(c.field == "phone" and not c.extra for c in columns):
        problems.append(Problem(line, _no_phone(cells)))
    if problems:
        raise CsvFileError(problems)
    return tuple(columns)


def _column(label: str) -> Column:
    if label[: len(EXTRA_PREFIX)].casefold() == EXTRA_PREFIX:
        return Column(label, label[len(EXTRA_PREFIX):], extra=True)
    folded = label.casefold()
    return Column(label, folded, extra=False) if folded in KNOWN_COLUMNS else Column(label, label, extra=True)


def _no_phone(cells: list[str]) -> str:
    shown = ",".join(cells)[:120]
    message = f"no phone column in the header ({shown!r}); the first line must name the columns, " \
              "e.g. phone,name,surname,email,groups"
    for separator, name in ((";", "semicolons"), ("\t", "tabs")):
        if any(part.strip().casefold() == "phone" for part in ",".join(cells).split(separator)):
            return f"{message} (this file is separated by {name}: syncd reads comma-separated files)"
    if any(cell.strip()[:1] in tuple("+0123456789") for cell in cells if cell.strip()):
        return f"{message} (the first line looks like data: is the header missing?)"
    return message


class _RowReader:
    """Validates data rows against the header, remembering the first line of each number."""

    def __init__(self, columns: Sequence[Column], region: str) -> None:
        self.columns = columns
        self.region = region
        self.phone_at = next(i for i, c in enumerate(columns) if c.field == "phone" and not c.extra)
        self.seen: dict[str, int] = {}

    def read(self, line: int, cells: list[str]) -> tuple[Record | None, list[Problem]]:
        if len(cells) != len(self.columns):
            return None, [Problem(line, f"{len(cells)} cells, but the header has {len(self.columns)} columns")]
        values: list[Any] = []
        problems: list[Problem] = []
        for column, raw in zip(self.columns, cells, strict=True):
            try:
                values.append(_read_cell(column, unneutralise(raw), self.region))
            except (_Invalid, InvalidPhone) as exc:
                values.append(None)
                problems.append(Problem(line, str(exc), column.label))
        phone = values[self.phone_at]
        if phone is not None and self.seen.setdefault(phone, line) != line:
            raw = cells[self.phone_at].strip()
            problems.append(Problem(line, f"{raw!r} is the same number as line {self.seen[phone]} ({phone})",
                                    self.columns[self.phone_at].label))
        if problems:
            return None, problems
        return self._record(line, phone, values), []

    def _record(self, line: int, phone: str, values: list[Any]) -> Record:
        known: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for column, value in zip(self.columns, values, strict=True):
            if column.extra:
                extra[column.field] = value if value.strip() else ""
            else:
                known[column.field] = value
        return Record(line=line, phone=phone, fields={k: known[k] for k in ("name", "surname", "email") if k in known},
                      extra=extra, groups=known.get("groups", ()), opted_out=known.get("opted_out", False))


def _read_cell(column: Column, value: str, region: str) -> Any:
    if len(value) > MAX_CELL:
        raise _Invalid(f"value is {len(value):,} characters long (at most {MAX_CELL:,})")
    convert = _CONVERTERS.get(column.field) if not column.extra else None
    return convert(value, region) if convert else value  # name, surname and extra values are kept as written


def _phone(value: str, region: str) -> str:
    if not value.strip():
        raise _Invalid("empty: every row needs a phone number")
    return to_e164(value, region)


def _email(value: str, _region: str) -> str:
    value = value.strip()
    if value and (len(value) > 254 or not _EMAIL.fullmatch(value)):
        raise _Invalid(f"{value[:80]!r} is not an email address")
    return value


def _groups(value: str, _region: str) -> tuple[str, ...]:
    names: dict[str, str] = {}
    for name in value.split(GROUP_SEPARATOR):
        if name.strip():
            names.setdefault(group_key(name), name.strip())
    return tuple(names.values())


def _opted_out(value: str, _region: str) -> bool:
    folded = value.strip().casefold()
    if folded not in _YES | _NO:
        raise _Invalid(f"{value[:40]!r} is not yes/no (true/false, 1/0)")
    return folded in _YES


_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "phone": _phone, "email": _email, "groups": _groups, "opted_out": _opted_out,
}


# --- export ------------------------------------------------------------------------


@dataclass
class Export:
    """What export writes: the header, one row per contact, and what could not be written faithfully."""

    header: list[str]
    rows: list[list[str]]
    warnings: list[str]


def export_rows(engine: Engine) -> Export:
    """Every contact (by id) as neutralised cells, under the header."""
    book = export_contacts(engine)
    keys = sorted({str(k) for c in book.contacts if isinstance(c.extra, dict) for k in c.extra})
    header = ["phone", "name", "surname", "email", "groups", *(extra_column(k) for k in keys), "opted_out",
              "opted_out_origin"]
    rows = [_export_row(c, sorted(book.groups.get(c.id, []), key=group_key), keys, book.opt_out_origins)
            for c in book.contacts]
    return Export([neutralise(h) for h in header], rows, _export_warnings(book))


def _export_warnings(book: BookExport) -> list[str]:
    warnings = [f"contact {c.id}: extra is not a JSON object ({type(c.extra).__name__}); left out"
                for c in book.contacts if not isinstance(c.extra, dict)]
    split = sorted({name for names in book.groups.values() for name in names if GROUP_SEPARATOR in name})
    warnings += [f"group {name!r} contains {GROUP_SEPARATOR!r}: importing the file reads it as several groups"
                 for name in split]
    return warnings


def _export_row(contact: StoredContact, groups: list[str], keys: list[str], origins: dict[str, str]) -> list[str]:
    extra = contact.extra if isinstance(contact.extra, dict) else {}
    phone = contact.phone if _E164.fullmatch(contact.phone) else neutralise(contact.phone)
    cells = [contact.name, contact.surname, contact.email, GROUP_SEPARATOR.join(groups),
             *(_extra_text(extra.get(k)) for k in keys), "true" if contact.opted_out else "false",
             origins.get(contact.phone, "") if contact.opted_out else ""]
    return [phone, *(neutralise(cell or "") for cell in cells)]


def extra_column(key: str) -> str:
    """The header of extra ``key``: prefixed with ``extra.`` when it would not read back as that key."""
    clashes = key.strip().casefold() in KNOWN_COLUMNS or key[: len(EXTRA_PREFIX)].casefold() == EXTRA_PREFIX
    return EXTRA_PREFIX + key if clashes or not key.strip() else key


def _extra_text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def neutralise(cell: str) -> str:
    """``cell`` with a leading ``'`` when a spreadsheet would evaluate it (or it already starts with one)."""
    return "'" + cell if _FORMULA.match(cell) else cell


def unneutralise(cell: str) -> str:
    """The inverse of :func:`neutralise`: one leading ``'`` dropped before quotes and a formula character."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


def _write_atomically(path: Path, rows: Iterable[Sequence[str]]) -> None:
    """Write ``rows`` as UTF-8 CSV with ``\\n`` line ends to a temporary file, then rename it over ``path``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write_rows(out, rows)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_rows(out: Any, rows: Iterable[Sequence[str]]) -> None:
    """Write ``rows`` to the text file ``out`` as CSV with ``\n`` line ends, quoting what needs it."""
    csv.writer(_LineFeedEnds(out), lineterminator="\r\n").writerows(rows)


class _LineFeedEnds:
    """Ends each row the csv writer writes with ``\n`` instead of its ``\r\n``.

    The writer quotes a cell only for characters of its line terminator: with
    ``\n`` alone a cell holding a bare ``\r`` would go out unquoted and read
    back as a line break. So it writes ``\r\n`` rows (one ``write`` per row),
    and this file swaps the ending.
    """

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, row: str) -> int:
        return int(self.out.write(row[:-2] + "\n" if row.endswith("\r\n") else row))
