"""`syncd import` and `syncd export` through the real CLI, on SQLite and (when configured) PostgreSQL.

Tests taking ``cli`` run on every engine of ``db_url``; those about reading and
validating the file (``sqlite_cli``) run on SQLite only: the database plays no
part in them beyond proving that nothing was written.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from syncd.cli import cli as syncd_cli
from syncd.cli.csvio import MAX_CELL, neutralise, parse_csv, unneutralise, write_rows
from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.db.models import ContactRow, GroupMemberRow, GroupRow


@dataclass
class Cli:
    """A configured syncd (region US) on a migrated database, and helpers to look into it."""

    engine: Engine
    config: str
    directory: Path

    def __call__(self, *args: str) -> Result:
        """Run ``syncd --config CONFIG *args``, closing the engines it opened (the CLI leaves that to exit)."""
        opened: list[Engine] = []

        def tracked_make_engine(*a: Any, **kw: Any) -> Engine:
            opened.append(make_engine(*a, **kw))
            return opened[-1]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("syncd.db.engine.make_engine", tracked_make_engine)
            try:
                return CliRunner().invoke(syncd_cli, ["--config", self.config, *args])
            finally:
                for engine in opened:
                    engine.dispose()

    def file(self, content: str | bytes, name: str = "contacts.csv") -> str:
        path = self.directory / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def sql(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(text(statement), params)

    def contacts(self) -> dict[str, dict[str, Any]]:
        """Every contact by phone: its columns and the names of its groups."""
        with self.engine.connect() as connection:
            groups: dict[int, set[str]] = {}
            query = select(GroupMemberRow.contact_id, GroupRow.name).join(GroupRow)
            for cid, name in connection.execute(query):
                groups.setdefault(cid, set()).add(name)
            rows = connection.execute(select(ContactRow).order_by(ContactRow.id)).mappings().all()
        return {r["phone"]: {"name": r["name"], "surname": r["surname"], "email": r["email"], "extra": r["extra"],
                             "opted_out": r["opted_out"], "groups": groups.get(r["id"], set())} for r in rows}

    def groups(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.scalars(select(GroupRow.name).order_by(GroupRow.id)))


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file: copying it is much faster than migrating a new one for every test."""
    path = tmp_path_factory.mktemp("template") / "syncd.db"
    upgrade(f"sqlite:///{path}")
    return path


def _cli(url: str, tmp_path: Path, template: Path) -> Iterator[Cli]:
    if url.startswith("sqlite:///"):
        shutil.copyfile(template, url.removeprefix("sqlite:///"))
    else:
        upgrade(url)
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = {json.dumps(url)}\n[sync]\ndefault_region = "US"\n')
    engine = make_engine(url)
    yield Cli(engine, str(config), tmp_path)
    engine.dispose()


@pytest.fixture
def cli(db_url: str, tmp_path: Path, sqlite_template: Path) -> Iterator[Cli]:
    yield from _cli(db_url, tmp_path, sqlite_template)


@pytest.fixture
def sqlite_cli(sqlite_url: str, tmp_path: Path, sqlite_template: Path) -> Iterator[Cli]:
    yield from _cli(sqlite_url, tmp_path, sqlite_template)


def updated_at(cli: Cli) -> list[Any]:
    with cli.engine.connect() as connection:
        return [None, *connection.scalars(select(ContactRow.updated_at).order_by(ContactRow.id))]


def read_csv(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


# --- import: what lands in the book --------------------------------------------------


def test_import_creates_contacts_with_extra_columns_and_groups_matched_case_insensitively(cli: Cli) -> None:
    cli.sql("INSERT INTO groups (name) VALUES ('VIP'), ('STRASSE')")
    path = cli.file(" Phone ,NAME,surname,Email,Groups,Company,Shoe size\n"
                    "(202) 555-0143,Ann,Lee,ann@example.org,vip; Sales ;sales;,ACME,\n"
                    "+1 202 555 0144,Bob,,,SALES;straße,,44\n")
    result = cli("import", path)
    assert result.exit_code == 0, result.output
    assert "2 created, 0 updated, 0 unchanged, 1 groups created, 4 memberships added, 0 skipped" in result.stdout
    assert cli.contacts() == {
        "+12025550143": {"name": "Ann", "surname": "Lee", "email": "ann@example.org", "extra": {"Company": "ACME"},
                         "opted_out": False, "groups": {"VIP", "Sales"}},
        "+12025550144": {"name": "Bob", "surname": "", "email": "", "extra": {"Shoe size": "44"},
                         "opted_out": False, "groups": {"Sales", "STRASSE"}},
    }
    # Existing groups matched by case-folded name (beyond SQL's lower()); the first spelling created Sales.
    assert cli.groups() == ["VIP", "STRASSE", "Sales"]


def test_import_updates_by_number_keeps_what_the_file_does_not_mention_and_never_clears_opt_out(cli: Cli) -> None:
    cli.sql("INSERT INTO contacts (phone, name, surname, email, extra, opted_out) VALUES "
            "('(202) 555-0143', 'Ann', 'Lee', 'old@example.org', :extra, true), "
            "('+12025550144', 'Bob', 'Ross', '', '{}', false), ('+12025550145', 'Cy', '', '', '[1, 2]', false)",
            extra=json.dumps({"keep": "me", "drop": "x"}))
    cli.sql("INSERT INTO groups (name) VALUES ('Old')")
    cli.sql("INSERT INTO group_members (group_id, contact_id) VALUES (1, 1)")
    stamps = updated_at(cli)
    path = cli.file("phone,name,email,drop,opted_out,groups\n"
                    "+12025550143,Annie,new@example.org,,no,New\n"
                    "2025550144,Bob,,,,\n"
                    "2025550145,Cy,,,,\n")
    result = cli("import", path)
    assert result.exit_code == 0, result.output
    assert "0 created, 1 updated, 2 unchanged, 1 groups created, 1 memberships added" in result.stdout
    contacts = cli.contacts()
    assert contacts["(202) 555-0143"] == {  # matched through normalisation; the engine rewrites the phone later
        "name": "Annie", "surname": "Lee", "email": "new@example.org", "extra": {"keep": "me"}, "opted_out": True,
        "groups": {"Old", "New"}}
    assert contacts["+12025550145"]["extra"] == [1, 2]  # not an object: left for the engine to report
    after = updated_at(cli)
    assert after[1] > stamps[1] and after[2:] == stamps[2:]  # unchanged rows are not written


def test_a_utf8_file_with_a_byte_order_mark_reads_its_first_column(sqlite_cli: Cli) -> None:
    path = sqlite_cli.file("\ufeffphone,name\n+12025550143,Zoë 😀\n".encode())
    result = sqlite_cli("import", path)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert sqlite_cli.contacts()["+12025550143"]["name"] == "Zoë 😀"


def test_a_latin1_file_is_read_as_windows_1252_with_a_warning(sqlite_cli: Cli) -> None:
    path = sqlite_cli.file("phone,name,note\n+12025550143,Ann,plain\n+12025550144,Renée,5 €\n".encode("cp1252"))
    result = sqlite_cli("import", path)
    assert result.exit_code == 0, result.output
    assert f"warning: {path}:3: not UTF-8 (byte 0xe9 at byte 17 of the line); read the file as Windows-1252" \
        in result.stderr
    assert sqlite_cli.contacts()["+12025550144"]["name"] == "Renée"
    assert sqlite_cli.contacts()["+12025550144"]["extra"] == {"note": "5 €"}  # 0x80 is cp1252's euro sign


# --- import: errors --------------------------------------------------------------------

FILE_ERRORS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("\n \n", ": the file is empty"),
    "missing header": ("+12025550143,Ann\n", (":1: no phone column in the header ('+12025550143,Ann'); the first "
                                              "line must name the columns, e.g. phone,name,surname,email,groups "
                                              "(the first line looks like data: is the header missing?)")),
    "no phone column": ("name,email\nAnn,a@b.co\n", ":1: no phone column in the header"),
    "semicolons": ("phone;name\n+12025550143;Ann\n", (":1: no phone column in the header ('phone;name'); the first "
                                                     "line must name the columns, e.g. phone,name,surname,email,"
                                                     "groups (this file is separated by semicolons: syncd reads "
                                                     "comma-separated files)")),
    "repeated column": ("phone,name,PHONE\n", ":1: column 3 ('PHONE') repeats column 1 of the header"),
    "nameless column": ("phone,,name\n", ":1: column 2 of the header has no name"),
    "utf-16": ("phone,name\n+12025550143,Ann\n".encode("utf-16"), ":1: NUL byte at byte 4: not a text file, or UTF-16"),
    "unclosed quote": ('phone,name\n+12025550143,"Ann\n+12025550144,Bob\n', ':2: a quoted cell is never closed'),
}


@pytest.mark.parametrize("skip_invalid", [[], ["--skip-invalid"]], ids=["strict", "skip-invalid"])
@pytest.mark.parametrize("name", FILE_ERRORS)
def test_a_file_that_is_unusable_as_a_whole_imports_nothing(sqlite_cli: Cli, name: str, skip_invalid: list[str]) -> None:
    content, message = FILE_ERRORS[name]
    path = sqlite_cli.file(content)
    result = sqlite_cli("import", *skip_invalid, path)
    assert result.exit_code == 2
    assert f"{path}{message}" in result.stderr
    assert f"error: {path}: nothing imported" in result.stderr
    assert sqlite_cli.contacts() == {}


LONG = "x" * (MAX_CELL + 1)
MIXED = (
    "phone,name,email,groups,opted_out,note\n"         # line 1
    "+12025550143,Ann,,Friends,,\n"                    # 2 valid
    "12ab,Bad,,,,\n"                                   # 3 invalid phone
    "+12025550144,Bob,,,\n"                            # 4 one cell short
    "+12025550145,Cy,,,,,extra\n"                      # 5 one cell too many
    "(202) 555-0143,Ann again,,,,\n"                   # 6 same number as line 2
    "+12025550146,Di,not-an-email,,maybe,\n"           # 7 bad email and bad opted_out
    f"+12025550147,Ed,,,,{LONG}\n"                     # 8 overlong cell
    ",Nobody,,,,\n"                                    # 9 no phone
    "\n"                                               # 10 blank: skipped
    '+12025550148,"Fay\nmultiline",,Friends,yes,ok\n'  # 11-12 valid
    "+12025550149,Gus,,,,\n"                           # 13 valid
)
MIXED_PROBLEMS = [
    ":3: column phone: '12ab' is not a phone number",
    ":4: 5 cells, but the header has 6 columns",
    ":5: 7 cells, but the header has 6 columns",
    ":6: column phone: '(202) 555-0143' is the same number as line 2 (+12025550143)",
    ":7: column email: 'not-an-email' is not an email address",
    ":7: column opted_out: 'maybe' is not yes/no (true/false, 1/0)",
    f":8: column note: value is {MAX_CELL + 1:,} characters long (at most {MAX_CELL:,})",
    ":9: column phone: empty: every row needs a phone number",
]


def test_every_row_error_is_reported_with_line_and_column_and_nothing_is_imported(sqlite_cli: Cli) -> None:
    path = sqlite_cli.file(MIXED)
    result = sqlite_cli("import", path)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert [line.split(" (1)")[0].removesuffix(":") for line in lines[:-1]] == [path + p for p in MIXED_PROBLEMS]
    assert lines[-1] == (f"error: {path}: 7 invalid row(s); nothing imported "
                         "(fix them, or pass --skip-invalid to import the 3 valid row(s))")
    assert sqlite_cli.contacts() == {} and sqlite_cli.groups() == []


def test_skip_invalid_imports_the_valid_rows_and_reports_each_invalid_one(sqlite_cli: Cli) -> None:
    path = sqlite_cli.file(MIXED)
    result = sqlite_cli("import", "--skip-invalid", path)
    assert result.exit_code == 0, result.output
    assert "3 created, 0 updated, 0 unchanged, 1 groups created, 2 memberships added, 7 skipped" in result.stdout
    assert all(path + problem in result.stderr for problem in MIXED_PROBLEMS)
    assert f"warning: {path}: skipped 7 invalid row(s), listed above" in result.stderr
    contacts = sqlite_cli.contacts()
    assert sorted(contacts) == ["+12025550143", "+12025550148", "+12025550149"]
    assert contacts["+12025550143"]["name"] == "Ann"  # the first of the two rows with this number
    assert contacts["+12025550148"] == {"name": "Fay\nmultiline", "surname": "", "email": "", "extra": {"note": "ok"},
                                        "opted_out": True, "groups": {"Friends"}}


def test_a_database_failure_midway_rolls_back_the_whole_import(sqlite_cli: Cli) -> None:
    sqlite_cli.sql("INSERT INTO contacts (phone, name) VALUES ('+12025550140', 'Old')")
    sqlite_cli.sql("CREATE TRIGGER refuse BEFORE INSERT ON group_members "
                   "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    path = sqlite_cli.file("phone,name,groups\n+12025550140,New,\n+12025550143,Ann,\n+12025550144,Bob,Fresh\n")
    result = sqlite_cli("import", path)
    assert result.exit_code == 1
    assert f"error: {path}: the import failed and was rolled back, nothing imported: disk on fire" in result.stderr
    assert sqlite_cli.contacts() == {"+12025550140": {"name": "Old", "surname": "", "email": "", "extra": {},
                                                      "opted_out": False, "groups": set()}}
    assert sqlite_cli.groups() == []


def test_an_unreadable_file_is_exit_2(sqlite_cli: Cli) -> None:
    result = sqlite_cli("import", str(sqlite_cli.directory / "missing.csv"))
    assert result.exit_code == 2
    assert "error: cannot read" in result.stderr and "No such file or directory" in result.stderr


# --- export ---------------------------------------------------------------------------

HOSTILE = {
    "name": "=cmd|' /C calc'!A0",
    "surname": "-2+3",
    "email": "o'brien@example.org",
    "extra": {"note": "@SUM(1,2)", "tab": "\tx", "cr": "\rx", "quoted": "'=already quoted", "plain": "'hello",
              "phone": "clashes with a column", "extra.key": "prefixed", "multi": "line 1\nline 2, \"quoted\""},
}


def test_export_neutralises_formulas_but_not_e164_phones(cli: Cli) -> None:
    cli.sql("INSERT INTO contacts (phone, name, surname, email, extra) VALUES "
            "('+12025550143', :name, :surname, :email, :extra)", **{**HOSTILE, "extra": json.dumps(HOSTILE["extra"])})
    cli.sql("INSERT INTO contacts (phone, name) VALUES ('=1+1', 'typed by SQL')")
    cli.sql("INSERT INTO groups (name) VALUES ('+plus'), ('Alpha')")
    cli.sql("INSERT INTO group_members (group_id, contact_id) VALUES (1, 1), (2, 1)")
    path = str(cli.directory / "out.csv")
    result = cli("export", path)
    assert result.exit_code == 0, result.output
    header, first, second = read_csv(path)
    # Extra keys sorted; those that would read back as another column get the "extra." prefix.
    assert header == ["phone", "name", "surname", "email", "groups", "cr", "extra.extra.key", "multi", "note",
                      "extra.phone", "plain", "quoted", "tab", "opted_out", "opted_out_origin"]
    assert first == ["+12025550143", "'=cmd|' /C calc'!A0", "'-2+3", "o'brien@example.org", "'+plus;Alpha", "'\rx",
                     "prefixed", 'line 1\nline 2, "quoted"', "'@SUM(1,2)", "clashes with a column", "'hello",
                     "''=already quoted", "'\tx", "false", ""]
    assert second[:2] == ["'=1+1", "typed by SQL"]


def test_export_then_import_gives_back_every_value(cli: Cli, tmp_path: Path) -> None:
    cli.sql("INSERT INTO contacts (phone, name, surname, email, extra, opted_out) VALUES "
            "('+12025550143', :name, :surname, :email, :extra, true), ('+447911123456', 'Zoë', '', '', '{}', false)",
            **{**HOSTILE, "extra": json.dumps(HOSTILE["extra"])})
    cli.sql("INSERT INTO groups (name) VALUES ('=Group'), ('Friends')")
    cli.sql("INSERT INTO group_members (group_id, contact_id) VALUES (1, 1), (2, 1), (2, 2)")
    before, exported = cli.contacts(), str(tmp_path / "book.csv")
    assert cli("export", exported).exit_code == 0
    cli.sql("DELETE FROM contacts")
    cli.sql("DELETE FROM groups")
    result = cli("import", exported)
    assert result.exit_code == 0, result.output
    assert "2 created, 0 updated, 0 unchanged, 2 groups created, 3 memberships added, 0 skipped" in result.stdout
    assert cli.contacts() == before
    again = str(tmp_path / "again.csv")
    assert cli("export", again).exit_code == 0
    assert Path(again).read_bytes() == Path(exported).read_bytes()
    assert "2 unchanged" in cli("import", exported).stdout  # importing it once more changes nothing


def test_export_writes_utf8_without_bom_newline_endings_by_id_and_json_for_non_text_extra(sqlite_cli: Cli) -> None:
    sqlite_cli.sql("INSERT INTO contacts (phone, name, extra) VALUES ('+12025550144', 'Zoë', :a), "
                   "('+12025550143', 'Ann', :b), ('+12025550145', 'Cy', '[1, 2]')",
                   a=json.dumps({"size": 44, "tags": ["a"], "none": None}), b=json.dumps({"city": "Zürich"}))
    path = str(sqlite_cli.directory / "out.csv")
    result = sqlite_cli("export", path)
    assert result.exit_code == 0 and f"{path}: exported 3 contacts" in result.stdout
    assert f"warning: {path}: contact 3: extra is not a JSON object (list); left out" in result.stderr
    assert Path(path).read_bytes().decode("utf-8") == (
        "phone,name,surname,email,groups,city,none,size,tags,opted_out,opted_out_origin\n"
        '+12025550144,Zoë,,,,,,44,"[""a""]",false,\n'
        "+12025550143,Ann,,,,Zürich,,,,false,\n"
        "+12025550145,Cy,,,,,,,,false,\n")


def test_export_to_a_missing_directory_is_exit_2_and_leaves_nothing(sqlite_cli: Cli) -> None:
    result = sqlite_cli("export", str(sqlite_cli.directory / "nope" / "out.csv"))
    assert result.exit_code == 2 and "error: cannot write" in result.stderr
    assert not (sqlite_cli.directory / "nope").exists()


# --- the pure parts -------------------------------------------------------------------

CELL_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@given(CELL_TEXT)
def test_neutralised_cells_never_start_a_formula_and_read_back_unchanged(cell: str) -> None:
    safe = neutralise(cell)
    assert safe[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert unneutralise(safe) == cell


@given(name=CELL_TEXT, note=CELL_TEXT.filter(str.strip))
def test_any_written_cell_parses_back_to_its_value(name: str, note: str) -> None:
    out = io.StringIO()
    write_rows(out, [["phone", "name", "note"], ["+12025550143", neutralise(name), neutralise(note)]])
    parsed = parse_csv(out.getvalue(), "US")
    assert parsed.problems == []
    (record,) = parsed.records
    assert (record.fields["name"], record.extra["note"]) == (name, note)
