"""Simulator throughput: how many requests a second one simulator process serves.

Not a test: it prints figures. Each simulator runs in its own process
(``python -m syncd.simulators.server``), pinned to one core where the OS allows
(``os.sched_setaffinity``); the client runs here, pinned to another core, with
httpx keep-alive connections and a few requests in flight.

Measured:

* SendHub: list pages a second at ``limit=100`` (offsets spread over the seeded
  contacts), and contact creates a second;
* smsend (when ``syncd.simulators.smsend`` exists): group-list pages a second and
  contacts a second through add-multiple (``POST /contact`` with a batch).

Targets (issue 3): >= 2,000 SendHub pages/s at limit=100 and >= 1,000 creates/s.

Usage: ``python bench/simulators.py [--seconds 3] [--concurrency 4] [--contacts 5000]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

SERVER_CORE = 0
CLIENT_CORE = 1


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    info: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


PIN = True


def _pin(pid: int, core: int) -> str:
    if not PIN or not hasattr(os, "sched_setaffinity") or core >= (os.cpu_count() or 1):
        return "not pinned"
    os.sched_setaffinity(pid, {core})
    return f"core {core}"


def start(kind: str, *, contacts: int, groups: int) -> Simulator:
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
    print(f"  {kind} simulator pid {process.pid}, {_pin(process.pid, SERVER_CORE)}")
    return Simulator(process, info)


async def measure(
    label: str, request: Callable[[httpx.AsyncClient, int], Awaitable[int]], *, seconds: float, concurrency: int,
    unit: str = "requests",
) -> float:  # fmt: skip
    """Run ``request`` from ``concurrency`` workers for ``seconds``; print and return units a second.

    ``request`` returns how many units (requests, contacts) it completed.
    """
    counter = itertools.count()
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await request(client, next(counter))  # warm up: connection and caches
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                done += await request(client, next(counter))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    rate = done / elapsed
    print(f"  {label}: {rate:,.0f} {unit}/s ({done:,} in {elapsed:.1f} s)")
    return rate


def _check(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.url.path}: {response.status_code} {response.text[:200]}")


def _number(i: int) -> str:
    # 10-digit NANP numbers in a range the seeding never uses (area code 289 is not seeded).
    return f"+1289{2_000_000 + i:07d}"


async def bench_sendhub(args: argparse.Namespace) -> dict[str, float]:
    sim = start("sendhub", contacts=args.contacts, groups=5)
    auth = {"username": sim.info["username"], "api_key": sim.info["api_key"]}
    pages = max(1, args.contacts // 100)
    try:

        async def list_page(client: httpx.AsyncClient, i: int) -> int:
            params = {**auth, "limit": "100", "offset": str((i % pages) * 100)}
            response = await client.get(f"{sim.base_url}/contacts/", params=params)
            _check(response, 200)
            return 1

        async def create(client: httpx.AsyncClient, i: int) -> int:
            body = {"name": f"Bench Contact {i}", "number": _number(i), "city": "Toronto"}
            response = await client.post(f"{sim.base_url}/contacts/", params=auth, json=body)
            _check(response, 201)
            return 1

        kw = {"seconds": args.seconds, "concurrency": args.concurrency}
        return {
            "sendhub_pages_per_s": await measure("SendHub list pages (limit=100)", list_page, **kw),
            "sendhub_creates_per_s": await measure("SendHub contact creates", create, **kw),
        }
    finally:
        sim.stop()


async def _smsend_headers(client: httpx.AsyncClient, sim: Simulator) -> dict[str, str]:
    if sim.info.get("user_key") and sim.info.get("access_token"):
        return {"user_key": sim.info["user_key"], "Access_token": sim.info["access_token"]}
    params = {"username": sim.info["username"], "password": sim.info["password"]}
    response = await client.get(f"{sim.base_url}/token", params=params)
    _check(response, 200)
    user_key, token = response.text.split(";")
    return {"user_key": user_key, "Access_token": token}


async def bench_smsend(args: argparse.Namespace) -> dict[str, float]:
    groups = 500
    sim = start("smsend", contacts=0, groups=groups)
    batch = 100
    try:
        async with httpx.AsyncClient() as client:
            headers = await _smsend_headers(client, sim)

        async def list_page(client: httpx.AsyncClient, i: int) -> int:
            params = {"pageNumber": str(i % (groups // 50) + 1), "pageSize": "50"}
            response = await client.get(f"{sim.base_url}/groups", params=params, headers=headers)
            _check(response, 200)
            return 1

        async def add_multiple(client: httpx.AsyncClient, i: int) -> int:
            contacts = [{"phoneNumber": f"+39333{i * batch + j:07d}", "name": "Bench"} for j in range(batch)]
            body = {"contacts": contacts, "updateExistingContact": True}
            response = await client.post(f"{sim.base_url}/contact", json=body, headers=headers)
            _check(response, 200)
            return batch

        kw = {"seconds": args.seconds, "concurrency": args.concurrency}
        return {
            "smsend_group_pages_per_s": await measure("smsend group pages (pageSize=50)", list_page, **kw),
            "smsend_contacts_per_s": await measure(
                f"smsend add-multiple ({batch} per request)", add_multiple, unit="contacts", **kw
            ),
        }
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--contacts", type=int, default=5000, help="SendHub contacts seeded before listing")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    global PIN
    PIN = not args.no_pin
    print(f"client pid {os.getpid()}, {_pin(0, CLIENT_CORE)}; {args.concurrency} connections, {args.seconds} s each")
    asyncio.run(bench_sendhub(args))
    if importlib.util.find_spec("syncd.simulators.smsend") is not None:
        asyncio.run(bench_smsend(args))
    else:
        print("  smsend simulator not present: skipped")


if __name__ == "__main__":
    main()
