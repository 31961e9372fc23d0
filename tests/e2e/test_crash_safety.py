"""Scenario 7 of issue 5: `syncd sync` killed with SIGKILL at many random instants, then a clean run.

The simulators run in this process (they must outlive the killed runs), with
some latency so that a push takes a while. 500 contacts (100 of them in one
group) are inserted into the canonical book with plain SQL; then runs of the
real CLI (``syncd --config … sync``, forked warm by :mod:`tests.e2e.crash_child`)
are killed again and again: most right after a random one of their write
requests reached a simulator (mid-push), the others a random time after they
started. A clean ``python -m syncd … sync`` must then finish the work: every
contact exactly once at each provider and linked once, the canonical book
untouched, nothing left ``pending``, and ``syncd plan --detailed-exitcode``
with nothing to do. The figures of each killed run are printed (``-s``).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
import pytest
from sqlalchemy import Engine, text

from syncd.db.engine import make_engine
from syncd.simulators import Faults, SimulatorServer, start_simulator

pytestmark = pytest.mark.slow

CONTACTS = 500
MEMBERS = 100  # the first MEMBERS contacts belong to one group
GROUP = "Crash test"
KILLS = 20  # SIGKILLs delivered to a live run, as the issue asks
SEED = 7
LATENCY = (0.005, 0.010)  # seconds per simulator response: a push takes long enough to be hit
MAX_WRITES = 40  # a mid-push kill follows one of the run's first MAX_WRITES write requests...
JITTER = 0.03  # ...by up to this many seconds (a few responses' worth)
START_WINDOW = 1.5  # an early kill lands up to this long after the run started
EARLY_SHARE = 0.25  # the fraction of kills timed from the start rather than from a write


def phone(i: int) -> str:
    return f"+1650253{i:04d}"


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

    def scalar(self, statement: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text(statement)).scalar_one()

    def writes(self) -> int:
        """Write requests the simulators have seen so far."""
        return sum(n for server in (self.smsend, self.sendhub)
                   for endpoint, n in server.request_counts().items() if not endpoint.startswith("GET"))


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
batch_size = 20
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


def seed_book(world: CrashWorld) -> None:
    """500 new contacts, 100 of them in one group, written with plain SQL."""
    rows = [{"phone": phone(i), "name": f"Crash{i}", "surname": "Test"} for i in range(CONTACTS)]
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(r["phone"])) for r in rows)
    with world.engine.begin() as conn:
        conn.execute(text("INSERT INTO contacts (phone, name, surname) VALUES (:phone, :name, :surname)"), rows)
        conn.execute(text("INSERT INTO groups (name) VALUES (:name)"), {"name": GROUP})
        conn.execute(text("INSERT INTO group_members (group_id, contact_id) "
                          "SELECT g.id, c.id FROM groups g, contacts c WHERE c.phone <= :last"),
                     {"last": phone(MEMBERS - 1)})


@dataclass(frozen=True)
class Kill:
    """One run and the SIGKILL aimed at it, with what the run left behind."""

    aim: str  # "+0.734s" after the start, or "write 17 +0.012s": after the run's 17th write request
    killed: bool  # False: the run had already exited
    lived: float  # seconds from the start to the kill
    writes: int  # write requests the run sent before it died
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


def kill_one_run(world: CrashWorld, server: ForkServer, rng: random.Random, log: Path) -> Kill:
    """Start `syncd sync`, SIGKILL it at a random instant, and measure what it left behind.

    Most kills are aimed at the push: right after a random one of the run's
    write requests reached a simulator, plus a jitter shorter than a response,
    so that they land anywhere between "pending" and "settled" whatever the
    machine's speed. The others land a random time after the start (config,
    pull, settling the previous run's leftovers, planning).
    """
    writes_before = world.writes()
    if rng.random() < EARLY_SHARE:
        nth, delay = 0, rng.uniform(0.0, START_WINDOW)
        aim = f"+{delay:.3f}s"
    else:
        nth, delay = rng.randint(1, MAX_WRITES), rng.uniform(0.0, JITTER)
        aim = f"write {nth} +{delay:.3f}s"
    server.ask(op="run", argv=["--config", str(world.config), "sync"], log=str(log))
    started = time.monotonic()
    while world.writes() - writes_before < nth and server.running():
        time.sleep(0.001)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and server.running():
        time.sleep(0.001)
    killed = server.ask(op="kill")["status"] == -signal.SIGKILL
    lived = time.monotonic() - started
    at_sendhub = len(world.sendhub.state.snapshot()["contacts"])
    linked = world.scalar("SELECT count(*) FROM links WHERE provider = 'sendhub' AND entity = 'contact'")
    return Kill(aim, killed, round(lived, 3), world.writes() - writes_before,
                world.scalar("SELECT count(*) FROM change_log WHERE status = 'pending'"),
                at_sendhub - linked, at_sendhub, len(world.smsend.state.snapshot()["contacts"]))


def kill_runs(world: CrashWorld, log: Path) -> list[Kill]:
    """Start and kill runs until KILLS SIGKILLs have hit a live run."""
    rng = random.Random(SEED)
    kills: list[Kill] = []
    server = ForkServer()
    try:
        while sum(k.killed for k in kills) < KILLS and len(kills) < 2 * KILLS:
            kills.append(kill_one_run(world, server, rng, log))
    finally:
        server.close()
    return kills


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(crash_world: CrashWorld, tmp_path: Path):
    world = crash_world
    log = tmp_path / "runs.log"
    assert world.run("db", "upgrade", log=log) == 0
    seed_book(world)

    kills = kill_runs(world, log)
    landed = [k for k in kills if k.killed]
    # A run writes to a provider only after its pull and inbound phase (where the orphans of
    # the previous run get linked), so what a mid-push kill leaves behind is its own doing.
    mid_push = [k for k in landed if k.writes > 0]
    figures = {"kills": len(landed), "runs": len(kills), "mid_push": len(mid_push),
               "left_pending": sum(k.pending > 0 for k in mid_push),
               "left_unlinked_creates": sum(k.orphans > 0 for k in mid_push),
               "at_sendhub_before_clean_run": kills[-1].sendhub, "at_smsend_before_clean_run": kills[-1].smsend}
    print("\ncrash runs:", figures)
    for k in kills:
        print(f"  {k.aim:20} killed={k.killed!s:5} after {k.lived:.3f}s: writes={k.writes} pending={k.pending} "
              f"unlinked={k.orphans} sendhub={k.sendhub} smsend={k.smsend}")
    assert len(landed) >= 20 and len({k.aim for k in landed}) == len(landed)
    # The kills did hit the dangerous windows: between "pending" and "settled", and after a
    # SendHub create was applied but before its link was recorded.
    assert figures["left_pending"] >= 8 and figures["left_unlinked_creates"] >= 5, figures

    assert world.run("sync", log=log) == 0, log.read_text()[-4000:]
    assert_converged(world)
    assert world.run("plan", "--detailed-exitcode", log=log) == 0, log.read_text()[-4000:]


def assert_converged(world: CrashWorld) -> None:
    """The book holds the 500 contacts; each provider has each of them (and the group) exactly once, linked once."""
    numbers = {phone(i) for i in range(CONTACTS)}
    members = {phone(i) for i in range(MEMBERS)}
    assert {r for r, in _rows(world, "SELECT phone FROM contacts")} == numbers
    assert world.scalar("SELECT count(*) FROM contacts") == CONTACTS
    assert world.scalar("SELECT count(*) FROM change_log WHERE status = 'pending'") == 0

    sendhub = world.sendhub.state.snapshot()
    assert Counter(c["number"] for c in sendhub["contacts"]) == Counter(numbers)
    [sh_group] = [g for g in sendhub["groups"] if g["name"] == GROUP]
    by_id = {c["id"]: c["number"] for c in sendhub["contacts"]}
    assert sorted(by_id[cid] for gid, cid in sendhub["memberships"] if gid == sh_group["id"]) == sorted(members)
    assert len(sendhub["groups"]) == 1

    for number in numbers:
        assert len(world.smsend.state.contacts_by_phone(number)) == 1, number
    smsend = world.smsend.state.snapshot()
    assert len(smsend["contacts"]) == CONTACTS
    [sm_group] = smsend["groups"]
    assert sm_group["name"] == GROUP
    assert sorted(c["phoneNumber"] for c in smsend["contacts"] if sm_group["id"] in c["groupIds"]) == sorted(members)

    for provider, remote_ids in (("sendhub", set(by_id)), ("smsend", numbers)):
        links = _rows(world, f"SELECT canonical_id, remote_id FROM links WHERE provider = '{provider}' "
                             "AND entity = 'contact'")
        assert len(links) == CONTACTS and len({c for c, _ in links}) == CONTACTS
        assert {r for _, r in links} == remote_ids  # every canonical contact linked to exactly one remote contact


def _rows(world: CrashWorld, statement: str) -> list[tuple]:
    with world.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(statement))]
