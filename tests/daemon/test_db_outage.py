"""Issue 10, "The database goes away": `syncd run` through a database outage, on SQLite and PostgreSQL.

The database is taken away in the middle of a run, either while it pushes to
SendHub (requests sent, their outcomes not yet recorded) or while it pulls
SendHub into the mirror, and stays away for several more runs, during which
the canonical book and SendHub both change. The daemon must stay up,
log one error per failed run, say "database unreachable" in ``STATUS=``, keep
sending ``WATCHDOG=1``, and, once the database is back, converge: every
contact exactly once at each provider and linked once, nothing ``pending``,
no run left ``running``, and ``syncd plan`` with nothing to do.

How the database goes away (see :mod:`tests.daemon.outages`): SQLite, a write
lock the test holds; PostgreSQL, a cluster of the test's own shut down and
restarted without TCP, or, without PostgreSQL binaries, a proxy in front of
the shared server that refuses and cuts connections.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from syncd.db.engine import make_engine
from syncd.dberrors import database_outage, describe_database_error, safe_database_url
from syncd.simulators import SimulatorServer
from tests.daemon.conftest import (
    ROOT,
    DaemonProcess,
    NotifyListener,
    phone,
    provider_toml,
    seed_contacts,
    sendhub_numbers,
    wait_until,
    write_config,
)
from tests.daemon.outages import (
    Outage,
    PgProxy,
    PrivateCluster,
    SqliteLock,
    free_port,
    postgres_bindir,
    unprivileged_prefix,
)
from tests.daemon.test_run_process import scrape

BOOK = 20  # contacts synced before the outage
NEW = range(100, 140)  # contacts added just before it: the push the outage interrupts
#: Seconds per SendHub request while the outage hits, so that it hits mid-phase: a push batch of 10
#: (2 at a time) takes ~2.5 s; in a pull, the contacts page comes 2 s after the groups page.
LATENCY = {"push": 0.5, "pull": 2.0}
FAILED_RUNS = 3  # runs that fail on the database (the interrupted one included) before it comes back
SQLITE_BUSY_TIMEOUT = 0.5  # s: syncd's wait for the lock before "database is locked"
CHANGE_KEYS = ("created_in", "updated_in", "deleted_in", "created_out", "updated_out", "deleted_out",
               "failed", "rejected")


@pytest.fixture(params=["sqlite", "postgresql-cluster",
                        pytest.param("postgresql-proxy", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    kind = request.param
    if kind == "sqlite":
        made: Outage = SqliteLock(tmp_path / "syncd.db", SQLITE_BUSY_TIMEOUT)
    elif kind == "postgresql-cluster":
        bindir = postgres_bindir()
        prefix, how = unprivileged_prefix()
        if bindir is None or prefix is None:
            pytest.skip(f"no PostgreSQL cluster of the test's own: "
                        f"{'no initdb/pg_ctl found' if bindir is None else how} (postgresql-proxy covers it)")
        made = PrivateCluster(bindir, prefix)
    else:
        made = PgProxy(request.getfixturevalue("pg_url"))
    yield made
    made.close()


def quiet(event: dict[str, Any]) -> bool:
    """A finished run that changed nothing anywhere and failed nothing: the sides agree."""
    return event["status"] == "ok" and not any(p.get(k) for p in event["providers"].values() for k in CHANGE_KEYS)


def pending(outage: Outage, provider: str) -> int:
    return outage.sql("SELECT count(*) FROM change_log WHERE status = 'pending' AND provider = :p",
                      {"p": provider})[0][0]


def after(events: list[dict[str, Any]], name: str, then: str,
          where: Callable[[dict[str, Any]], bool] = lambda e: True) -> bool:
    """Whether a ``then`` event satisfying ``where`` follows the first ``name`` event in the log."""
    names = [e.get("event") for e in events]
    if name not in names:
        return False
    return any(e.get("event") == then and where(e) for e in events[names.index(name):])


def watchdogs_since(notify: NotifyListener, since: float) -> int:
    return sum(1 for at, message in list(notify.messages) if at > since and "WATCHDOG=1" in message.splitlines())


def interrupt(phase: str, outage: Outage, sendhub: SimulatorServer) -> None:
    """Give the next run work in both directions, and take the database away mid-``phase``."""
    sendhub.faults.latency = LATENCY[phase]
    groups_pages = sendhub.request_counts().get("GET /v1/groups", 0)
    state = sendhub.state
    state.edit_contact(state.find(phone(4)).id, name="Before Outage")  # for the pull: a mirror row to write
    outage.sql("INSERT INTO contacts (phone, name, surname) VALUES (:p, :n, 'New')",
               [{"p": phone(i), "n": f"New {i}"} for i in NEW])
    if phase == "push":
        wait_until(lambda: pending(outage, "sendhub"), 30, "SendHub creates in flight")
    else:  # the groups page is counted once answered: the contacts page, and its mirror write, are to come
        wait_until(lambda: sendhub.request_counts().get("GET /v1/groups", 0) > groups_pages, 30, "a pull under way")
    outage.down()
    sendhub.faults.latency = 0.0


def change_both_sides(outage: Outage, sendhub: SimulatorServer) -> None:
    """What happens elsewhere while syncd cannot reach its database: SQL on the book, edits at SendHub."""
    outage.sql("INSERT INTO contacts (phone, name, surname) VALUES (:p, 'Added', 'Inbook')", {"p": phone(900)})
    outage.sql("UPDATE contacts SET name = 'Renamed' WHERE phone = :p", {"p": phone(0)})
    outage.sql("DELETE FROM contacts WHERE phone = :p", {"p": phone(1)})
    state = sendhub.state
    state.add_contact("Added Atsendhub", phone(901))
    state.edit_contact(state.find(phone(2)).id, name="Edited Atsendhub")
    state.delete_contact(state.find(phone(3)).id)


@pytest.mark.parametrize("phase", ["push", "pull"])
def test_the_daemon_survives_a_database_outage_and_converges_after_it(
        phase: str, outage: Outage, tmp_path: Path, smsend: SimulatorServer, sendhub: SimulatorServer,
        notify: NotifyListener, start_daemon: Any) -> None:
    seed_contacts(outage.url, BOOK)
    config = write_config(tmp_path / "config.toml", outage.url,
                          [provider_toml(smsend), provider_toml(sendhub, batch_size=10, max_concurrency=2)],
                          metrics="127.0.0.1:0")
    daemon = start_daemon(config, notify=notify, watchdog_usec=1_000_000)  # WATCHDOG=1 every 0.5 s
    [listening] = daemon.wait_for("metrics.listening")
    daemon.wait_for("run.finished", timeout=30, where=quiet)

    interrupt(phase, outage, sendhub)
    went_down = time.monotonic()
    daemon.wait_for("database.unavailable", timeout=30)
    if phase == "push":
        assert pending(outage, "sendhub"), "the outage should have left the interrupted push's operations pending"
    else:
        assert not pending(outage, "sendhub"), "the outage should have hit before the push"
        [(name,)] = outage.sql("SELECT name FROM contacts WHERE phone = :p", {"p": phone(4)})
        assert name == "Person 4", "the outage should have hit before the SendHub edit reached the book"

    change_both_sides(outage, sendhub)
    daemon.wait_for("database.unavailable", count=FAILED_RUNS, timeout=30)
    wait_until(lambda: any(line.startswith("STATUS=database unreachable") for line in notify.lines()), 10,
               "STATUS= naming the database")
    wait_until(lambda: watchdogs_since(notify, went_down) >= 3, 10, "WATCHDOG=1 going on while the database is away")
    down_metrics = scrape(listening["port"])
    assert down_metrics[("syncd_database_up", ())] == 0
    assert down_metrics[("syncd_runs_total", (("status", "db_unavailable"),))] >= FAILED_RUNS

    outage.up()
    wait_until(lambda: after(daemon.events(), "database.recovered", "run.finished", quiet), 60,
               "a run with nothing left to do after the database came back")
    assert scrape(listening["port"])[("syncd_database_up", ())] == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0

    assert_one_error_per_failed_run(daemon)
    assert_status_named_the_database(notify, daemon.events("database.unavailable")[-1]["error"])
    assert_converged(outage, smsend, sendhub)
    plan = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), "plan", "--detailed-exitcode"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def assert_one_error_per_failed_run(daemon: DaemonProcess) -> None:
    events = daemon.events()
    failures = daemon.events("database.unavailable")
    assert len(failures) >= FAILED_RUNS
    assert [e for e in events if e.get("level") == "error"] == failures, "no error but one per failed run"
    assert [e["failed_runs"] for e in failures] == list(range(1, len(failures) + 1))
    for e in failures:  # the driver's exception and the first line of its message, no SQL, no SQLAlchemy link
        assert "\n" not in e["error"] and "sqlalche.me" not in e["error"], e["error"]
    tracebacks = [e for e in events if "exception" in e]
    assert tracebacks == failures[:1], "one traceback in all, the first failure's"
    [recovered] = daemon.events("database.recovered")
    assert recovered["failed_runs"] == len(failures)


def assert_status_named_the_database(notify: NotifyListener, error: str) -> None:
    """STATUS= said the database was unreachable, and why, until a run went well again."""
    statuses = [line for line in notify.lines() if line.startswith("STATUS=")]
    down = [i for i, line in enumerate(statuses) if line.startswith("STATUS=database unreachable since ")]
    ok = [i for i, line in enumerate(statuses) if line.startswith("STATUS=last run #") and " ok at " in line]
    assert down and ok and ok[-1] > down[-1], statuses
    assert " ".join(error.split())[:100] in statuses[down[-1]], statuses  # STATUS= lines are flattened


def assert_converged(outage: Outage, smsend: SimulatorServer, sendhub: SimulatorServer) -> None:
    numbers = ({phone(i) for i in range(BOOK)} | {phone(i) for i in NEW} | {phone(900), phone(901)}) \
        - {phone(1), phone(3)}
    book = {p: (name, surname) for p, name, surname in outage.sql("SELECT phone, name, surname FROM contacts")}
    assert set(book) == numbers and len(book) == len(numbers)
    assert book[phone(0)][0] == "Renamed" and book[phone(2)] == ("Edited", "Atsendhub")
    assert book[phone(901)] == ("Added", "Atsendhub") and book[phone(4)] == ("Before", "Outage")

    assert sendhub_numbers(sendhub) == Counter(numbers), "each contact exactly once at SendHub"
    at_smsend = Counter(c["phoneNumber"] for c in smsend.state.snapshot()["contacts"])
    assert at_smsend == Counter(numbers), "each contact exactly once at smsend"
    names = {c["number"]: c["name"] for c in sendhub.state.snapshot()["contacts"]}
    assert names[phone(0)] == "Renamed Test" and names[phone(900)] == "Added Inbook"
    smsend_names = {c["phoneNumber"]: c["name"] for c in smsend.state.snapshot()["contacts"]}
    assert smsend_names[phone(0)] == "Renamed" and smsend_names[phone(2)] == "Edited"
    assert smsend_names[phone(4)] == "Before"

    ids = {cid for cid, in outage.sql("SELECT id FROM contacts")}
    for provider in ("sendhub", "smsend"):
        links = outage.sql("SELECT canonical_id, remote_id FROM links WHERE provider = :p AND entity = 'contact'",
                           {"p": provider})
        assert len(links) == len(numbers), provider
        assert {cid for cid, _ in links} == ids and len({rid for _, rid in links}) == len(numbers), provider
    assert outage.sql("SELECT count(*) FROM change_log WHERE status = 'pending'")[0][0] == 0
    assert outage.sql("SELECT count(*) FROM sync_runs WHERE status = 'running'")[0][0] == 0
    [(error,)] = outage.sql("SELECT error FROM sync_runs WHERE status = 'failed'")
    assert error.startswith("interrupted"), error  # the run the outage cut short, closed once it was back


# -- the pieces ----------------------------------------------------------------------------------


def _refused_url() -> str:
    return f"postgresql+psycopg://syncd:s3cr%40t@127.0.0.1:{free_port()}/nothing"


def test_a_refused_connection_is_an_outage_said_in_one_line_without_the_password():
    url = _refused_url()
    engine = make_engine(url)
    try:
        with pytest.raises(SQLAlchemyError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    assert database_outage(caught.value) is caught.value
    described = describe_database_error(caught.value, url)
    assert described.startswith("OperationalError: connection failed: ") and "Connection refused" in described
    assert "\n" not in described and "sqlalche.me" not in described
    quoting = OperationalError("SELECT 1", {}, Exception("password s3cr@t in a message"))
    assert describe_database_error(quoting, url) == "Exception: password [redacted] in a message"
    assert safe_database_url(url).startswith("postgresql+psycopg://syncd:***@")


def test_only_database_errors_that_mean_unavailable_are_outages():
    locked = OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
    assert database_outage(locked) is locked
    wrapped = RuntimeError("while settling")
    wrapped.__cause__ = locked
    assert database_outage(wrapped) is locked
    assert database_outage(IntegrityError("INSERT", {}, Exception("duplicate key"))) is None
    assert database_outage(KeyError("a bug")) is None
    handler_bug = KeyError("raised while handling an outage")
    handler_bug.__context__ = locked  # not raised *from* it: a bug stays a bug
    assert database_outage(handler_bug) is None


def test_sqlite_busy_timeout_comes_from_the_url(tmp_path: Path):
    for url, expected in ((f"sqlite:///{tmp_path / 'a.db'}?timeout=0.25", 250),
                          (f"sqlite:///{tmp_path / 'b.db'}", 30_000)):
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == expected
        finally:
            engine.dispose()


def test_cli_says_the_database_cannot_be_used_in_one_line(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(f"[database]\nurl = {json.dumps(_refused_url())}\n[logging]\nformat = \"json\"\n")
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), "status"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: the database cannot be used: OperationalError: connection failed")
    assert "Traceback" not in result.stderr and "s3cr" not in result.stderr
