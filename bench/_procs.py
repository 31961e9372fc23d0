"""Benchmark helpers: simulators in their own processes, and measured work in a fresh process.

A simulator in the benchmark's own process would compete with the engine for
the GIL, so each one runs in a child process (:class:`SimProcess`). The child
serves over HTTP from a background thread and answers commands on a pipe from
its main thread: that is how the benchmark changes data "at the provider"
(``SendHubAccount.edit_contact``) without going through the API it measures.
Request counts are read over the simulator's admin interface (``/_admin/requests``).
:meth:`SimProcess.call` runs any module-level function of the caller's on the
simulator's state in the child (``func(state, *args)``), for edits the fixed
commands do not cover.

:func:`in_fresh_process` runs one function in a new interpreter, so that
``ru_maxrss`` (a lifetime peak) belongs to that piece of work alone.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import httpx

__all__ = ["Measured", "SimProcess", "in_fresh_process", "pin", "proc_cpu_seconds"]

_SPAWN = multiprocessing.get_context("spawn")  # no inherited threads, sockets or engine pools


def pin(pid: int, cores: set[int] | None) -> str:
    """Restrict ``pid`` to ``cores`` where the OS allows it; what was done, for the report."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    usable = {c for c in cores if c < (os.cpu_count() or 1)}
    if not usable:
        return "not pinned"
    os.sched_setaffinity(pid, usable)
    return f"pinned to core {','.join(map(str, sorted(usable)))}"


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of another process (Linux ``/proc``); None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- simulators --------------------------------------------------------------------------------


def _serve(conn: Connection, kind: str, contacts: int, groups: int, seed: int) -> None:
    """Child process: serve one simulator, then answer commands until told to stop."""
    from syncd.simulators import Faults, SimulatorServer

    server = SimulatorServer(kind, contacts=contacts, groups=groups, seed=seed, faults=Faults(seed=seed)).start()
    conn.send({"base_url": server.base_url, "root_url": server.root_url, "credentials": server.credentials,
               "admin_token": server.admin_token})
    commands: dict[str, Callable[..., Any]] = {
        "edit_names": lambda n, step, suffix: _edit_names(server.state, n, step, suffix),
        "count": lambda: _count(server.state),
        "call": lambda func, *args: func(server.state, *args),
    }
    while True:
        name, args = conn.recv()
        if name == "stop":
            break
        try:
            conn.send(("ok", commands[name](*args)))
        except Exception as exc:  # reported to the parent, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    server.stop()
    conn.send(("ok", None))


def _edit_names(state: Any, n: int, step: int, suffix: str) -> list[str]:
    """SendHub: rename every ``step``-th contact (``n`` of them) at the provider; their numbers."""
    ids = state.contact_ids()[::step][:n]
    numbers = []
    for contact_id in ids:
        contact = state.edit_contact(contact_id, name=f"{state.contacts[contact_id].name} {suffix}")
        numbers.append(contact.number)
    return numbers


def _count(state: Any) -> dict[str, int]:
    return {"contacts": len(state.contacts), "groups": len(state.groups)}


@dataclass
class SimProcess:
    """One simulator in a child process: its URLs, credentials and admin token, and a command pipe."""

    kind: str
    process: Any
    conn: Connection
    info: dict[str, Any]
    pinned: str = "not pinned"

    @classmethod
    def start(cls, kind: str, *, contacts: int = 0, groups: int = 0, seed: int = 1,
              cores: set[int] | None = None) -> SimProcess:
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(target=_serve, args=(child, kind, contacts, groups, seed), daemon=True,
                                 name=f"sim-{kind}")
        process.start()
        if not parent.poll(600):
            process.kill()
            raise RuntimeError(f"{kind} simulator did not start")
        sim = cls(kind, process, parent, parent.recv())
        sim.pinned = pin(process.pid, cores)
        return sim

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self, name: str, *args: Any) -> Any:
        self.conn.send((name, args))
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.kind} simulator: {name}: {value}")
        return value

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(state, *args)`` in the simulator's process; its (picklable) result.

        ``func`` must be importable by name (a module-level function, as for
        :func:`in_fresh_process`); it may change the account "at the provider".
        """
        return self.command("call", func, *args)

    def _admin(self, method: str) -> httpx.Response:
        response = httpx.request(method, f"{self.info['root_url']}/_admin/requests",
                                 headers={"X-Admin-Token": self.info["admin_token"]}, timeout=60)
        response.raise_for_status()
        return response

    def request_counts(self) -> dict[str, int]:
        """Requests served per endpoint since the last reset, ``{"GET /v1/contacts": 100, ...}``."""
        return dict(self._admin("GET").json()["counts"])

    def reset_counts(self) -> None:
        self._admin("DELETE")

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        try:
            self.command("stop")
        except (OSError, EOFError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


# -- measured work -------------------------------------------------------------------------------


@dataclass
class Measured:
    """What one piece of work cost in its own process, and what it returned."""

    wall: float
    cpu: float
    peak_rss_mb: float
    result: Any


def _measure(conn: Connection, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        started, cpu0 = time.perf_counter(), time.process_time()
        result = func(*args)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
        # ru_maxrss is KiB on Linux (bytes on macOS; this benchmark reports Linux figures)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(("ok", Measured(wall, cpu, peak, result)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        conn.send(("error", traceback.format_exc()))
        raise SystemExit(1) from exc


def in_fresh_process(func: Callable[..., Any], *args: Any, cores: set[int] | None = None) -> Measured:
    """Run ``func(*args)`` in a new interpreter; its wall and CPU time, the process's peak RSS and result.

    ``func`` must be importable by name (a module-level function) and its
    arguments and result picklable. Wall and CPU time cover the call only, not
    the interpreter's start; the peak RSS is the whole process's.
    """
    parent, child = _SPAWN.Pipe()
    process = _SPAWN.Process(target=_measure, args=(child, func, args), name=f"bench-{func.__name__}")
    process.start()
    pin(process.pid, cores)
    try:
        status, value = parent.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{func.__name__} died (exit code {process.exitcode})") from None
    process.join()
    if status != "ok":
        raise RuntimeError(f"{func.__name__} failed in its process:\n{value}")
    return value
