"""Simulator throughput: how many requests a second one simulator process serves.

Not a test: it prints figures. Each simulator runs in its own process
(``python -m syncd.simulators.server``), pinned to one core where the OS allows
(``os.sched_setaffinity``); the client runs here, pinned to another core.

Each workload is driven twice, over keep-alive connections with a few requests
in flight:

* **httpx**: ``httpx.AsyncClient``, what syncd itself uses. On a small machine
  httpx spends more CPU per request than the simulator, so this figure is
  usually the client's limit, not the simulator's.
* **raw**: a minimal HTTP/1.1 client (asyncio streams, Content-Length framing),
  light enough to load the simulator to its own limit.

For each run it prints the rate, the simulator's CPU time per request (from
``/proc/PID/stat``; Linux only) and the rate one fully busy core would give at
that cost (``1 / cpu per request``): the capacity figure, which holds even when
other processes share the machine.

Workloads: SendHub list pages at ``limit=100`` (offsets spread over the seeded
contacts) and contact creates; smsend (when ``syncd.simulators.smsend`` exists)
group-list pages and contacts through add-multiple (``POST /contact`` batches).

Targets (issue 3): >= 2,000 SendHub pages/s at limit=100 and >= 1,000 creates/s.

Usage: ``python bench/simulators.py [--seconds 3] [--concurrency 4] [--contacts 5000] [--no-pin]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

SERVER_CORE = 0
CLIENT_CORE = 1


@dataclass(frozen=True)
class Req:
    """One request of a workload, independent of the client that sends it."""

    method: str
    path: str  # with query string
    headers: dict[str, str]
    body: bytes = b""
    expect: int = 200
    units: int = 1  # what it counts for (contacts in a batch)


Workload = Callable[[int], Req]


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    info: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


def pin(pid: int, core: int, enabled: bool) -> str:
    if not enabled or not hasattr(os, "sched_setaffinity") or core >= (os.cpu_count() or 1):
        return "not pinned"
    os.sched_setaffinity(pid, {core})
    return f"pinned to core {core}"


def start(kind: str, *, contacts: int, groups: int, pinned: bool) -> Simulator:
    """Start one simulator process and read what it prints (``key: value`` lines)."""
    command = [sys.executable, "-m", "syncd.simulators.server", kind, "--contacts", str(contacts)]
    command += ["--groups", str(groups), "--seed", "7"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    info: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        key, _, value = line.partition(": ")
        info[key.strip()] = value.strip()
        if key == "admin_url":
            break
    print(f"{kind} simulator: pid {process.pid}, {pin(process.pid, SERVER_CORE, pinned)}")
    return Simulator(process, info)


# -- the two clients -----------------------------------------------------------------------------------


async def drive_httpx(
    sim: Simulator, workload: Workload, counter: itertools.count[int], deadline: float, concurrency: int
) -> int:
    root = sim.base_url[: -len(sim.base_path)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    async with httpx.AsyncClient(base_url=root, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                req = workload(next(counter))
                response = await client.request(req.method, req.path, headers=req.headers, content=req.body)
                _check(req, response.status_code, response.text)
                done += req.units

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _encode(req: Req, host: str) -> bytes:
    head = [f"{req.method} {req.path} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in req.headers.items()]
    if req.body or req.method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + req.body


async def drive_raw(
    sim: Simulator, workload: Workload, counter: itertools.count[int], deadline: float, concurrency: int
) -> int:
    """A minimal keep-alive HTTP/1.1 client: one request in flight per connection."""
    url = urlsplit(sim.base_url)
    assert url.hostname is not None and url.port is not None
    done = 0

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        while time.perf_counter() < deadline:
            req = workload(next(counter))
            writer.write(_encode(req, url.netloc))
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = int(head[9:12]), 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            _check(req, status, body.decode(errors="replace"))
            done += req.units
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return done


def _check(req: Req, status: int, text: str) -> None:
    if status != req.expect:
        raise RuntimeError(f"{req.method} {req.path}: {status} {text[:200]}")


async def measure(
    sim: Simulator, label: str, workload: Workload, args: argparse.Namespace, counter: itertools.count[int]
) -> None:
    """Drive one workload with each client; print rate, server CPU per unit and the per-core capacity."""
    for name, drive in (("httpx", drive_httpx), ("raw", drive_raw)):
        await drive(sim, workload, counter, time.perf_counter() + 0.2, 1)  # warm up
        cpu_before, started = sim.cpu_seconds(), time.perf_counter()
        done = await drive(sim, workload, counter, started + args.seconds, args.concurrency)
        elapsed = time.perf_counter() - started
        cpu_after = sim.cpu_seconds()
        rate = done / elapsed
        line = f"  {label:<44} {name:<5} {rate:>9,.0f} /s"
        if cpu_before is not None and cpu_after is not None and done:
            per_unit = (cpu_after - cpu_before) / done
            capacity = 1 / per_unit if per_unit else 0.0
            line += f"   server CPU {per_unit * 1e3:6.3f} ms each -> {capacity:>9,.0f} /s per core"
        print(line, flush=True)


# -- workloads ---------------------------------------------------------------------------------------------


def sendhub_workloads(sim: Simulator, contacts: int) -> dict[str, Workload]:
    auth = {"username": sim.info["username"], "api_key": sim.info["api_key"]}
    pages = max(1, contacts // 100)
    base = sim.base_path
    json_header = {"Content-Type": "application/json"}

    def list_page(i: int) -> Req:
        query = urlencode({**auth, "limit": 100, "offset": (i % pages) * 100})
        return Req("GET", f"{base}/contacts/?{query}", {})

    def create(i: int) -> Req:
        # Area code 289 is never seeded, so these numbers are new.
        body = {"name": f"Bench Contact {i}", "number": f"+1289{2_000_000 + i:07d}", "city": "Toronto"}
        return Req("POST", f"{base}/contacts/?{urlencode(auth)}", json_header, json.dumps(body).encode(), 201)

    return {"SendHub list page (limit=100)": list_page, "SendHub contact create": create}


def smsend_workloads(sim: Simulator, groups: int, batch: int) -> dict[str, Workload]:
    login = {"username": sim.info["username"], "password": sim.info["password"]}
    response = httpx.get(f"{sim.base_url}/token", params=login)
    response.raise_for_status()
    user_key, token = response.text.split(";")
    headers = {"user_key": user_key, "Access_token": token}
    base = sim.base_path
    page_size = 50

    def list_page(i: int) -> Req:
        return Req("GET", f"{base}/groups?pageNumber={i % (groups // page_size) + 1}&pageSize={page_size}", headers)

    def add_multiple(i: int) -> Req:
        contacts = [{"phoneNumber": f"+39333{i * batch + j:07d}", "name": "Bench"} for j in range(batch)]
        body = json.dumps({"contacts": contacts, "updateExistingContact": True}).encode()
        return Req("POST", f"{base}/contact", {**headers, "Content-Type": "application/json"}, body, 200, batch)

    return {
        f"smsend group page (pageSize={page_size})": list_page,
        f"smsend add-multiple contacts ({batch}/request)": add_multiple,
    }


async def run_simulator(kind: str, args: argparse.Namespace) -> None:
    counter = itertools.count()
    if kind == "sendhub":
        sim = start("sendhub", contacts=args.contacts, groups=5, pinned=not args.no_pin)
        workloads = sendhub_workloads(sim, args.contacts)
    else:
        sim = start("smsend", contacts=0, groups=500, pinned=not args.no_pin)
        workloads = smsend_workloads(sim, 500, batch=100)
    try:
        for label, workload in workloads.items():
            await measure(sim, label, workload, args, counter)
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="connections, one request in flight each")
    parser.add_argument("--contacts", type=int, default=5000, help="SendHub contacts seeded before listing")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    where = pin(0, CLIENT_CORE, not args.no_pin)
    print(f"client: pid {os.getpid()}, {where}; {args.concurrency} connections; {args.seconds} s per figure")
    asyncio.run(run_simulator("sendhub", args))
    if importlib.util.find_spec("syncd.simulators.smsend") is not None:
        asyncio.run(run_simulator("smsend", args))
    else:
        print("smsend simulator not present: skipped")


if __name__ == "__main__":
    main()
