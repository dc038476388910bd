"""The benchmark scenarios, runnable against tbay_core or against the predecessor tbay 0.3.0.

    python bench/scenarios.py --impl tbay_core --db-url sqlite:////tmp/x.db [--n 5000]

Both libraries expose ``TbayClient(url)`` and ``guarded(client, policy=...)``, so
one script measures both the same way. It prints one JSON object: for each
scenario, the samples' median and p99 in microseconds (or calls per second).
``compare.py`` runs it once per library and database and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

IMPL: Any = None


def load(impl: str) -> Any:
    """Import the library under test: ``tbay_core`` (this repo) or ``tbay`` (0.3.0)."""
    if impl == "tbay_core":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        return importlib.import_module("tbay_core")
    return importlib.import_module("tbay")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "n": len(ordered)}


def timed(call: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def tool_body(query: str, page: int) -> dict[str, Any]:
    return {"query": query, "page": page, "hits": ["a", "b"]}


def scenario_single(client: Any, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    cached = IMPL.guarded(client, policy="readonly", tool_name=f"cached_{run}")(tool_body)
    first = IMPL.guarded(client, policy="mutating", tool_name=f"first_{run}")(tool_body)
    cached("warm", 1)
    out = {
        "bare function": summary(timed(lambda i: tool_body("warm", 1), n)),
        "readonly cache hit": summary(timed(lambda i: cached("warm", 1), n)),
        "mutating first call": summary(timed(lambda i: first(f"miss-{run}", i), max(500, n // 5))),
    }

    async def async_body(query: str, page: int) -> dict[str, Any]:
        return tool_body(query, page)

    async_cached = IMPL.guarded(client, policy="readonly", tool_name=f"acached_{run}")(async_body)

    async def async_hits() -> list[float]:
        await async_cached("warm", 1)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await async_cached("warm", 1)
            samples.append((time.perf_counter() - started) * 1e6)
        return samples

    out["async cache hit"] = summary(asyncio.run(async_hits()))
    return out


def scenario_threads(client: Any, threads: int = 8, trials: int = 10) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    runs = {"n": 0}
    body_end: dict[int, float] = {}
    lock = threading.Lock()

    def contended(trial: int) -> int:
        with lock:
            runs["n"] += 1
        time.sleep(0.05)
        body_end[trial] = time.perf_counter()
        return trial

    guarded = IMPL.guarded(client, policy="mutating", tool_name=f"contended_{run}")(contended)
    waits = []
    for trial in range(trials):
        ends: list[float] = []
        barrier = threading.Barrier(threads)

        def worker(trial: int = trial, barrier: threading.Barrier = barrier, ends: list[float] = ends) -> None:
            barrier.wait()
            guarded(trial)
            ends.append(time.perf_counter())

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        waits.append((max(ends) - body_end[trial]) * 1e6)
    return {"8 threads, one key: slowest wait after owner": summary(waits), "body_runs": runs["n"],
            "trials": trials}


def _owner(impl: str, db_url: str, tool: str, token: str, started: Any, end_file: str) -> None:
    global IMPL
    IMPL = load(impl)
    client = IMPL.TbayClient(db_url)

    def slow(token: str) -> str:
        started.set()
        time.sleep(0.3)
        with open(end_file, "w") as handle:
            handle.write(repr(time.time()))
        return token

    IMPL.guarded(client, policy="mutating", tool_name=tool)(slow)(token)


def scenario_cross_process(impl: str, client: Any, db_url: str, trials: int = 8) -> dict[str, Any]:
    tool = f"crossproc_{uuid.uuid4().hex[:8]}"

    def slow(token: str) -> str:
        raise AssertionError("the follower must never run the body")

    follower = IMPL.guarded(client, policy="mutating", tool_name=tool)(slow)
    context = multiprocessing.get_context("spawn")
    waits = []
    with tempfile.TemporaryDirectory() as scratch:
        for trial in range(trials):
            end_file = os.path.join(scratch, f"end-{trial}")
            started = context.Event()
            token = uuid.uuid4().hex
            process = context.Process(target=_owner, args=(impl, db_url, tool, token, started, end_file))
            process.start()
            started.wait(60)
            time.sleep(0.05)
            assert follower(token) == token
            returned = time.time()
            process.join()
            with open(end_file) as handle:
                waits.append((returned - float(handle.read())) * 1e6)
    return {"cross-process follower: wait after owner": summary(waits)}


def _throughput_worker(impl: str, db_url: str, tool: str, worker: int, seconds: float, queue: Any) -> None:
    global IMPL
    IMPL = load(impl)
    client = IMPL.TbayClient(db_url)
    guarded = IMPL.guarded(client, policy="mutating", tool_name=tool)(tool_body)
    deadline = time.perf_counter() + seconds
    count = 0
    latencies = []
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        guarded(f"w{worker}", count)
        latencies.append((time.perf_counter() - started) * 1e6)
        count += 1
    queue.put((count, latencies))


def scenario_throughput(impl: str, db_url: str, processes: int = 4, seconds: float = 3.0) -> dict[str, Any]:
    tool = f"throughput_{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_throughput_worker, args=(impl, db_url, tool, w, seconds, queue))
               for w in range(processes)]
    for process in workers:
        process.start()
    results = [queue.get(timeout=120) for _ in workers]
    for process in workers:
        process.join()
    total = sum(count for count, _ in results)
    latencies = [value for _, samples in results for value in samples]
    return {"4 processes, distinct keys: calls/s": {"rate": total / seconds},
            "4 processes, distinct keys: latency": summary(latencies)}


def scenario_local_cache(client: Any, n: int) -> dict[str, Any]:
    """tbay_core only: the opt-in in-process LRU for readonly results."""
    policy = client.policies["readonly"].copy(name="readonly_local", local_cache=True)
    client.policies["readonly_local"] = policy
    cached = IMPL.guarded(client, policy="readonly_local", tool_name=f"local_{uuid.uuid4().hex[:8]}")(tool_body)
    cached("warm", 1)
    return {"readonly cache hit, local_cache": summary(timed(lambda i: cached("warm", 1), n))}


def main() -> None:
    global IMPL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["tbay_core", "tbay030"], required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--skip", default="", help="comma-separated scenario groups to skip")
    args = parser.parse_args()
    IMPL = load(args.impl)
    skip = set(filter(None, args.skip.split(",")))
    client = IMPL.TbayClient(args.db_url)
    results: dict[str, Any] = {}
    results.update(scenario_single(client, args.n))
    if args.impl == "tbay_core":
        results.update(scenario_local_cache(client, args.n))
    results.update(scenario_threads(client))
    if "cross" not in skip:
        results.update(scenario_cross_process(args.impl, client, args.db_url))
    if "throughput" not in skip:
        results.update(scenario_throughput(args.impl, args.db_url))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
