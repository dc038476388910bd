"""Many processes on one database: throughput and latency of guarded calls.

    python bench/stress.py [--processes 16] [--calls 200] [--no-postgres]

Each process makes ``--calls`` calls over 50 mutating and 50 readonly keys
(random mix); the body sleeps 1 ms. Prints guarded calls per second and latency
percentiles for SQLite and for a throwaway PostgreSQL server, and checks the
outcome: each mutating key ran once, no row is left RUNNING.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

KEYS = 50


def worker(db_url: str, calls: int, seed: int, start: Any, queue: Any) -> None:
    from tbay_core import TbayClient, guarded

    client = TbayClient(db_url)
    runs: dict[str, int] = {}

    def book(slot: int) -> str:
        runs[f"book-{slot}"] = runs.get(f"book-{slot}", 0) + 1
        time.sleep(0.001)
        return f"booking-{slot}-{os.getpid()}"

    def lookup(slot: int) -> str:
        time.sleep(0.001)
        return f"info-{slot}"

    guarded_book = guarded(client, policy="mutating")(book)
    guarded_lookup = guarded(client, policy="readonly")(lookup)
    rng = random.Random(seed)
    start.wait()
    latencies = []
    seen: dict[int, str] = {}
    began = time.perf_counter()
    for _ in range(calls):
        slot = rng.randrange(KEYS)
        t0 = time.perf_counter()
        if rng.random() < 0.5:
            seen[slot] = guarded_book(slot)
        else:
            guarded_lookup(slot)
        latencies.append((time.perf_counter() - t0) * 1e6)
    queue.put((time.perf_counter() - began, latencies, runs, seen))
    client.close()


def run(db_url: str, processes: int, calls: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    start, queue = context.Event(), context.Queue()
    pool = [context.Process(target=worker, args=(db_url, calls, seed, start, queue)) for seed in range(processes)]
    for process in pool:
        process.start()
    time.sleep(1.0)  # let every process import and connect before the clock starts
    began = time.perf_counter()
    start.set()
    results = [queue.get(timeout=600) for _ in pool]
    wall = time.perf_counter() - began
    for process in pool:
        process.join()
    latencies = sorted(value for _, samples, _, _ in results for value in samples)
    runs: dict[str, int] = {}
    for _, _, process_runs, _ in results:
        for key, count in process_runs.items():
            runs[key] = runs.get(key, 0) + count
    values: dict[int, set[str]] = {}
    for *_, seen in results:
        for slot, value in seen.items():
            values.setdefault(slot, set()).add(value)

    from tbay_core import TbayClient

    with TbayClient(db_url) as client:
        running = len(client.executions(status="RUNNING", limit=None))
    return {
        "calls/s": processes * calls / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[int(len(latencies) * 0.95)],
        "p99": latencies[int(len(latencies) * 0.99)],
        "mutating keys run more than once": sum(1 for count in runs.values() if count > 1),
        "keys whose callers saw different values": sum(1 for v in values.values() if len(v) > 1),
        "rows left RUNNING": running,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        rows.append(("sqlite", run(f"sqlite:///{scratch}/stress.db", args.processes, args.calls)))
    if not args.no_postgres:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from pgserver import PgServer, find_binaries

        bindir = find_binaries()
        if bindir is None:
            raise SystemExit("PostgreSQL binaries not found; install postgresql or pass --no-postgres")
        server = PgServer(bindir)
        server.start()
        try:
            rows.append(("postgres", run(server.fresh_url(), args.processes, args.calls)))
        finally:
            server.remove()
    print(f"{args.processes} processes x {args.calls} calls, {KEYS} mutating + {KEYS} readonly keys, "
          f"{os.cpu_count()} cores\n")
    for name, result in rows:
        print(f"{name:<9} {result['calls/s']:8.0f} calls/s   p50 {result['p50']:8.0f} us   "
              f"p95 {result['p95']:8.0f} us   p99 {result['p99']:8.0f} us")
        print(f"          mutating keys run more than once: {result['mutating keys run more than once']}, "
              f"callers that saw different values: {result['keys whose callers saw different values']}, "
              f"rows left RUNNING: {result['rows left RUNNING']}")


if __name__ == "__main__":
    main()
