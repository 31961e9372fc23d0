"""Scenario 7 of issue 5: `syncd sync` killed with SIGKILL at many points of its push, then a clean run.

Every kill lands at a point chosen in advance, whatever the machine's speed
(issue 10): the simulators run in this process (they must outlive the killed
runs), and before each run a :class:`~syncd.simulators.faults.RequestGate` is
armed at one of them, aimed at the n-th request of one endpoint (a SendHub
create, update, delete or membership change; an smsend upsert, or the
temporary group of an smsend deletion) and holding it *before* it is applied,
*after* it is applied with its answer withheld, or once it is *answered*
(every later request at that simulator held). The run, a real
``syncd --config … sync`` forked warm by :mod:`tests.e2e.crash_child`, is
killed as soon as the gate says the point is reached; nothing waits on a clock.

So that every run has work at each aimed endpoint, every round first changes
the canonical book with plain SQL: new contacts, edited names, deleted
contacts and membership moves, the last three among contacts a clean run
synced before the kills began (linked at both providers, so each edit is
certainly an update there). The first round also carries the scenario's big
push: 500 new contacts, 100 of them in a group. How many requests each
endpoint gets at least follows from that work alone, and aims stay within it.
Two rounds are killed during the pull instead.

A clean ``python -m syncd … sync`` must then finish the work: the canonical
book exactly as the rounds left it, every contact exactly once at each
provider with its name and memberships, the deleted ones gone, every contact
linked once, nothing left ``pending``, ``syncd plan --detailed-exitcode`` with
nothing to do, and no traceback from the simulators. The figures of each
killed run are printed (``-s``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
import pytest
from sqlalchemy import Engine, text

from syncd.db.engine import make_engine
from syncd.simulators import Faults, SimulatorServer, start_simulator
from syncd.simulators.faults import RequestGate

pytestmark = pytest.mark.slow

SETTLED = 250  # contacts synced by a clean run before the kills: the edits, deletes and moves are made among them
BIG_PUSH = 500  # new contacts of the first round...
BIG_PUSH_MEMBERS = 100  # ...the first of them in group A
NEW, EDITS, DELETES = 8, 3, 2  # per round: new contacts, edited names, deleted contacts (and one move each way)
GROUPS = ("Crash A", "Crash B")
SEED = 7
LATENCY = (0.0, 0.002)  # seconds per simulator response: only to vary how concurrent requests interleave
SMSEND_BATCH = 20  # the config's smsend batch_size: contacts per upsert request
WAIT = 120.0  # seconds: the most a run may take to reach its gate (a bound, not a guess at a speed)

# The endpoints aimed at, as the simulators' request counts name them.
CREATE, UPDATE, DELETE = "POST /v1/contacts", "PUT /v1/contacts/{id}", "DELETE /v1/contacts/{id}"
MEMBERS, SH_PULL = "POST /v1/groups/{id}/contacts", "GET /v1/contacts"
UPSERT, TEMP_GROUP = "POST /API/v1.0/REST/contact", "POST /API/v1.0/REST/group"
TEMP_GROUP_DELETE, SM_PULL = "DELETE /API/v1.0/REST/group/{id}", "GET /API/v1.0/REST/groups"
# The last write of their simulator in a round: an "answered" aim there could see the run end before the kill.
LAST_WRITES = {("sendhub", DELETE), ("smsend", TEMP_GROUP_DELETE)}

# One aim per round: (simulator, endpoint, phase); the n-th request is drawn within what the round guarantees.
SCHEDULE: list[tuple[str, str, str]] = [
    ("sendhub", CREATE, "applied"), ("smsend", UPSERT, "before"), ("sendhub", CREATE, "before"),
    ("sendhub", UPDATE, "applied"), ("smsend", TEMP_GROUP, "applied"), ("sendhub", CREATE, "answered"),
    ("sendhub", DELETE, "before"), ("sendhub", SH_PULL, "before"), ("smsend", UPSERT, "applied"),
    ("sendhub", MEMBERS, "before"), ("sendhub", CREATE, "applied"), ("smsend", TEMP_GROUP_DELETE, "applied"),
    ("sendhub", UPDATE, "answered"), ("sendhub", CREATE, "applied"), ("smsend", UPSERT, "answered"),
    ("sendhub", DELETE, "applied"), ("sendhub", MEMBERS, "applied"), ("smsend", SM_PULL, "before"),
    ("sendhub", CREATE, "applied"), ("smsend", TEMP_GROUP, "before"), ("sendhub", UPDATE, "before"),
    ("sendhub", CREATE, "answered"), ("smsend", TEMP_GROUP_DELETE, "before"), ("sendhub", MEMBERS, "answered"),
    ("sendhub", CREATE, "applied"), ("sendhub", DELETE, "answered"),
]
PULLS = {SH_PULL, SM_PULL}


def phone(i: int) -> str:
    return f"+1650253{i:04d}"


@dataclass
class Person:
    """What the book should say of one contact (by phone)."""

    name: str
    groups: set[str]


@dataclass
class Book:
    """The canonical book as the rounds leave it, and the settled contacts not touched yet."""

    people: dict[str, Person] = field(default_factory=dict)
    untouched: list[str] = field(default_factory=list)  # settled, never edited, deleted or moved
    next_number: int = 0

    def add(self, count: int, groups_of: dict[int, str]) -> list[str]:
        """``count`` new people with fresh numbers; ``groups_of`` maps an index among them to a group."""
        added = []
        for k in range(count):
            i, self.next_number = self.next_number, self.next_number + 1
            self.people[phone(i)] = Person(f"Crash{i}", {groups_of[k]} if k in groups_of else set())
            added.append(phone(i))
        return added

    def take(self, rng: random.Random, *, group: str | None = None, ungrouped: bool = False) -> str:
        """An untouched settled contact (in ``group``, or in no group), no longer untouched."""
        candidates = [p for p in self.untouched if (group in self.people[p].groups if group
                                                    else not ungrouped or not self.people[p].groups)]
        chosen = rng.choice(candidates)
        self.untouched.remove(chosen)
        return chosen


@dataclass(frozen=True)
class Work:
    """What one round changed in the book."""

    created: list[str]
    edited: list[str]
    deleted: list[str]
    moved: list[tuple[str, str, str]]  # (phone, from group, to group)

    def least_requests(self, simulator: str, endpoint: str) -> int:
        """The fewest requests to ``endpoint`` this work makes a run send, whatever earlier rounds left.

        Each SendHub contact write is one request; a membership move changes two
        groups; smsend upserts SMSEND_BATCH contacts per request, and deletes
        through a temporary group (create it, upsert into it, delete it).
        """
        creates = math.ceil(len(self.created) / SMSEND_BATCH)
        return {
            ("sendhub", CREATE): len(self.created), ("sendhub", UPDATE): len(self.edited),
            ("sendhub", DELETE): len(self.deleted), ("sendhub", MEMBERS): 2 if self.moved else 0,
            ("sendhub", SH_PULL): 1, ("smsend", SM_PULL): 1,
            ("smsend", UPSERT): creates + (1 if self.deleted else 0),
            ("smsend", TEMP_GROUP): 1 if self.deleted else 0, ("smsend", TEMP_GROUP_DELETE): 1 if self.deleted else 0,
        }[(simulator, endpoint)]


@dataclass(frozen=True)
class Aim:
    """Where a run is killed: at the ``nth`` request to ``endpoint`` of ``simulator``, in ``phase``."""

    simulator: str
    endpoint: str
    nth: int
    phase: str

    def __str__(self) -> str:
        return f"{self.simulator} {self.endpoint} #{self.nth} {self.phase}"


@dataclass
class CrashWorld:
    """Simulators in this process, a migrated database, and a config file naming both."""

    config: Path
    engine: Engine
    smsend: SimulatorServer
    sendhub: SimulatorServer

    def run(self, *args: str, log: Path) -> int:
        """``python -m syncd --config CONFIG ARGS`` to completion; its exit code (output appended to ``log``)."""
        with log.open("ab") as out:
            return subprocess.run([sys.executable, "-m", "syncd", "--config", str(self.config), *args],
                                  stdout=out, stderr=out, cwd=self.config.parent, timeout=300).returncode

    def simulator(self, kind: str) -> SimulatorServer:
        return self.sendhub if kind == "sendhub" else self.smsend

    def scalar(self, statement: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text(statement)).scalar_one()

    def sql(self, statement: str, rows: list[dict[str, object]] | dict[str, object] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement), rows or {})

    def writes(self) -> int:
        """Write requests the simulators have seen so far, answered or left by a vanished client."""
        return sum(n for server in (self.smsend, self.sendhub)
                   for counts in (server.request_counts(), server.vanished_counts())
                   for endpoint, n in counts.items() if not endpoint.startswith("GET"))

    def quiet(self) -> bool:
        """No request being handled at either simulator."""
        return self.smsend.in_flight == 0 and self.sendhub.in_flight == 0


def write_config(path: Path, db_url: str, smsend: SimulatorServer, sendhub: SimulatorServer) -> Path:
    """A config.toml for both simulators: fast limits, short timeouts, several smsend batches."""
    sm, sh = smsend.credentials, sendhub.credentials
    q = json.dumps  # a JSON string is a valid TOML basic string
    path.write_text(f"""
[database]
url = {q(db_url)}

[sync]
default_region = "US"

[logging]
level = "info"
format = "json"

[[providers]]
name = "smsend"
type = "smsend"
base_url = {q(smsend.base_url)}
user_key = {q(sm["user_key"])}
access_token = {q(sm["access_token"])}
requests_per_second = 1000
max_concurrency = 2
batch_size = {SMSEND_BATCH}
timeout_seconds = 5

[[providers]]
name = "sendhub"
type = "sendhub"
base_url = {q(sendhub.base_url)}
username = {q(sh["username"])}
api_key = {q(sh["api_key"])}
requests_per_second = 1000
max_concurrency = 2
batch_size = 50
timeout_seconds = 5
""")
    return path


@pytest.fixture
def crash_world(db_url: str, tmp_path: Path) -> Iterator[CrashWorld]:
    faults = {kind: Faults(latency=LATENCY, seed=SEED) for kind in ("smsend", "sendhub")}
    with start_simulator("smsend", faults=faults["smsend"]) as smsend, \
            start_simulator("sendhub", faults=faults["sendhub"]) as sendhub:
        config = write_config(tmp_path / "config.toml", db_url, smsend, sendhub)
        world = CrashWorld(config, make_engine(db_url), smsend, sendhub)
        try:
            yield world
        finally:
            world.engine.dispose()


# -- changing the book ------------------------------------------------------------------------------


def insert_people(world: CrashWorld, book: Book, phones: list[str]) -> None:
    """Write ``phones`` (already in ``book``) into the canonical book, with their memberships."""
    rows = [{"phone": p, "name": book.people[p].name, "surname": "Test"} for p in phones]
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(r["phone"])) for r in rows)
    world.sql("INSERT INTO contacts (phone, name, surname) VALUES (:phone, :name, :surname)", rows)
    members = [{"phone": p, "group": g} for p in phones for g in sorted(book.people[p].groups)]
    if members:
        world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c "
                  "WHERE g.name = :group AND c.phone = :phone", members)


def seed_settled(world: CrashWorld, book: Book) -> None:
    """The groups, and SETTLED contacts (the first 40 % in group A, the next 30 % in B) for the clean run."""
    world.sql("INSERT INTO groups (name) VALUES (:name)", [{"name": g} for g in GROUPS])
    in_a, in_b = SETTLED * 4 // 10, SETTLED * 3 // 10
    groups_of = {k: GROUPS[0] for k in range(in_a)} | {k: GROUPS[1] for k in range(in_a, in_a + in_b)}
    settled = book.add(SETTLED, groups_of)
    insert_people(world, book, settled)
    book.untouched = settled


def change_book(world: CrashWorld, book: Book, rng: random.Random, *, extra_new: int = 0) -> Work:
    """One round of changes: new contacts (``extra_new`` more of them, the first in group A), edited names,
    deleted contacts, and a move each way between the groups, among untouched settled contacts."""
    a, b = GROUPS
    bulk = {k: a for k in range(BIG_PUSH_MEMBERS)} if extra_new else {}
    fresh = {extra_new + k: (a, b, None)[k % 3] for k in range(NEW)}
    created = book.add(extra_new + NEW, bulk | {k: g for k, g in fresh.items() if g})
    insert_people(world, book, created)

    edited = [book.take(rng) for _ in range(EDITS)]
    for p in edited:
        book.people[p].name = f"Edited{p[-4:]}"
    world.sql("UPDATE contacts SET name = :name WHERE phone = :phone",
              [{"name": book.people[p].name, "phone": p} for p in edited])

    deleted = [book.take(rng, ungrouped=True) for _ in range(DELETES)]
    world.sql("DELETE FROM contacts WHERE phone = :phone", [{"phone": p} for p in deleted])
    for p in deleted:
        del book.people[p]

    moved = [(book.take(rng, group=a), a, b), (book.take(rng, group=b), b, a)]
    for p, old, new in moved:
        book.people[p].groups = {new}
    world.sql("DELETE FROM group_members WHERE contact_id = (SELECT id FROM contacts WHERE phone = :phone) "
              "AND group_id = (SELECT id FROM groups WHERE name = :old)",
              [{"phone": p, "old": old} for p, old, _ in moved])
    world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c "
              "WHERE g.name = :new AND c.phone = :phone", [{"phone": p, "new": new} for p, _, new in moved])
    return Work(created, edited, deleted, moved)


# -- killing runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """One run and the SIGKILL aimed at it, with what the run left behind."""

    aim: Aim
    reached: bool  # the gate held the aimed request (False: the run ended first)
    killed: bool  # False: the run had already exited
    lived: float  # seconds from the start to the kill
    writes: int  # write requests the run sent before it died (held ones included)
    pending: int  # change_log rows left pending
    orphans: int  # contacts at SendHub with no link: created, the outcome never recorded
    sendhub: int  # contacts at each provider after the kill
    smsend: int


class ForkServer:
    """The parent side of :mod:`tests.e2e.crash_child`: warm `syncd` runs, killed on request."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen([sys.executable, "-m", "tests.e2e.crash_child"], cwd=root,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, **request: object) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        line = self.process.stdout.readline()
        assert line, f"the fork server died (exit {self.process.wait(timeout=10)})"
        answer = json.loads(line)
        assert "error" not in answer, answer["error"]
        return answer

    def running(self) -> bool:
        return self.ask(op="poll")["running"]

    def close(self) -> None:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


def wait_until(condition: Callable[[], bool], what: str, step: float = 0.001) -> None:
    """Poll ``condition`` (a cheap check) every ``step`` seconds until true; fail after WAIT seconds naming ``what``."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(step)


def wait_for_gate(gate: RequestGate, server: ForkServer) -> bool:
    """Wait until ``gate`` holds its aimed request (True) or the run has exited (False)."""
    deadline = time.monotonic() + WAIT
    while not gate.reached.wait(0.002):
        if not server.running():
            return gate.reached.is_set()
        assert time.monotonic() < deadline, f"the run reached no gate in {WAIT:.0f}s"
    return True


def kill_at(world: CrashWorld, server: ForkServer, aim: Aim, log: Path) -> Kill:
    """Start `syncd sync`, SIGKILL it once its simulator holds the aimed request, and measure what it left.

    The kill waits for the held requests to be dropped (their client is gone)
    and for both simulators to be quiet, so that the next run meets a provider
    at rest and the figures are final.
    """
    gate = world.simulator(aim.simulator).hold(aim.nth, phase=aim.phase, endpoint=aim.endpoint)
    writes_before = world.writes()
    server.ask(op="run", argv=["--config", str(world.config), "sync"], log=str(log))
    started = time.monotonic()
    reached = wait_for_gate(gate, server)
    killed = server.ask(op="kill")["status"] == -signal.SIGKILL
    lived = time.monotonic() - started
    wait_until(world.quiet, "the simulators dropped the killed run's requests")
    gate.release()
    sendhub_ids = {c["id"] for c in world.sendhub.state.snapshot()["contacts"]}
    linked = {r for _, r in _rows(world, "SELECT canonical_id, remote_id FROM links "
                                         "WHERE provider = 'sendhub' AND entity = 'contact'")}
    return Kill(aim, reached, killed, round(lived, 3), world.writes() - writes_before,
                world.scalar("SELECT count(*) FROM change_log WHERE status = 'pending'"),
                len(sendhub_ids - linked), len(sendhub_ids), len(world.smsend.state.snapshot()["contacts"]))


def choose_aim(kind: tuple[str, str, str], work: Work, used: set[Aim], rng: random.Random) -> Aim:
    """An aim of this round's ``kind`` not used before, at a request the round's work is sure to send."""
    simulator, endpoint, phase = kind
    most = work.least_requests(simulator, endpoint)
    if phase == "answered" and (simulator, endpoint) in LAST_WRITES:
        most -= 1  # a later write must exist for the gate to hold
    free = [n for n in range(1, most + 1) if Aim(simulator, endpoint, n, phase) not in used]
    assert free, f"no unused aim left for {kind} (the round guarantees {most} requests)"
    return Aim(simulator, endpoint, rng.choice(free), phase)


def settle_first(world: CrashWorld, server: ForkServer, log: Path) -> None:
    """The clean run that syncs the settled contacts before any kill."""
    server.ask(op="run", argv=["--config", str(world.config), "sync"], log=str(log))
    wait_until(lambda: not server.running(), "the settling run ended", step=0.01)
    assert server.ask(op="kill")["status"] == 0, log.read_text()[-4000:]


def kill_rounds(world: CrashWorld, book: Book, log: Path) -> list[Kill]:
    """Settle SETTLED contacts, then one round per SCHEDULE entry: change the book, aim, run, kill."""
    rng = random.Random(SEED)
    kills: list[Kill] = []
    server = ForkServer()
    try:
        settle_first(world, server, log)
        for round_no, kind in enumerate(SCHEDULE):
            work = change_book(world, book, rng, extra_new=BIG_PUSH if round_no == 0 else 0)
            aim = choose_aim(kind, work, {k.aim for k in kills}, rng)
            kills.append(kill_at(world, server, aim, log))
    finally:
        server.close()
    return kills


def report(kills: list[Kill], mid_push: list[Kill]) -> dict[str, int]:
    """The figures of the killed runs (printed, and asserted on by the test)."""
    figures = {"kills": sum(k.killed for k in kills), "runs": len(kills), "mid_push": len(mid_push),
               "left_pending": sum(k.pending > 0 for k in mid_push),
               "left_unlinked_creates": sum(k.orphans > 0 for k in mid_push),
               "at_sendhub_before_clean_run": kills[-1].sendhub, "at_smsend_before_clean_run": kills[-1].smsend}
    print("\ncrash runs:", figures)
    for k in kills:
        print(f"  {k.aim!s:50} killed={k.killed!s:5} after {k.lived:.3f}s: writes={k.writes} pending={k.pending} "
              f"unlinked={k.orphans} sendhub={k.sendhub} smsend={k.smsend}")
    return figures


def test_sigkill_at_chosen_points_loses_nothing_and_duplicates_nothing(
    crash_world: CrashWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = crash_world
    log = tmp_path / "runs.log"
    assert world.run("db", "upgrade", log=log) == 0
    book = Book()
    seed_settled(world, book)

    started = time.monotonic()
    kills = kill_rounds(world, book, log)
    mid_push = [k for k in kills if k.killed and k.writes > 0]
    figures = report(kills, mid_push)
    print(f"  {len(kills)} rounds in {time.monotonic() - started:.1f}s")
    missed = [str(k.aim) for k in kills if not (k.reached and k.killed)]
    assert not missed, (missed, log.read_text()[-4000:])
    assert len({k.aim for k in kills}) == len(kills)
    assert len(mid_push) >= 20 and all(k.writes == 0 for k in kills if k.aim.endpoint in PULLS)
    # The kills did hit the dangerous windows: between "pending" and "settled", and after a
    # SendHub create was applied but before its link was recorded.
    assert figures["left_pending"] >= 15 and figures["left_unlinked_creates"] >= 5, figures

    assert world.run("sync", log=log) == 0, log.read_text()[-4000:]
    assert_converged(world, book)
    assert world.run("plan", "--detailed-exitcode", log=log) == 0, log.read_text()[-4000:]
    # A killed client is normal traffic for the simulators: nothing for a user to read as a bug.
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def assert_converged(world: CrashWorld, book: Book) -> None:
    """The book is what the rounds made it; each provider has each contact (with its name and groups) and each
    group exactly once, nothing else, and every contact is linked once at each provider."""
    expected = book.people
    members = {g: sorted(p for p, person in expected.items() if g in person.groups) for g in GROUPS}
    assert dict(_rows(world, "SELECT phone, name FROM contacts")) == {p: c.name for p, c in expected.items()}
    assert world.scalar("SELECT count(*) FROM contacts") == len(expected)
    canonical_members = _rows(world, "SELECT g.name, c.phone FROM group_members m JOIN groups g ON g.id = m.group_id "
                                     "JOIN contacts c ON c.id = m.contact_id")
    assert {g: sorted(p for name, p in canonical_members if name == g) for g in GROUPS} == members
    assert world.scalar("SELECT count(*) FROM change_log WHERE status = 'pending'") == 0

    sendhub = world.sendhub.state.snapshot()
    assert Counter(c["number"] for c in sendhub["contacts"]) == Counter(list(expected))
    assert {c["number"]: c["name"] for c in sendhub["contacts"]} == {p: f"{c.name} Test" for p, c in expected.items()}
    sh_groups = {g["name"]: g["id"] for g in sendhub["groups"]}
    assert sorted(sh_groups) == sorted(GROUPS) and len(sendhub["groups"]) == len(GROUPS)
    by_id = {c["id"]: c["number"] for c in sendhub["contacts"]}
    for name, gid in sh_groups.items():
        assert sorted(by_id[cid] for g, cid in sendhub["memberships"] if g == gid) == members[name], name

    smsend = world.smsend.state.snapshot()
    assert Counter(c["phoneNumber"] for c in smsend["contacts"]) == Counter(list(expected))
    assert {c["phoneNumber"]: (c["name"], c["surname"]) for c in smsend["contacts"]} == {
        p: (c.name, "Test") for p, c in expected.items()}
    sm_groups = {g["id"]: g["name"] for g in smsend["groups"]}
    assert sorted(sm_groups.values()) == sorted(GROUPS), "no temporary group of a deletion left over"
    for c in smsend["contacts"]:
        assert {sm_groups[g] for g in c["groupIds"]} == expected[c["phoneNumber"]].groups, c["phoneNumber"]

    for provider, remote_ids in (("sendhub", set(by_id)), ("smsend", set(expected))):
        links = _rows(world, f"SELECT canonical_id, remote_id FROM links WHERE provider = '{provider}' "
                             "AND entity = 'contact'")
        assert len(links) == len(expected) and len({c for c, _ in links}) == len(expected), provider
        assert {r for _, r in links} == remote_ids  # every canonical contact linked to exactly one remote contact


def _rows(world: CrashWorld, statement: str) -> list[tuple]:
    with world.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(statement))]
