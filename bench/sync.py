"""Sync engine figures: 100,000 contacts in 200 groups, SendHub <-> canonical book <-> smsend.

Not a test: it prints figures. Each simulator runs in its own process (see
``bench/_procs.py``), and so does each measured piece of work, so that its peak
RSS (``ru_maxrss``) is its own. Phases, in the order they run:

1. **first run**: SendHub is seeded with N North-American contacts in G groups,
   smsend and the canonical book are empty; one ``run_once`` imports everything
   from SendHub and pushes it to smsend. This is how the "in step" state is reached.
2. **no-op run**: nothing changed anywhere. Expected: ceil(N/1000) SendHub
   contact pages plus group pages, smsend group pages, zero writes at either provider.
3. **reconcile alone**: the no-op run's inputs (book, mirror, links) loaded from
   the database, projected, and ``syncd.sync.reconcile.reconcile`` called for
   both entities of both providers; goal under 1 s of CPU for 100k.
4. **1 % changed on each side**: N/100 contacts renamed at SendHub (in the
   simulator's state) and N/100 others renamed in ``contacts`` by SQL, then one run;
   then one more run, which must write nothing (converged).

5. **bare download**: the same SendHub pages fetched with a plain httpx client and
   parsed with orjson, nothing else: the floor a no-op run is compared with (ratio).
6. **``syncd sync`` as a process**: a no-op run of the real command, interpreter start included.

Figures per run: wall time, CPU time of the engine process, its peak RSS, the
requests each simulator served (reads / writes) and the simulators' CPU time; then
the goals of issue 11, each met or not.

Usage::

    python bench/sync.py [--contacts 100000] [--groups 200] [--postgres URL]
                         [--profile DIR] [--no-pin] [--scaling 10000,100000,300000]

``--postgres`` runs against that database instead of a temporary SQLite file; it
is migrated and used as is, so give it an empty one. ``--profile DIR`` adds a
cProfile-d no-op run and reconcile (written to DIR, top functions printed).
``--scaling`` runs the first import, the no-op and the 1 % run at each size and
prints them as a table (no-op CPU per contact must not rise with N; RSS at the
largest under twice RSS at 100k).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

# `python bench/sync.py` puts bench/ on sys.path; the helpers live next to this file.
from _procs import Measured, SimProcess, in_fresh_process

# Imported here, not in the measured functions, so their figures leave out import time
# (each measured process re-imports this module before the call).
from syncd.config import Config, DatabaseSettings, ProviderSettings, Secret, SyncSettings
from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.db.repo import Book, Store
from syncd.logs import configure_logging
from syncd.providers import build_provider
from syncd.providers.http import RetryPolicy
from syncd.providers.sendhub import SendHubProvider  # noqa: F401 - build_provider imports it lazily
from syncd.providers.smsend import SmsendProvider  # noqa: F401
from syncd.sync import project
from syncd.sync.plan import Entity
from syncd.sync.reconcile import Policy, reconcile
from syncd.sync.run import run_once

SIM_CORES = {0}
ENGINE_CORES = {1}
_SECRET_FIELDS = frozenset({"password", "access_token", "session_key", "api_key"})


# -- configuration ---------------------------------------------------------------------------------


def provider_settings(sim: SimProcess) -> ProviderSettings:
    """Settings for one simulator: fast limits (the simulators are local), smsend via its access token."""
    creds = {k: Secret(v) if k in _SECRET_FIELDS else v for k, v in sim.info["credentials"].items()}
    if sim.kind == "smsend":
        creds.pop("username", None)
        creds.pop("password", None)
    return ProviderSettings(name=sim.kind, type=sim.kind, base_url=sim.info["base_url"], requests_per_second=10_000,
                            max_concurrency=8, batch_size=500, timeout_seconds=60, **creds)


def make_config(db_url: str, sims: list[SimProcess]) -> Config:
    return Config(database=DatabaseSettings(db_url), sync=SyncSettings(default_region="US"),
                  providers=tuple(provider_settings(s) for s in sims))


def _quiet_logs() -> None:
    configure_logging(os.environ.get("SYNCD_BENCH_LOG", "warning"), "console")


# -- work done in a fresh process ------------------------------------------------------------------


def sync_run(config: Config, db_url: str, profile_to: str | None = None) -> dict[str, Any]:
    """One ``run_once``; the status and each provider's summary."""
    _quiet_logs()
    engine = make_engine(db_url)
    retry = RetryPolicy(attempts=6, base_delay=0.05, max_delay=2.0, budget=60.0)
    options = {p.name: {"retry": retry} for p in config.providers}
    profiler = cProfile.Profile() if profile_to else None
    if profiler:
        profiler.enable()
    report = asyncio.run(run_once(config, engine, client_options=options, trigger="bench"))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_to)
    engine.dispose()
    return {"status": report.status, "providers": {p.name: p.summary() for p in report.providers}}


def reconcile_alone(config: Config, db_url: str, repeat: int = 3, profile_to: str | None = None) -> dict[str, Any]:
    """Load a run's reconcile inputs, then time projection and ``reconcile`` (best of ``repeat``)."""
    _quiet_logs()
    engine = make_engine(db_url)
    store = Store(engine, dry_run=True)  # reads only
    started = time.process_time()
    book = store.load_book(config.sync.default_region)
    inputs = [_provider_inputs(store, config, p) for p in config.providers]
    load_cpu = time.process_time() - started
    engine.dispose()
    project_cpu, reconcile_cpu, ops = math.inf, math.inf, 0
    profiler = cProfile.Profile() if profile_to else None
    for _ in range(repeat):
        p_cpu, r_cpu, ops = _project_and_reconcile(book, inputs, profiler)
        project_cpu, reconcile_cpu = min(project_cpu, p_cpu), min(reconcile_cpu, r_cpu)
    if profiler:
        profiler.dump_stats(profile_to)
    for client, *_ in inputs:
        asyncio.run(client.aclose())
    return {"load_cpu": load_cpu, "project_cpu": project_cpu, "reconcile_cpu": reconcile_cpu, "ops": ops,
            "contacts": len(book.contacts), "groups": len(book.groups)}


def _provider_inputs(store: Store, config: Config, settings: ProviderSettings) -> tuple[Any, ...]:
    client = build_provider(settings, default_region=config.sync.default_region)
    links = {e: store.load_links(settings.name, e) for e in ("group", "contact")}
    policy = Policy(settings.name, conflict=config.conflict_for(settings), mode=settings.mode)
    return client, links, store.load_mirror_groups(settings.name), store.load_mirror_contacts(settings.name), policy


def _project_and_reconcile(book: Book, inputs: list[tuple[Any, ...]],
                           profiler: cProfile.Profile | None) -> tuple[float, float, int]:
    if profiler:
        profiler.enable()
    project_cpu = reconcile_cpu = 0.0
    ops = 0
    for client, links, mirror_groups, mirror_contacts, policy in inputs:
        client = project.Projection(client.project, client.capabilities.opt_out_outbound,
                                    client.capabilities.group_fields)
        t0 = time.process_time()
        groups = (project.local_groups(client, book.groups), project.remote_groups(client, mirror_groups))
        contacts = (project.local_contacts(client, book.contacts),
                    project.remote_contacts(client, mirror_contacts, links["group"]))
        t1 = time.process_time()
        ops += len(reconcile(Entity.GROUP, links["group"], *groups, policy))
        ops += len(reconcile(Entity.CONTACT, links["contact"], *contacts, policy))
        t2 = time.process_time()
        project_cpu, reconcile_cpu = project_cpu + t1 - t0, reconcile_cpu + t2 - t1
    if profiler:
        profiler.disable()
    return project_cpu, reconcile_cpu, ops


def bare_download(settings: ProviderSettings, contacts: int) -> dict[str, Any]:
    """The SendHub contact pages a pull reads, fetched by a plain client and parsed: nothing else."""
    import httpx
    import orjson

    async def fetch() -> int:
        auth = {"username": settings.username, "api_key": settings.api_key.get() if settings.api_key else ""}
        parsed = 0
        async with httpx.AsyncClient(base_url=settings.base_url, timeout=60) as client:
            for offset in range(0, max(contacts, 1), 1000):
                response = await client.get("/contacts/", params={**auth, "limit": 1000, "offset": offset})
                parsed += len(orjson.loads(response.content)["objects"])
        return parsed

    return {"parsed": asyncio.run(fetch())}


def sync_process(config_path: str) -> dict[str, Any]:
    """``python -m syncd --config PATH sync``, a whole process; its exit code."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "syncd", "--config", config_path, "sync"],
                          capture_output=True, text=True, check=False)
    return {"exit": done.returncode, "tail": done.stdout[-300:] + done.stderr[-300:]}


def write_config(config: Config, path: Path) -> str:
    """``config`` as a config.toml (secrets as literals: a benchmark's simulators)."""
    q = json.dumps
    lines = ["[database]", f"url = {q(config.database.url)}", "", "[sync]",
             f"default_region = {q(config.sync.default_region)}", "", "[logging]", 'level = "warning"', ""]
    for p in config.providers:
        lines += ["[[providers]]", f"name = {q(p.name)}", f"type = {q(p.type)}", f"base_url = {q(p.base_url)}",
                  f"requests_per_second = {p.requests_per_second}", f"max_concurrency = {p.max_concurrency}",
                  f"batch_size = {p.batch_size}", f"timeout_seconds = {p.timeout_seconds}"]
        for key in ("username", "user_key"):
            if getattr(p, key):
                lines.append(f"{key} = {q(getattr(p, key))}")
        for key in _SECRET_FIELDS:
            if getattr(p, key) is not None:
                lines.append(f"{key} = {q(getattr(p, key).get())}")
        lines.append("")
    path.write_text("\n".join(lines))
    return str(path)


def edit_by_sql(db_url: str, count: int, avoid: list[str]) -> int:
    """Rename ``count`` canonical contacts (spread over the book, none with a number in ``avoid``) by plain SQL."""
    engine = make_engine(db_url)
    skip = set(avoid)
    with engine.begin() as conn:
        rows = [cid for cid, phone in conn.execute(text("SELECT id, phone FROM contacts ORDER BY id"))
                if phone not in skip]
        step = max(1, len(rows) // max(1, count))
        chosen = rows[step // 2::step][:count]
        for i in range(0, len(chosen), 500):
            ids = chosen[i:i + 500]
            marks = ", ".join(f":id{j}" for j in range(len(ids)))
            conn.execute(text(f"UPDATE contacts SET name = name || ' (edited by SQL)' WHERE id IN ({marks})"),
                         {f"id{j}": cid for j, cid in enumerate(ids)})
    engine.dispose()
    return len(chosen)


# -- the benchmark ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured phase, as printed."""

    label: str
    measured: Measured
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> endpoint -> count
    sim_cpu: float | None = None


class Bench:
    """The two simulators (in their processes), the configuration pointing at them, and the measured rows."""

    def __init__(self, args: argparse.Namespace, db_url: str) -> None:
        self.args, self.db_url = args, db_url
        self.engine_cores = None if args.no_pin else ENGINE_CORES
        sim_cores = None if args.no_pin else SIM_CORES
        started = time.perf_counter()
        self.sendhub = SimProcess.start("sendhub", contacts=args.contacts, groups=args.groups, seed=1, cores=sim_cores)
        self.smsend = SimProcess.start("smsend", seed=1, cores=sim_cores)
        self.sims = [self.sendhub, self.smsend]
        print(f"simulators up in {time.perf_counter() - started:.1f} s: " + ", ".join(
            f"{s.kind} pid {s.pid} ({s.pinned})" for s in self.sims), flush=True)
        self.config = make_config(db_url, self.sims)
        self.rows: list[Row] = []

    def stop(self) -> None:
        for sim in self.sims:
            sim.stop()

    def measure(self, label: str, func: Callable[..., Any], *args: Any) -> Row:
        """Run ``func`` in a fresh process, counting the simulators' requests and CPU around it."""
        for sim in self.sims:
            sim.reset_counts()
        cpu_before = [s.cpu_seconds() for s in self.sims]
        measured = in_fresh_process(func, *args, cores=self.engine_cores)
        cpu_after = [s.cpu_seconds() for s in self.sims]
        sim_cpu = None if None in cpu_before + cpu_after else sum(cpu_after) - sum(cpu_before)
        row = Row(label, measured, {s.kind: s.request_counts() for s in self.sims}, sim_cpu)
        self.rows.append(row)
        print(f"  done: {label}: {measured.wall:.1f} s wall, {measured.cpu:.1f} s CPU", flush=True)
        return row

    def run(self) -> None:
        n = self.args.contacts
        changed = max(1, n // 100)
        self.measure("first run: import N from SendHub, push to smsend", sync_run, self.config, self.db_url)
        self.measure("no-op run (in step)", sync_run, self.config, self.db_url)
        self.measure("reconcile alone (no-op inputs)", reconcile_alone, self.config, self.db_url)
        numbers = self.sendhub.command("edit_names", changed, max(1, n // changed), "(edited at SendHub)")
        edited = in_fresh_process(edit_by_sql, self.db_url, changed, numbers).result
        self.measure(f"1 % changed each side ({len(numbers)} SendHub, {edited} SQL)", sync_run, self.config,
                     self.db_url)
        self.measure("run after the change (converged?)", sync_run, self.config, self.db_url)
        self.measure("bare download and parse of the SendHub pages", bare_download, self.config.providers[0],
                     self.args.contacts)
        if self.args.config_dir:
            path = write_config(self.config, Path(self.args.config_dir) / "config.toml")
            self.measure("`syncd sync` as a process (no-op)", sync_process, path)
        if self.args.profile:
            self.profile(Path(self.args.profile))

    def profile(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        runs = {"noop": sync_run, "reconcile": reconcile_alone}
        for name, func in runs.items():
            path = str(where / f"{name}.prof")
            args = (self.config, self.db_url, path) if name == "noop" else (self.config, self.db_url, 1, path)
            in_fresh_process(func, *args, cores=self.engine_cores)
            print(f"\n--- cProfile: {name} ({path}), top 25 by cumulative time ---")
            pstats.Stats(path).sort_stats("cumulative").print_stats(25)
            print("--- top 20 by own time ---")
            pstats.Stats(path).sort_stats("tottime").print_stats(20)


# -- report ------------------------------------------------------------------------------------------


def split_requests(counts: dict[str, int]) -> tuple[int, int]:
    """(reads, writes): a write is any request other than GET."""
    reads = sum(c for endpoint, c in counts.items() if endpoint.startswith("GET "))
    return reads, sum(counts.values()) - reads


def print_table(bench: Bench) -> None:
    header = (f"{'phase':<52} {'wall s':>7} {'CPU s':>7} {'RSS MB':>7} "
              f"{'SendHub r/w':>13} {'smsend r/w':>12} {'sim CPU s':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in bench.rows:
        m = row.measured
        cells = []
        for kind in ("sendhub", "smsend"):
            reads, writes = split_requests(row.requests.get(kind, {}))
            cells.append(f"{reads}/{writes}")
        sim_cpu = f"{row.sim_cpu:.1f}" if row.sim_cpu is not None else "n/a"
        print(f"{row.label:<52} {m.wall:>7.2f} {m.cpu:>7.2f} {m.peak_rss_mb:>7.0f} "
              f"{cells[0]:>13} {cells[1]:>12} {sim_cpu:>9}")
    print()
    for row in bench.rows:
        result = row.measured.result
        if "providers" in result:
            parts = [f"{name}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if v not in (None, "ok"))
                     for name, summary in result["providers"].items()]
            print(f"{row.label}: run {result['status']}; " + "; ".join(parts))
        elif "parsed" in result:
            print(f"{row.label}: {result['parsed']} contacts parsed")
        elif "exit" in result:
            print(f"{row.label}: exit {result['exit']}" + ("" if result["exit"] == 0 else f"; {result['tail']}"))
        else:
            print(f"{row.label}: {result['contacts']} contacts, {result['groups']} groups; "
                  f"load {result['load_cpu']:.2f} s CPU, projection {result['project_cpu']:.3f} s, "
                  f"reconcile {result['reconcile_cpu']:.3f} s CPU (best of 3), {result['ops']} operations")
    print()
    for row in bench.rows:
        if row.label.startswith(("no-op run", "run after the change")):
            print(noop_verdict(row, bench.args.contacts))
    reconcile_cpu = bench.rows[2].measured.result["reconcile_cpu"]
    print(f"reconcile alone: {reconcile_cpu:.2f} s CPU for {bench.args.contacts} contacts, both providers "
          f"(goal under 1 s for 100,000): {'met' if reconcile_cpu < 1 else 'NOT met'}")
    print_goals(bench)


def print_goals(bench: Bench) -> None:
    """Issue 11's goals, at the size measured (they are stated for 100,000 contacts)."""
    rows = {row.label.split(" (")[0].split(":")[0]: row.measured for row in bench.rows}
    first, noop, one = rows["first run"], rows["no-op run"], rows["1 % changed each side"]
    bare = rows["bare download and parse of the SendHub pages"]
    goals = [
        ("first import wall <= 15 s", first.wall, 15.0), ("first import RSS <= 250 MB", first.peak_rss_mb, 250.0),
        ("no-op wall <= 1.5 s", noop.wall, 1.5), ("no-op RSS <= 150 MB", noop.peak_rss_mb, 150.0),
        ("no-op / bare download <= 3", noop.wall / bare.wall, 3.0),
        ("1 % changed wall <= 3 s", one.wall, 3.0), ("1 % changed RSS <= 150 MB", one.peak_rss_mb, 150.0),
    ]
    if "`syncd sync` as a process" in rows:
        goals.append(("`syncd sync` no-op process wall <= 2.5 s", rows["`syncd sync` as a process"].wall, 2.5))
    print(f"\ngoals of issue 11 (stated for 100,000 contacts; this run: {bench.args.contacts}):")
    for label, value, limit in goals:
        print(f"  {'met    ' if value <= limit else 'NOT met'}  {label}: {value:.2f}")


def noop_verdict(row: Row, contacts: int) -> str:
    """Whether a run with nothing to change read only SendHub's pages and wrote nothing."""
    expected = math.ceil(contacts / 1000)
    sendhub = row.requests.get("sendhub", {})
    pages = sum(c for endpoint, c in sendhub.items() if endpoint.startswith("GET ") and endpoint.endswith("/contacts"))
    writes = sum(split_requests(counts)[1] for counts in row.requests.values())
    ok = pages == expected and writes == 0
    detail = "; ".join(f"{kind}: " + ", ".join(f"{endpoint} x{c}" for endpoint, c in sorted(counts.items()))
                       for kind, counts in row.requests.items())
    return (f"{row.label}: {pages} SendHub contact pages (expected {expected}), {writes} writes (expected 0): "
            f"{'OK' if ok else 'UNEXPECTED'}\n  {detail}")


def scaling(args: argparse.Namespace, sizes: list[int]) -> None:
    """The no-op and 1 % runs at several sizes, each on a fresh database and fresh simulators."""
    table = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            db_url = f"sqlite:///{tmp}/bench.db"
            upgrade(db_url)
            args.contacts, args.config_dir = n, None
            bench = Bench(args, db_url)
            try:
                bench.measure("first run", sync_run, bench.config, db_url)
                noop = bench.measure("no-op run", sync_run, bench.config, db_url).measured
                changed = max(1, n // 100)
                numbers = bench.sendhub.command("edit_names", changed, max(1, n // changed), "(edited at SendHub)")
                in_fresh_process(edit_by_sql, db_url, changed, numbers)
                one = bench.measure("1 % changed", sync_run, bench.config, db_url).measured
                table.append((n, bench.rows[0].measured, noop, one))
            finally:
                bench.stop()
    print(f"\n{'contacts':>9} {'import s':>9} {'import MB':>9} {'no-op s':>8} {'no-op CPU s':>11} "
          f"{'CPU µs/contact':>14} {'no-op MB':>8} {'1 % s':>7} {'1 % CPU s':>9} {'1 % MB':>7}")
    for n, first, noop, one in table:
        print(f"{n:>9} {first.wall:>9.1f} {first.peak_rss_mb:>9.0f} {noop.wall:>8.2f} {noop.cpu:>11.2f} "
              f"{noop.cpu / n * 1e6:>14.1f} {noop.peak_rss_mb:>8.0f} {one.wall:>7.2f} {one.cpu:>9.2f} "
              f"{one.peak_rss_mb:>7.0f}")
    by_size = {n: noop for n, _, noop, _ in table}
    if 100_000 in by_size and max(by_size) > 100_000:
        largest = max(by_size)
        ratio = by_size[largest].peak_rss_mb / by_size[100_000].peak_rss_mb
        print(f"no-op RSS at {largest} / at 100000: {ratio:.2f} (goal under 2): {'met' if ratio < 2 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database instead of SQLite")
    parser.add_argument("--profile", metavar="DIR", help="also profile a no-op run and the reconcile")
    parser.add_argument("--no-pin", action="store_true", help="do not pin simulators and engine to cores")
    parser.add_argument("--scaling", metavar="N,N,...", help="first import, no-op and 1 %% runs at each size")
    args = parser.parse_args()
    if args.scaling:
        scaling(args, [int(n) for n in args.scaling.split(",")])
        return
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        db_url = args.postgres or f"sqlite:///{tmp}/bench.db"
        args.config_dir = tmp
        upgrade(db_url)
        print(f"{args.contacts} contacts in {args.groups} groups; database {'PostgreSQL' if args.postgres else 'SQLite'}; "
              f"engine process {'not pinned' if args.no_pin else 'pinned to core 1'}; "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
        bench = Bench(args, db_url)
        try:
            bench.run()
        finally:
            bench.stop()
        print_table(bench)


if __name__ == "__main__":
    main()
