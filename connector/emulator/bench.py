"""Measure how many profiles per second the emulator ingests over loopback.

    python -m connector.emulator.bench [--requests 30] [--items 10000] [--concurrency 4] [--runs 5]

Starts the emulator as a subprocess (``altcraft-connector emulator --port 0``; ``--in-process`` runs
it in this process instead, sharing the interpreter lock with the client), builds realistic
``workflows/import_and_start_batch`` bodies of new profiles (built before the clock starts), posts
them with httpx over keep-alive connections, checks every answer (HTTP 200, error 0, one result per
item, no per-item error) and prints profiles/s for each run and the median. State is reset between
runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

TOKEN = "bench-token"
WORKFLOW_ID = 7
PATH = "/api/v1.1/workflows/import_and_start_batch"
_OK = b'"error":0,"error_text":"Successful operation"'
_FIRST = ("Anna", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo")
_LAST = ("Ivanova", "Smith", "Novak", "Garcia", "Kowalski", "Petrov", "Muller")
_CITIES = ("Moscow", "Berlin", "Madrid", "Warsaw", "Riga", "Oslo", "Lisbon", "Prague")


def make_body(run: int, request: int, items: int) -> bytes:
    """One request body of ``items`` new profiles, shaped as the connector's demo route maps them
    (email, names, a phone, a birth date, a city, a signup IP, a numeric CRM id): ~150 bytes each."""
    data = []
    for j in range(items):
        n = run * 10_000_000 + request * items + j  # unique within a run (up to 1,000 requests)
        data.append(
            {
                "data": {
                    "email": f"customer{n}@example.com",
                    "_fname": _FIRST[n % len(_FIRST)],
                    "_lname": _LAST[n % len(_LAST)],
                    "phones": f"+7{9_000_000_000 + n:010d}",
                    "_bdate": f"{1950 + n % 55}-{n % 12 + 1:02d}-{n % 28 + 1:02d}",
                    "_city": _CITIES[n % len(_CITIES)],
                    "_regip": f"10.{n % 250}.{n // 250 % 250}.{n % 249 + 1}",
                    "CRM_ID": n,
                }
            }
        )
    return orjson.dumps({"token": TOKEN, "workflow_id": WORKFLOW_ID, "matching": "email", "data": data})


def post_all(client: httpx.Client, bodies: list[bytes], items: int, concurrency: int, run: int) -> float:
    """Post every body, ``concurrency`` at a time; returns the elapsed seconds. Raises on a bad answer."""

    def post(i: int) -> None:
        r = client.post(
            PATH,
            content=bodies[i],
            headers={"Content-Type": "application/json", "Request-ID": f"bench-{run}-{i}"},
        )
        # Checked on the bytes (a byte count is much cheaper than parsing 10,000 results, and the
        # client shares the machine with the emulator): error 0 at the top and for every item.
        body = r.content
        if r.status_code != 200 or body.count(_OK) != items + 1 or body.count(b'"profile_id":"') != items:
            raise RuntimeError(f"request {i}: HTTP {r.status_code}, unexpected answer {body[:200]!r}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(post, range(len(bodies))))
    return time.perf_counter() - start


@contextlib.contextmanager
def emulator_subprocess(workers: int | None) -> Iterator[str]:
    cmd = [
        sys.executable,
        "-m",
        "connector.cli",
        "emulator",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--log-level",
        "WARNING",
        "--request-log-size",
        "1000",
        *(["--workers", str(workers)] if workers is not None else []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("EMULATOR_URL="):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield line.removeprefix("EMULATOR_URL=")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def emulator_in_process(workers: int | None) -> Iterator[str]:
    from connector.emulator.server import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(tokens=[TOKEN], request_log_size=1000, workers=workers or 0)) as emu:
        yield emu.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.emulator.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="requests per run (default 30)")
    parser.add_argument("--items", type=int, default=10_000, help="profiles per request (default 10000)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    parser.add_argument("--in-process", action="store_true", help="run the emulator in this process")
    parser.add_argument(
        "--workers", type=int, default=None, help="the emulator's parse workers (default: its own default)"
    )
    args = parser.parse_args(argv)
    out = sys.stdout
    load = os.getloadavg()[0]
    started = emulator_in_process(args.workers) if args.in_process else emulator_subprocess(args.workers)
    rates: list[float] = []
    with (
        started as url,
        httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=args.concurrency)) as client,
    ):
        for run in range(args.runs):
            bodies = [make_body(run, i, args.items) for i in range(args.requests)]
            mb = sum(len(b) for b in bodies) / args.requests / 1e6
            elapsed = post_all(client, bodies, args.items, args.concurrency, run)
            rate = args.requests * args.items / elapsed
            rates.append(rate)
            out.write(
                f"run {run + 1}/{args.runs}: {args.requests} requests x {args.items} profiles "
                f"({mb:.2f} MB each) in {elapsed:.2f} s = {rate:,.0f} profiles/s\n"
            )
            out.flush()
            client.post("/_emulator/reset").raise_for_status()
    out.write(
        f"median: {statistics.median(rates):,.0f} profiles/s "
        f"({args.items} profiles per request, concurrency {args.concurrency}, {args.runs} runs; "
        f"{os.cpu_count()} CPUs, load average {load:.2f} before the runs)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
