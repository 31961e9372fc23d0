"""Provider client benchmarks (issue 4): the real clients against simulators in their own processes.

Not a test: it prints figures. Each simulator is a separate process
(``python -m syncd.simulators.server``), so the client process's memory and
CPU are the client's alone.

1. **SendHub listing**: stream every contact of a seeded account through
   ``SendHubProvider.contacts()``. Wall time; requests (must equal the page
   count, ceil(N / 1000)); peak RSS of this process after the first 10 % of
   the contacts and after all of them. Streaming means the second figure is
   not ten times the first: only a page is held at a time, plus the listing's
   duplicate check (one id per contact).
2. **SendHub creates** with simulator latency at ``max_concurrency``: wall
   time against the bound N x latency / concurrency (goal: within 1.3x).
3. **smsend upserts** (when ``syncd.providers.smsend`` exists): N contacts at
   ``batch_size``; requests (N / batch_size) and wall time.

Usage: ``python bench/clients.py [--contacts 100000] [--creates 1000] [--latency 0.02]
[--concurrency 8] [--upserts 100000] [--batch-size 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from syncd.config import ProviderSettings, Secret
from syncd.model import Contact, ContactWrite
from syncd.providers import build_provider

SECRET_FIELDS = frozenset({"password", "access_token", "session_key", "api_key"})


@contextmanager
def simulator(kind: str, *, contacts: int = 0, latency: float = 0.0) -> Iterator[dict[str, str]]:
    """A simulator process; yields what it prints (base_url, credentials, admin token)."""
    command = [sys.executable, "-m", "syncd.simulators.server", kind, "--contacts", str(contacts), "--seed", "4"]
    command += ["--latency", str(latency)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        info: dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            key, _, value = line.partition(": ")
            info[key.strip()] = value.strip()
            if key == "admin_url":
                break
        if "base_url" not in info:
            raise RuntimeError(f"{kind} simulator did not start (exit code {process.poll()})")
        yield info
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def settings(kind: str, info: dict[str, str], **overrides: Any) -> ProviderSettings:
    fields = {f for f in ProviderSettings.__dataclass_fields__}
    credentials = {k: Secret(v) if k in SECRET_FIELDS else v for k, v in info.items() if k in fields - {"name", "type"}}
    credentials.pop("base_url", None)
    values: dict[str, Any] = dict(name=f"bench-{kind}", type=kind, base_url=info["base_url"], requests_per_second=10_000)
    return ProviderSettings(**(values | credentials | overrides))


def simulator_requests(info: dict[str, str]) -> dict[str, int]:
    """The simulator's own per-endpoint request counts (its admin interface)."""
    root = info["admin_url"].split("/_admin/")[0]
    request = urllib.request.Request(f"{root}/_admin/requests", headers={"X-Admin-Token": info["admin_token"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["counts"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def contact(i: int, phone: str) -> Contact:
    return Contact(id=i, phone=phone, name="Bench", surname=f"Contact{i}", email=f"bench{i}@example.com")


# -- 1. listing -------------------------------------------------------------------------------


async def bench_listing(count: int) -> None:
    print(f"1. SendHub: list {count:,} contacts (simulator in its own process)")
    with simulator("sendhub", contacts=count) as info:
        provider = build_provider(settings("sendhub", info), default_region="US")
        baseline = peak_rss_mb()
        listed, at_tenth = 0, None
        started = time.perf_counter()
        try:
            async for page in provider.contacts():
                listed += len(page)
                if at_tenth is None and listed >= count // 10:
                    at_tenth = (listed, peak_rss_mb())
        finally:
            await provider.aclose()
        elapsed = time.perf_counter() - started
        served = sum(n for key, n in simulator_requests(info).items() if key.startswith("GET /v1/contacts"))
    pages = max(1, math.ceil(count / 1000))
    print(f"   listed {listed:,} in {elapsed:.2f} s ({listed / elapsed:,.0f} contacts/s)")
    print(f"   requests: client {provider.stats.requests}, simulator {served}, page count {pages}"
          f" -> {'OK' if provider.stats.requests == served == pages else 'MISMATCH'}")
    first_n, first_rss = at_tenth or (0, baseline)
    final = peak_rss_mb()
    print(f"   peak RSS: {baseline:.1f} MB before, {first_rss:.1f} MB after {first_n:,}, {final:.1f} MB after {listed:,}"
          f" (growth {first_rss - baseline:.1f} MB, then {final - first_rss:.1f} MB for {listed - first_n:,} more)")


# -- 2. creates -------------------------------------------------------------------------------


async def bench_creates(count: int, latency: float, concurrency: int) -> None:
    bound = count * latency / concurrency
    print(f"2. SendHub: {count:,} creates, {latency * 1000:.0f} ms simulator latency, max_concurrency {concurrency}")
    with simulator("sendhub", latency=latency) as info:
        baseline = await bare_httpx_creates(info, count, concurrency)
        provider = build_provider(settings("sendhub", info, max_concurrency=concurrency), default_region="US")
        writes = [
            ContactWrite(ref=i, phone=phone, fields=provider.project(contact(i, phone)))
            for i, phone in ((i, f"+1289{2_000_000 + i:07d}") for i in range(count))
        ]
        started, cpu = time.perf_counter(), time.process_time()
        try:
            outcomes = await provider.create_contacts(writes)
        finally:
            await provider.aclose()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    failed = [o for o in outcomes if not o.ok]
    print(f"   {count - len(failed):,} created, {len(failed)} failed{f' (first: {failed[0].error})' if failed else ''}")
    print(f"   wall {elapsed:.2f} s vs bound {bound:.2f} s: {elapsed / bound:.2f}x"
          f" ({'within' if elapsed <= 1.3 * bound else 'OVER'} the 1.3x goal); client CPU {cpu:.2f} s")
    print(f"   the same creates from a bare httpx.AsyncClient: wall {baseline[0]:.2f} s, CPU {baseline[1]:.2f} s"
          f" (the client costs {elapsed / baseline[0]:.2f}x its wall time)")


async def bare_httpx_creates(info: dict[str, str], count: int, concurrency: int) -> tuple[float, float]:
    """The floor set by httpx and the simulator on this machine: bare POSTs, same concurrency."""
    auth = {"username": info["username"], "api_key": info["api_key"]}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=info["base_url"], limits=limits, timeout=30) as client:

        async def create(i: int) -> None:
            async with slots:
                body = {"name": f"Bare {i}", "number": f"+1289{5_000_000 + i:07d}"}
                response = await client.post("/contacts/", params=auth, json=body)
                response.raise_for_status()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(create(i) for i in range(count)))
        return time.perf_counter() - started, time.process_time() - cpu


# -- 3. smsend upserts ----------------------------------------------------------------------


async def bench_upserts(count: int, batch_size: int) -> None:
    print(f"3. smsend: {count:,} upserts at batch_size {batch_size}")
    if importlib.util.find_spec("syncd.providers.smsend") is None:
        print("   skipped: syncd/providers/smsend.py does not exist yet")
        return
    with simulator("smsend") as info:
        provider = build_provider(settings("smsend", info, batch_size=batch_size), default_region="IT")
        writes = [
            ContactWrite(ref=i, phone=phone, fields=provider.project(contact(i, phone)))
            for i, phone in ((i, f"+39340{i:07d}") for i in range(count))
        ]
        started = time.perf_counter()
        try:
            outcomes = await provider.create_contacts(writes)
        finally:
            await provider.aclose()
        elapsed = time.perf_counter() - started
        served = sum(n for key, n in simulator_requests(info).items() if key == "POST /API/v1.0/REST/contact")
    failed = [o for o in outcomes if not o.ok]
    expected = math.ceil(count / batch_size)
    print(f"   {count - len(failed):,} upserted, {len(failed)} failed; upsert requests: client {provider.stats.requests}"
          f" (all endpoints), simulator {served}, expected {expected} -> {'OK' if served == expected else 'MISMATCH'}")
    print(f"   wall {elapsed:.2f} s ({count / elapsed:,.0f} contacts/s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--upserts", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows every figure)")
    asyncio.run(bench_listing(args.contacts))  # first: the peak RSS figures are this process's
    asyncio.run(bench_creates(args.creates, args.latency, args.concurrency))
    asyncio.run(bench_upserts(args.upserts, args.batch_size))


if __name__ == "__main__":
    main()
