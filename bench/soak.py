"""Soak: the real daemon (``syncd run``) for ten minutes, 10,000 contacts, random edits on both sides.

Not a test: it prints figures and a PASS/FAIL line per goal. What it measures:

* the daemon's **memory, file descriptors and threads** (``/proc/PID/status`` VmRSS,
  ``/proc/PID/fd``, ``/proc/PID/task``) after warm-up, halfway and at the end. Runs
  come and go every second, so each figure is read 25 times over 5 s and given as
  min-max. The RSS goal compares the maxima (a run's peak is part of what a leak
  grows); the fd and thread goals compare the minima, the idle baseline between
  runs (a run opens sockets and a resolver thread and closes them; a leaked one
  stays open and raises the baseline);
* whether **every edit arrived**: each edit goes in a ledger saying what every side
  (the canonical book, SendHub, smsend) must show afterwards, and after a quiet
  period the ledger is checked against all three;
* the runs (``sync_runs``: count, statuses, duration distribution), the
  ``change_log`` size against ``sync.log_retention_days``, and the warnings and
  errors the daemon logged.

How it runs:

1. SendHub (seeded with ``--contacts`` contacts in ``--groups`` groups) and an empty
   smsend, each in its own process (``bench/_procs.py``); a temporary directory with
   ``config.toml`` (SQLite book, ``schedule.interval_seconds = 1``, JSON logs) and
   ``syncd db upgrade``.
2. ``python -m syncd --config DIR/config.toml run`` in a process (and session) of its own.
3. Warm-up: the first full sync (imports everything from SendHub, pushes it to
   smsend) and one more run; then the start sample and a three-way comparison of
   the books (differences already there are not the soak's).
4. ``--minutes`` of soak: every ``--edit-every`` finished runs, a round of 4 to 12
   random edits, each on a contact no other edit has touched (so no conflict can
   make an edit lose, and every one must arrive):
   at SendHub, through the simulator's state in its process: rename, email, custom
   field ``city`` (smsend holds it), custom field ``nickname`` (smsend does not),
   join or leave a group, delete, create;
   in the book, by plain SQL on the SQLite file: rename (``name``, ``surname``),
   ``email``, ``extra`` ``city``/``nickname``, join or leave a group
   (``group_members``), ``DELETE``, ``INSERT``.
   A progress line every minute; the middle sample halfway.
5. Quiet period: no more edits; wait until a run that *started after the last
   edit* has finished ``ok`` (``sync_runs``). Then the end sample.
6. The ledger is checked on every side (an edit's own side too: the engine must not
   undo it). If some edit is missing, three more runs are waited for and the ledger
   checked again, to tell "late" from "never".

Goals: RSS growth (end vs start, after warm-up) under 10 %; no more fds and threads
at the end than at the start (idle baseline); every edit synced.

Usage::

    python bench/soak.py [--minutes 10] [--contacts 10000] [--groups 20] [--edit-every 3]
                         [--seed 1] [--retention-days 90] [--quiet-timeout 300] [--keep DIR]

A quick check: ``python bench/soak.py --minutes 2 --contacts 2000``. ``--keep DIR``
leaves the book, ``config.toml`` and ``daemon.log`` in DIR (created, must be empty).
Ctrl-C stops the daemon and the simulators and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

# `python bench/soak.py` puts bench/ on sys.path; the helpers live next to this file.
from _procs import SimProcess

# This module is also imported (as __mp_main__) in each simulator process, which runs
# the module-level functions of the "in the simulator's process" section: keep the
# imports here light and the work under main().

SIDES = ("book", "sendhub", "smsend")
#: Custom fields / extra keys smsend can hold (syncd.providers.smsend.EXTRA_FIELDS).
SMSEND_EXTRA = frozenset((
    "gender", "fax", "address", "city", "province", "birthdate", "promotiondate", "rememberdate", "zip",
    *(f"custom{i}" for i in range(1, 11)),
))
TEMP_GROUP_PREFIX = "syncd-delete-"  # smsend groups syncd deletes contacts through
SAMPLES_PER_WINDOW, SAMPLE_STEP = 25, 0.2
POLL = 0.25
FIRST_SYNC_TIMEOUT = 900.0
_FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena")
_LAST = ("Abara", "Bianchi", "Castro", "Duval", "Eriksen", "Fontaine", "Gallo", "Haas", "Ito", "Jovanovic")
EPOCH = datetime.fromtimestamp(0, UTC)  # "not yet stamped", and "any time" for waits
_AREA_CODES = ("201", "212", "305", "312", "415", "512", "617", "702", "713", "801", "919", "971")


# -- in the simulator's process (called through SimProcess.call) -----------------------------------


def apply_at_sendhub(state: Any, ops: list[dict[str, str]]) -> list[str | None]:
    """Apply edits "at the provider" (no HTTP); per op None, or why it could not be made."""
    results: list[str | None] = []
    for op in ops:
        try:
            kind = op["kind"]
            if kind == "create":
                state.add_contact(op["value"], op["phone"])
                results.append(None)
                continue
            contact = state.find(op["phone"])
            if contact is None:
                raise LookupError(f"no contact {op['phone']}")
            if kind == "rename":
                state.edit_contact(contact.id, name=op["value"])
            elif kind in ("email", "city", "nickname"):
                state.edit_contact(contact.id, **{kind: op["value"]})
            elif kind in ("join", "leave"):
                group = state.group_named(op["group"])
                change = state.add_member if kind == "join" else state.remove_member
                if group is None or not change(group.id, contact.id):
                    raise LookupError(f"membership of {op['group']!r} unchanged")
            elif kind == "delete":
                state.delete_contact(contact.id)
            else:
                raise ValueError(f"unknown edit {kind!r}")
            results.append(None)
        except Exception as exc:  # reported with the edit
            results.append(f"{type(exc).__name__}: {exc}")
    return results


def sendhub_view(state: Any) -> dict[str, tuple[str, dict[str, str], tuple[str, ...]]]:
    """Number -> (name, custom fields, group names) of every SendHub contact."""
    with state.lock:
        names = {g.id: g.name for g in state.groups.values()}
        return {c.number: (c.name, {k: _as_text(v) for k, v in c.extra.items() if _as_text(v)},
                           tuple(sorted(names[g] for g in c.groups)))
                for c in state.contacts.values()}


def smsend_view(state: Any) -> tuple[dict[str, tuple[str, dict[str, str], tuple[str, ...]]], int]:
    """Number -> (full name, other fields, group names) of every smsend contact; and how many numbers repeat."""
    snapshot = state.snapshot()
    names = {g["id"]: g["name"] for g in snapshot["groups"]}
    view: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {}
    repeated = 0
    for contact in snapshot["contacts"]:
        phone = contact.get("phoneNumber") or f"(no number) {contact['id']}"
        if phone in view:
            repeated += 1
        skip = {"id", "groupIds", "phoneNumber", "name", "surname"}
        fields = {k: v for k, v in contact.items() if k not in skip and v}
        groups = tuple(sorted(names[g] for g in contact["groupIds"] if not names[g].startswith(TEMP_GROUP_PREFIX)))
        view[phone] = (full_name(contact.get("name", ""), contact.get("surname", "")), fields, groups)
    return view, repeated


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def full_name(name: str, surname: str) -> str:
    """The one name SendHub keeps for canonical ``name`` + ``surname`` (syncd.providers.sendhub.full_name)."""
    return " ".join(part for part in (name, surname) if part)


# -- what each side holds --------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactView:
    """One contact as a side shows it: full name, other fields as text (email included), group names."""

    name: str
    fields: dict[str, str]
    groups: frozenset[str]


View = dict[str, ContactView]  # by E.164 number


def to_view(raw: dict[str, tuple[str, dict[str, str], tuple[str, ...]]]) -> View:
    return {phone: ContactView(name, fields, frozenset(groups)) for phone, (name, fields, groups) in raw.items()}


# -- the edits and their ledger --------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One edit made, and what each of ``sides`` must show once it is synced.

    ``what``: ``absent`` (a delete), ``name`` (a rename or a create: present with this
    full name), ``field`` (``key`` holds ``value``), ``member`` / ``not_member`` (of group ``key``).
    """

    seq: int
    origin: str  # "sendhub" | "sql"
    kind: str
    phone: str
    what: str
    key: str
    value: str
    sides: tuple[str, ...]
    at: datetime

    def describe(self) -> str:
        target = {"absent": "deleted", "name": f"name {self.value!r}", "field": f"{self.key} = {self.value!r}",
                  "member": f"in group {self.key!r}", "not_member": f"out of group {self.key!r}"}[self.what]
        return f"#{self.seq} {self.origin} {self.kind} {self.phone}: {target}"

    def holds(self, view: View) -> bool:
        contact = view.get(self.phone)
        if self.what == "absent":
            return contact is None
        if contact is None:
            return False
        if self.what == "name":
            return contact.name == self.value
        if self.what == "field":
            return contact.fields.get(self.key, "") == self.value
        if self.what == "member":
            return self.key in contact.groups
        return self.key not in contact.groups

    def found(self, view: View) -> str:
        """What the side shows instead, for the report."""
        contact = view.get(self.phone)
        if contact is None:
            return "absent"
        if self.what == "absent":
            return "still present"
        if self.what == "name":
            return f"name {contact.name!r}"
        if self.what == "field":
            return f"{self.key} = {contact.fields.get(self.key, '')!r}"
        return f"groups {sorted(contact.groups)}"


#: (origin, kind) -> weight; deletes and creates are rarer than field edits.
EDIT_KINDS: dict[tuple[str, str], float] = {
    (origin, kind): weight
    for origin in ("sendhub", "sql")
    for kind, weight in (("rename", 3), ("email", 2), ("city", 2), ("nickname", 1), ("join", 1), ("leave", 1),
                         ("delete", 0.5), ("create", 1))
}


@dataclass
class Target:
    """A contact no edit has touched yet, as the book showed it after warm-up."""

    phone: str
    groups: frozenset[str]


class Editor:
    """Makes rounds of random edits, each on a fresh contact, and keeps the ledger."""

    def __init__(self, rng: random.Random, book: BookDb, sendhub: SimProcess, warm: View, taken: set[str]) -> None:
        self.rng, self.book, self.sendhub = rng, book, sendhub
        self.pool = [Target(phone, c.groups) for phone, c in sorted(warm.items())]
        rng.shuffle(self.pool)
        self.groups = sorted({g for c in warm.values() for g in c.groups}) or ["Customers"]
        self.taken = taken  # every number in use anywhere, so creates get new ones
        self.ledger: list[Edit] = []
        self.refused: list[str] = []  # edits the driver could not make (its own problem, not syncd's)
        self.rounds = 0
        self.seq = 0  # edits planned so far, refused ones included: each edit's number
        self.exhausted = False

    @property
    def last_edit_at(self) -> datetime | None:
        return max((e.at for e in self.ledger), default=None)

    def round(self) -> int:
        """One round of 4 to 12 edits; how many were made."""
        kinds = self.rng.choices(list(EDIT_KINDS), weights=list(EDIT_KINDS.values()), k=self.rng.randint(4, 12))
        planned: list[tuple[Edit, dict[str, str]]] = []
        for origin, kind in kinds:
            self.seq += 1
            item = self._plan(origin, kind, self.seq)
            if item is None:
                self.exhausted = True
                break
            planned.append(item)
        at_sendhub = [(e, op) for e, op in planned if e.origin == "sendhub"]
        by_sql = [(e, op) for e, op in planned if e.origin == "sql"]
        made = []
        if at_sendhub:
            results = self.sendhub.call(apply_at_sendhub, [op for _, op in at_sendhub])
            done = now()
            for (edit, _), error in zip(at_sendhub, results, strict=True):
                if error is None:
                    made.append(replace(edit, at=done))
                else:
                    self.refused.append(f"{edit.describe()}: {error}")
        if by_sql:
            results = self.book.apply([op for _, op in by_sql])
            done = now()
            for (edit, _), error in zip(by_sql, results, strict=True):
                if error is None:
                    made.append(replace(edit, at=done))
                else:
                    self.refused.append(f"{edit.describe()}: {error}")
        self.ledger.extend(sorted(made, key=lambda e: e.seq))
        self.rounds += 1
        return len(made)

    def _plan(self, origin: str, kind: str, seq: int) -> tuple[Edit, dict[str, str]] | None:
        """The edit (what must show afterwards) and the op that makes it; None when no fresh contact is left."""
        every = SIDES
        without_smsend = ("book", "sendhub")
        tag = "s" if origin == "sendhub" else "q"
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        if kind == "create":
            phone = new_number(self.rng, self.taken)
            name, surname = first, f"{last}-{tag}{seq}"
            op = {"kind": kind, "phone": phone, "value": full_name(name, surname), "name": name, "surname": surname}
            return Edit(seq, origin, kind, phone, "name", "", op["value"], every, EPOCH), op
        if not self.pool:
            return None
        target = self.pool.pop()
        op = {"kind": kind, "phone": target.phone}
        if kind == "rename":
            op.update(value=f"{first} {last}-{tag}{seq}", name=first, surname=f"{last}-{tag}{seq}")
            edit = Edit(seq, origin, kind, target.phone, "name", "", op["value"], every, EPOCH)
        elif kind in ("email", "city", "nickname"):
            value = {"email": f"soak{seq}.{tag}@example.com", "city": f"Soakville {seq}", "nickname": f"nick-{seq}"}
            op["value"] = value[kind]
            sides = every if kind in ("email", "city") else without_smsend
            edit = Edit(seq, origin, kind, target.phone, "field", kind, op["value"], sides, EPOCH)
        elif kind in ("join", "leave"):
            outside = [g for g in self.groups if g not in target.groups]
            if kind == "leave" and not target.groups:
                kind = "join"  # nothing to leave
            elif kind == "join" and not outside:
                kind = "leave"  # in every group already
            op["kind"] = kind
            op["group"] = self.rng.choice(outside if kind == "join" else sorted(target.groups))
            what = "member" if kind == "join" else "not_member"
            edit = Edit(seq, origin, kind, target.phone, what, op["group"], "", every, EPOCH)
        elif kind == "delete":
            edit = Edit(seq, origin, kind, target.phone, "absent", "", "", every, EPOCH)
        else:
            raise ValueError(kind)
        return edit, op


def now() -> datetime:
    return datetime.now(UTC)


def new_number(rng: random.Random, taken: set[str]) -> str:
    """A valid North American number (SendHub takes only those) in no book yet."""
    import phonenumbers

    while True:
        exchange = rng.randint(200, 999)
        if exchange % 100 == 11 or exchange == 555:
            continue
        number = f"+1{rng.choice(_AREA_CODES)}{exchange}{rng.randint(0, 9999):04d}"
        if number not in taken and phonenumbers.is_valid_number(phonenumbers.parse(number)):
            taken.add(number)
            return number


# -- the canonical book (plain SQL on the SQLite file) ----------------------------------------------


@dataclass(frozen=True)
class Run:
    id: int
    started: datetime
    finished: datetime | None
    status: str
    summary: dict[str, Any]

    @property
    def duration(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.finished else None


def _parse_time(value: str | None) -> datetime | None:
    """A UTCDateTime column as SQLite stores it (UTC wall time as text)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class BookDb:
    """The daemon's SQLite file, through the standard library: what a user's own SQL would do."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit BEGIN/COMMIT below
        self.conn.execute("PRAGMA foreign_keys = ON")  # a deleted contact takes its memberships along

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, mode: str = "DEFERRED") -> Iterator[sqlite3.Connection]:
        self.conn.execute(f"BEGIN {mode}")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def runs(self) -> list[Run]:
        rows = self.conn.execute("SELECT id, started_at, finished_at, status, summary FROM sync_runs ORDER BY id")
        return [Run(i, _parse_time(s) or EPOCH, _parse_time(f), st, json.loads(summary or "{}"))
                for i, s, f, st, summary in rows]

    def finished_runs(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM sync_runs WHERE finished_at IS NOT NULL").fetchone()[0])

    def change_log_rows(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM change_log").fetchone()[0])

    def view(self) -> View:
        with self.transaction() as conn:  # one snapshot for both queries
            groups: dict[str, set[str]] = {}
            memberships = conn.execute("SELECT c.phone, g.name FROM group_members m "
                                       "JOIN contacts c ON c.id = m.contact_id JOIN groups g ON g.id = m.group_id")
            for phone, group in memberships:
                groups.setdefault(phone, set()).add(group)
            view = {}
            for phone, name, surname, email, extra in conn.execute(
                    "SELECT phone, name, surname, email, extra FROM contacts"):
                fields = {k: _as_text(v) for k, v in json.loads(extra or "{}").items() if _as_text(v)}
                if email:
                    fields["email"] = email
                view[phone] = ContactView(full_name(name, surname), fields, frozenset(groups.get(phone, ())))
        return view

    def apply(self, ops: list[dict[str, str]]) -> list[str | None]:
        """The edits by plain SQL in one transaction; per op None, or why it changed nothing."""
        results: list[str | None] = []
        with self.transaction("IMMEDIATE") as conn:
            for op in ops:
                cursor = self._apply_one(conn, op)
                results.append(None if cursor.rowcount == 1 else f"{cursor.rowcount} rows changed")
        return results

    @staticmethod
    def _apply_one(conn: sqlite3.Connection, op: dict[str, str]) -> sqlite3.Cursor:
        kind, phone = op["kind"], op["phone"]
        if kind == "create":
            return conn.execute("INSERT INTO contacts (phone, name, surname) VALUES (?, ?, ?)",
                                (phone, op["name"], op["surname"]))
        if kind == "rename":
            return conn.execute("UPDATE contacts SET name = ?, surname = ? WHERE phone = ?",
                                (op["name"], op["surname"], phone))
        if kind == "email":
            return conn.execute("UPDATE contacts SET email = ? WHERE phone = ?", (op["value"], phone))
        if kind in ("city", "nickname"):
            return conn.execute(f"UPDATE contacts SET extra = json_set(coalesce(extra, '{{}}'), '$.{kind}', ?) "
                                "WHERE phone = ?", (op["value"], phone))
        if kind == "join":
            return conn.execute("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id "
                                "FROM groups g, contacts c WHERE g.name = ? AND c.phone = ?", (op["group"], phone))
        if kind == "leave":
            return conn.execute("DELETE FROM group_members WHERE group_id = (SELECT id FROM groups WHERE name = ?) "
                                "AND contact_id = (SELECT id FROM contacts WHERE phone = ?)", (op["group"], phone))
        if kind == "delete":
            return conn.execute("DELETE FROM contacts WHERE phone = ?", (phone,))
        raise ValueError(f"unknown edit {kind!r}")


# -- the daemon process --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The daemon's figures over one window: (min, max) of each, and the lifetime peak RSS."""

    label: str
    at: float  # seconds into the soak
    rss_kb: tuple[int, int]
    fds: tuple[int, int]
    threads: tuple[int, int]
    peak_kb: int


def read_proc(pid: int) -> tuple[int, int, int, int]:
    """(VmRSS KiB, VmHWM KiB, open fds, threads) of a Linux process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}
    return kib["VmRSS"], kib["VmHWM"], len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


class DaemonProcess:
    """``syncd run`` in a process and session of its own (Ctrl-C in the terminal does not reach it)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def sample(self, label: str, at: float) -> Sample:
        reads = []
        for i in range(SAMPLES_PER_WINDOW):
            reads.append(read_proc(self.pid))
            if i < SAMPLES_PER_WINDOW - 1:
                time.sleep(SAMPLE_STEP)
        rss, hwm, fds, threads = (list(column) for column in zip(*reads, strict=True))
        return Sample(label, at, (min(rss), max(rss)), (min(fds), max(fds)), (min(threads), max(threads)), max(hwm))

    def stop(self) -> int | None:
        """SIGTERM (the daemon settles its run and exits 0), SIGKILL after 40 s; the exit code."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- the soak ------------------------------------------------------------------------------------------


class SoakError(RuntimeError):
    """The soak could not go on (the daemon died, a wait timed out)."""


def write_config(path: Path, db: Path, sims: list[SimProcess], retention_days: int) -> None:
    """config.toml for the simulators: interval 1 s, fast limits (everything is local), JSON logs."""
    q = json.dumps  # a JSON string of ASCII text is a TOML basic string
    lines = [
        "[database]", f"url = {q(f'sqlite:///{db}')}", "",
        "[schedule]", "interval_seconds = 1", "",
        "[sync]", 'default_region = "US"', f"log_retention_days = {retention_days}", "",
        "[logging]", 'level = "info"', 'format = "json"', "",
    ]
    for sim in sims:
        creds = sim.info["credentials"]
        lines += ["[[providers]]", f"name = {q(sim.kind)}", f"type = {q(sim.kind)}",
                  f"base_url = {q(sim.info['base_url'])}", "requests_per_second = 1000", "max_concurrency = 8",
                  "batch_size = 500", "timeout_seconds = 30"]
        if sim.kind == "smsend":
            lines += [f"user_key = {q(creds['user_key'])}", f"access_token = {q(creds['access_token'])}"]
        else:
            lines += [f"username = {q(creds['username'])}", f"api_key = {q(creds['api_key'])}"]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Children started inside inherit SIGINT ignored: Ctrl-C reaches only this process, which stops them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fmt_mb(kib: int) -> str:
    return f"{kib / 1024:.1f} MB"


def fmt_range(pair: tuple[int, int], unit: Callable[[int], str] = str) -> str:
    return unit(pair[0]) if pair[0] == pair[1] else f"{unit(pair[0])}-{unit(pair[1])}"


def fmt_clock(seconds: float) -> str:
    return f"{int(seconds) // 60:>3}:{int(seconds) % 60:02d}"


@dataclass
class Check:
    """The ledger against the three sides: per missing edit, each side it has not reached and what that side shows."""

    missing: list[tuple[Edit, dict[str, str]]] = field(default_factory=list)
    arrived: int = 0

    @classmethod
    def of(cls, ledger: list[Edit], views: dict[str, View]) -> Check:
        check = cls()
        for edit in ledger:
            found = {side: edit.found(views[side]) for side in edit.sides if not edit.holds(views[side])}
            if found:
                check.missing.append((edit, found))
            else:
                check.arrived += 1
        return check


def compare_books(views: dict[str, View]) -> dict[str, list[str]]:
    """Every contact compared across the sides: name, email and extras, groups. Pair -> differences."""
    book, sendhub, smsend = views["book"], views["sendhub"], views["smsend"]
    diffs: dict[str, list[str]] = {"book/sendhub": [], "book/smsend": []}
    for other, name, held in ((sendhub, "book/sendhub", None), (smsend, "book/smsend", SMSEND_EXTRA | {"email"})):
        for phone in sorted(book.keys() | other.keys()):
            a, b = book.get(phone), other.get(phone)
            if a is None or b is None:
                diffs[name].append(f"{phone}: only in {'book' if b is None else name.split('/')[1]}")
                continue
            a_fields = {k: v for k, v in a.fields.items() if held is None or k in held}
            pairs = {"name": (a.name, b.name), "fields": (a_fields, b.fields),
                     "groups": (sorted(a.groups), sorted(b.groups))}
            detail = "; ".join(f"{what}: {mine!r} vs {theirs!r}" for what, (mine, theirs) in pairs.items()
                               if mine != theirs)
            if detail:
                diffs[name].append(f"{phone}: {detail}")
    return diffs


class Soak:
    """The simulators, the daemon, the book and the ledger of one soak."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.rng = random.Random(args.seed)
        self.sims: list[SimProcess] = []
        self.sendhub: SimProcess | None = None
        self.smsend: SimProcess | None = None
        self.daemon: DaemonProcess | None = None
        self.book: BookDb | None = None
        self.editor: Editor | None = None
        self.samples: list[Sample] = []
        self.progress: list[str] = []
        self.soak_started = 0.0
        self.warm_change_log = 0
        self.warm_diffs: dict[str, list[str]] = {}
        self.smsend_repeats = 0

    # -- set-up and tear-down ---------------------------------------------------------

    def start(self) -> None:
        args = self.args
        started = time.perf_counter()
        with sigint_ignored():
            self.sendhub = SimProcess.start("sendhub", contacts=args.contacts, groups=args.groups, seed=args.seed)
            self.sims.append(self.sendhub)
            self.smsend = SimProcess.start("smsend", seed=args.seed)
            self.sims.append(self.smsend)
        print(f"simulators up in {time.perf_counter() - started:.1f} s: "
              + ", ".join(f"{s.kind} pid {s.pid}" for s in self.sims), flush=True)
        db, config = self.workdir / "syncd.db", self.workdir / "config.toml"
        write_config(config, db, self.sims, args.retention_days)
        subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), "db", "upgrade"], check=True,
                       stdout=subprocess.DEVNULL)
        self.book = BookDb(db)
        self.daemon = DaemonProcess(config, self.workdir / "daemon.log")
        print(f"daemon `syncd run` pid {self.daemon.pid}; working directory {self.workdir}", flush=True)

    def close(self) -> None:
        if self.daemon is not None:
            code = self.daemon.stop()
            print(f"daemon stopped (exit code {code})", flush=True)
        if self.book is not None:
            self.book.close()
        for sim in self.sims:
            sim.stop()

    # -- waiting on sync_runs -------------------------------------------------------

    def _alive(self) -> None:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise SoakError(f"the daemon exited (code {self.daemon.process.returncode}); "
                            f"its log ends:\n{self.daemon.log_tail()}")

    def wait_runs(self, count: int, timeout: float) -> None:
        """Until ``count`` runs have finished."""
        assert self.book is not None
        deadline = time.monotonic() + timeout
        while self.book.finished_runs() < count:
            self._alive()
            if time.monotonic() > deadline:
                raise SoakError(f"fewer than {count} runs finished in {timeout:.0f} s")
            time.sleep(POLL)

    def wait_ok_run_after(self, after: datetime, timeout: float) -> tuple[Run | None, list[Run]]:
        """The first run that started after ``after`` and finished ok; and the not-ok ones before it."""
        assert self.book is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            later = [r for r in self.book.runs() if r.started > after and r.finished is not None]
            for run in later:
                if run.status == "ok":
                    return run, [r for r in later if r.id < run.id]
            time.sleep(POLL)
        return None, [r for r in self.book.runs() if r.started > after and r.finished is not None]

    # -- phases -----------------------------------------------------------------------

    def warm_up(self) -> None:
        assert self.book is not None and self.daemon is not None and self.sendhub is not None
        started = time.perf_counter()
        first, not_ok = self.wait_ok_run_after(EPOCH, FIRST_SYNC_TIMEOUT)
        if first is None:
            raise SoakError(f"no run finished ok in {FIRST_SYNC_TIMEOUT:.0f} s: "
                            + ", ".join(f"#{r.id} {r.status}" for r in not_ok))
        print(f"first full sync: run #{first.id} ok in {first.duration:.1f} s "
              f"({time.perf_counter() - started:.1f} s after the daemon started)"
              + (f"; before it: {', '.join(f'#{r.id} {r.status}' for r in not_ok)}" if not_ok else ""), flush=True)
        self.wait_runs(self.book.finished_runs() + 1, 300)
        views = self.views()
        self.warm_diffs = compare_books(views)
        self.warm_change_log = self.book.change_log_rows()
        print(f"after warm-up: book {len(views['book'])}, SendHub {len(views['sendhub'])}, "
              f"smsend {len(views['smsend'])} contacts; differences: "
              + ", ".join(f"{pair} {len(d)}" for pair, d in self.warm_diffs.items()), flush=True)
        taken = set(views["book"]) | set(views["sendhub"]) | set(views["smsend"])
        warm = {p: c for p, c in views["book"].items() if p in views["sendhub"] and p in views["smsend"]}
        self.editor = Editor(self.rng, self.book, self.sendhub, warm, taken)
        self.soak_started = time.monotonic()
        self.samples.append(self.daemon.sample("start", 0.0))
        print(f"start sample: {self.describe_sample(self.samples[-1])}", flush=True)

    def soak(self) -> None:
        assert self.book is not None and self.daemon is not None and self.editor is not None
        duration = self.args.minutes * 60
        next_edit_at = self.book.finished_runs()  # the first round at once
        next_progress, middle_taken = 60.0, False
        print(f"soak: {self.args.minutes:g} min, a round of edits every {self.args.edit_every} runs", flush=True)
        while (elapsed := time.monotonic() - self.soak_started) < duration:
            self._alive()
            finished = self.book.finished_runs()
            if finished >= next_edit_at and not self.editor.exhausted:
                self.editor.round()
                next_edit_at = finished + self.args.edit_every
                if self.editor.exhausted:
                    print("  no untouched contact left: no more edits", flush=True)
            if not middle_taken and elapsed >= duration / 2:
                middle_taken = True
                self.samples.append(self.daemon.sample("middle", elapsed))
            if elapsed >= next_progress:
                next_progress += 60
                self.print_progress(elapsed)
            time.sleep(POLL)

    def print_progress(self, elapsed: float) -> None:
        assert self.book is not None and self.daemon is not None and self.editor is not None
        runs = [r for r in self.book.runs() if r.finished is not None]
        statuses = Counter(r.status for r in runs)
        rss, _, fds, threads = read_proc(self.daemon.pid)
        last = runs[-1].duration if runs else None
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        line = (f"[{fmt_clock(elapsed)}] runs {len(runs)} ({by_status}), last {last or 0:.2f} s | "
                f"edits {len(self.editor.ledger)} in {self.editor.rounds} rounds | "
                f"RSS {fmt_mb(rss)}, fds {fds}, threads {threads} | change_log {self.book.change_log_rows()} rows")
        self.progress.append(line)
        print(line, flush=True)

    def quiet(self) -> tuple[Run | None, list[Run], float]:
        """Wait for a run that started after the last edit to finish ok; (that run, not-ok ones, seconds waited)."""
        assert self.editor is not None
        last = self.editor.last_edit_at or now()
        started = time.monotonic()
        print(f"quiet period: no more edits; waiting for a run started after the last edit "
              f"({last:%H:%M:%S.%f} UTC) to finish ok", flush=True)
        run, not_ok = self.wait_ok_run_after(last, self.args.quiet_timeout)
        return run, not_ok, time.monotonic() - started

    def views(self) -> dict[str, View]:
        assert self.book is not None and self.sendhub is not None and self.smsend is not None
        smsend, self.smsend_repeats = self.smsend.call(smsend_view)
        return {"book": self.book.view(), "sendhub": to_view(self.sendhub.call(sendhub_view)),
                "smsend": to_view(smsend)}

    # -- the whole thing -------------------------------------------------------------

    def run(self) -> bool:
        """Every phase and the report; whether every goal passed."""
        self.start()
        self.warm_up()
        self.soak()
        assert self.daemon is not None and self.editor is not None and self.book is not None
        soak_seconds = time.monotonic() - self.soak_started
        quiet_run, not_ok, waited = self.quiet()
        if quiet_run is not None:
            print(f"  run #{quiet_run.id} (started {quiet_run.started:%H:%M:%S.%f}) finished ok after "
                  f"{waited:.1f} s" + (f"; not ok before it: {', '.join(f'#{r.id} {r.status}' for r in not_ok)}"
                                       if not_ok else ""), flush=True)
        else:
            print(f"  NO run started after the last edit finished ok within {self.args.quiet_timeout:.0f} s",
                  flush=True)
        self.samples.append(self.daemon.sample("end", time.monotonic() - self.soak_started))
        views = self.views()
        check = Check.of(self.editor.ledger, views)
        later = None
        if check.missing:
            print(f"  {len(check.missing)} edits missing: waiting 3 more runs before checking again", flush=True)
            try:
                self.wait_runs(self.book.finished_runs() + 3, 120)
            except SoakError as exc:
                print(f"  {exc}", flush=True)
            later = Check.of(self.editor.ledger, self.views())
        return Report(self, soak_seconds, quiet_run, check, later, views).print()

    @staticmethod
    def describe_sample(s: Sample) -> str:
        return (f"RSS {fmt_range(s.rss_kb, fmt_mb)} (peak so far {fmt_mb(s.peak_kb)}), "
                f"fds {fmt_range(s.fds)}, threads {fmt_range(s.threads)}")


# -- the report -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Report:
    soak: Soak
    soak_seconds: float
    quiet_run: Run | None
    check: Check
    later: Check | None
    views: dict[str, View]

    def print(self) -> bool:
        print()
        self.print_process()
        self.print_runs()
        self.print_change_log()
        self.print_edits()
        self.print_books()
        self.print_daemon_log()
        return self.print_goals()

    def print_process(self) -> None:
        print(f"== daemon process (pid {self.soak.daemon.pid if self.soak.daemon else '?'}); "
              f"each figure min-max of {SAMPLES_PER_WINDOW} reads over {SAMPLES_PER_WINDOW * SAMPLE_STEP:.0f} s")
        for s in self.soak.samples:
            print(f"  {s.label:<6} at {fmt_clock(s.at)}: {Soak.describe_sample(s)}")
        if self.soak.progress:
            print("  per minute (one read each):")
            for line in self.soak.progress:
                print(f"    {line}")

    def print_runs(self) -> None:
        assert self.soak.book is not None
        runs = [r for r in self.soak.book.runs() if r.finished is not None]
        print(f"\n== runs (sync_runs): {len(runs)} finished in all; "
              f"statuses {dict(sorted(Counter(r.status for r in runs).items()))}")
        if not runs:
            return
        first, rest = runs[0], runs[1:]
        print(f"  first full sync: #{first.id} {first.status}, {first.duration:.2f} s")
        durations = [r.duration for r in rest if r.duration is not None]
        if durations:
            print(f"  the {len(durations)} runs after it: mean {statistics.fmean(durations):.3f} s, "
                  f"min {min(durations):.3f}, p50 {percentile(durations, .5):.3f}, "
                  f"p90 {percentile(durations, .9):.3f}, p99 {percentile(durations, .99):.3f}, "
                  f"max {max(durations):.3f} s")
            edges = [0.25, 0.5, 1, 2, 5, 10, 30]
            buckets = Counter(next((f"< {e:g} s" for e in edges if d < e), f">= {edges[-1]:g} s") for d in durations)
            print("  distribution: " + ", ".join(f"{label} {buckets[label]}" for label in
                                                [*(f"< {e:g} s" for e in edges), f">= {edges[-1]:g} s"]
                                                if buckets[label]))
        totals: dict[str, Counter[str]] = {}
        for run in runs:
            for provider, summary in (run.summary.get("providers") or {}).items():
                counts = totals.setdefault(provider, Counter())
                counts.update({k: v for k, v in summary.items() if isinstance(v, int) and v})
                if summary.get("status") not in (None, "ok"):
                    counts[f"status {summary.get('status')}"] += 1
        for provider, counts in sorted(totals.items()):
            print(f"  {provider}, summed over the runs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    def print_change_log(self) -> None:
        book = self.soak.book
        assert book is not None
        days = self.soak.args.retention_days
        cutoff = now() - timedelta(days=days)
        total = book.change_log_rows()
        conn = book.conn
        older = conn.execute("SELECT count(*) FROM change_log WHERE at < ?",
                             (cutoff.replace(tzinfo=None).isoformat(sep=" "),)).fetchone()[0]
        oldest = _parse_time(conn.execute("SELECT min(at) FROM change_log").fetchone()[0]) or now()
        statuses = dict(conn.execute("SELECT status, count(*) FROM change_log GROUP BY status ORDER BY status"))
        logged_runs = conn.execute("SELECT count(DISTINCT run_id) FROM change_log").fetchone()[0]
        runs = book.finished_runs()
        added = total - self.soak.warm_change_log
        per_day = added / max(self.soak_seconds, 1) * 86400
        print(f"\n== change_log: {total} rows ({statuses}); {self.soak.warm_change_log} after warm-up, "
              f"{added} added during the soak and quiet period")
        print(f"  retention sync.log_retention_days = {days}: rows older than {cutoff:%Y-%m-%d %H:%M} UTC are pruned "
              f"(the daemon prunes at its first run, then at most once a day); oldest row "
              f"{oldest:%Y-%m-%d %H:%M:%S} UTC, so {older} would be pruned and retention keeps all {total - older}")
        edits = len(self.soak.editor.ledger) if self.soak.editor else 0
        print(f"  at this soak's edit rate ({added / max(self.soak_seconds / 60, 1e-9):.0f} rows/min, "
              f"{added / max(edits, 1):.1f} rows per edit, about {per_day:,.0f}/day) a {days}-day retention would "
              f"hold about {per_day * (days + 1):,.0f} rows at steady state (retention + up to a day between prunes)")
        print(f"  runs that logged at least one row: {logged_runs} of {runs} "
              f"(a run with nothing to change should log nothing)")

    def print_edits(self) -> None:
        editor = self.soak.editor
        assert editor is not None
        ledger = editor.ledger
        kinds = Counter(f"{e.origin} {e.kind}" for e in ledger)
        print(f"\n== edits: {len(ledger)} in {editor.rounds} rounds, last at "
              f"{editor.last_edit_at:%H:%M:%S} UTC" if ledger else "\n== edits: none made")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        if editor.refused:
            print(f"  {len(editor.refused)} edits could not be made by the driver (not counted): "
                  + "; ".join(editor.refused[:5]))
        if self.quiet_run is None:
            print("  (checked without a completed quiet-period run)")
        self._print_check("checked after the quiet period", self.check)
        if self.later is not None:
            self._print_check("checked again 3 runs later", self.later)

    def _print_check(self, title: str, check: Check) -> None:
        total = check.arrived + len(check.missing)
        by_side = Counter(side for _, sides in check.missing for side in sides)
        print(f"  {title}: {check.arrived} of {total} arrived everywhere, {len(check.missing)} missing"
              + (f" (by side: {dict(sorted(by_side.items()))})" if by_side else ""))
        by_kind = Counter(f"{e.origin} {e.kind}" for e, _ in check.missing)
        if by_kind:
            print("    missing by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
        for edit, found in check.missing[:10]:
            shown = "; ".join(f"{side}: {text}" for side, text in found.items())
            print(f"    {edit.describe()} (at {edit.at:%H:%M:%S.%f}) -- {shown}")

    def print_books(self) -> None:
        print(f"\n== the three books at the end: book {len(self.views['book'])}, SendHub {len(self.views['sendhub'])}, "
              f"smsend {len(self.views['smsend'])} contacts; numbers held twice at smsend: {self.soak.smsend_repeats}")
        for pair, diffs in compare_books(self.views).items():
            print(f"  {pair}: {len(diffs)} contacts differ (after warm-up: {len(self.soak.warm_diffs.get(pair, []))})"
                  + "".join(f"\n    {d}" for d in diffs[:5]))

    def print_daemon_log(self) -> None:
        daemon = self.soak.daemon
        assert daemon is not None
        events: Counter[str] = Counter()
        other = skipped = 0
        for line in daemon.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                other += 1
                continue
            level = str(entry.get("level", "?"))
            if level not in ("info", "debug"):
                events[f"{level} {entry.get('event')}"] += 1
            skipped += entry.get("event") == "run.tick_skipped"
        print(f"\n== daemon log ({daemon.log_path.name}): warnings and errors: "
              + (", ".join(f"{k} x{v}" for k, v in events.most_common(12)) or "none")
              + (f"; {other} lines not JSON" if other else ""))
        print(f"  ticks skipped because the previous run outlasted the 1 s interval (run.tick_skipped): {skipped}")

    def print_goals(self) -> bool:
        start = next(s for s in self.soak.samples if s.label == "start")
        end = next(s for s in self.soak.samples if s.label == "end")
        growth = (end.rss_kb[1] - start.rss_kb[1]) / start.rss_kb[1]
        goals = [
            (f"RSS growth after warm-up under 10 %: {fmt_mb(start.rss_kb[1])} -> {fmt_mb(end.rss_kb[1])} "
             f"({growth:+.1%})", growth < 0.10),
            (f"open fds constant: idle {start.fds[0]} at the start, {end.fds[0]} at the end "
             f"(during runs up to {start.fds[1]} and {end.fds[1]})", end.fds[0] <= start.fds[0]),
            (f"threads constant: idle {start.threads[0]} at the start, {end.threads[0]} at the end "
             f"(during runs up to {start.threads[1]} and {end.threads[1]})", end.threads[0] <= start.threads[0]),
            (f"every edit synced: {self.check.arrived} of {self.check.arrived + len(self.check.missing)} "
             f"arrived on every side by the first ok run after the last edit",
             not self.check.missing and self.quiet_run is not None and bool(self.soak.editor and
                                                                            self.soak.editor.ledger)),
        ]
        print("\n== goals")
        for text, ok in goals:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")
        return all(ok for _, ok in goals)


# -- entry point ----------------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="soak length after warm-up (default 10)")
    parser.add_argument("--contacts", type=int, default=10_000, help="contacts seeded at SendHub (default 10000)")
    parser.add_argument("--groups", type=int, default=20, help="groups seeded at SendHub (default 20)")
    parser.add_argument("--edit-every", type=int, default=3, metavar="RUNS",
                        help="a round of edits every RUNS finished runs (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="simulator data and edit choices (default 1)")
    parser.add_argument("--retention-days", type=int, default=90, help="sync.log_retention_days (default 90)")
    parser.add_argument("--quiet-timeout", type=float, default=300,
                        help="seconds to wait for the quiet-period run (default 300)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (book, config, daemon log)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.contacts < 1 or args.edit_every < 1 or args.retention_days < 1:
        parser.error("--minutes, --contacts, --edit-every and --retention-days must be positive")
    return args


def main() -> int:
    if not Path("/proc/self/status").exists():
        print("bench/soak.py reads /proc: Linux only", file=sys.stderr)
        return 2
    args = parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            print(f"--keep {args.keep}: not empty", file=sys.stderr)
            return 2
    # Ctrl-C and SIGTERM both unwind to soak.close() (explicitly: a shell's background job starts with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    with ExitStack() as stack:
        workdir = args.keep.resolve() if args.keep else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="syncd-soak-")))
        print(f"soak: {args.contacts} contacts in {args.groups} groups at SendHub, empty smsend and book; "
              f"{args.minutes:g} min; python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
        soak = Soak(args, workdir)
        passed = False
        try:
            passed = soak.run()
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the daemon and the simulators", flush=True)
            return 130
        except SoakError as exc:
            print(f"\nsoak stopped: {exc}", flush=True)
            return 1
        finally:
            soak.close()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
