"""Overhead of a guarded call on SQLite: prints figures, asserts nothing.

    python bench/core_bench.py [--n 20000]

Rows: the bare function, a readonly cache hit, a first-time (miss) call of a
mutating tool, 8 threads on one key (how often the body ran, how long the
slowest caller waited after the owner's body returned), and a follower in
another process. Times are medians and p99s in microseconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tbay_core import TbayClient, guarded  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def time_calls(call: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def bench_single_process(db_url: str, n: int) -> list[tuple[str, float, float, str]]:
    client = TbayClient(db_url)

    def bare(query: str, page: int) -> dict:
        return {"query": query, "page": page, "hits": ["a", "b"]}

    cached = guarded(client, policy="readonly", tool_name="cached")(bare)
    first = guarded(client, policy="mutating", tool_name="first")(bare)
    cached("warm", 1)
    rows = []
    bare_samples = time_calls(lambda i: bare("warm", 1), n)
    rows.append(("bare function", *percentiles(bare_samples), ""))
    hit = time_calls(lambda i: cached("warm", 1), n)
    rows.append(("readonly cache hit", *percentiles(hit), "target <= 30 us median"))
    miss = time_calls(lambda i: first("miss", i), max(2000, n // 10))
    med, p99 = percentiles(miss)
    bare_med = percentiles(bare_samples)[0]
    rows.append(("mutating first call (miss)", med, p99,
                 f"overhead {med - bare_med:.0f} us; target <= 300 us"))
    rows.append(threads_on_one_key(client))
    client.close()
    return rows


def threads_on_one_key(client: TbayClient, threads: int = 8, trials: int = 20) -> tuple[str, float, float, str]:
    runs = {"n": 0}
    body_end: dict[int, float] = {}

    @guarded(client, policy="mutating", tool_name="contended")
    def contended(trial: int) -> int:
        runs["n"] += 1
        time.sleep(0.02)
        body_end[trial] = time.perf_counter()
        return trial

    waits = []
    for trial in range(trials):
        ends: list[float] = []
        barrier = threading.Barrier(threads)

        def worker(trial: int = trial, barrier: threading.Barrier = barrier, ends: list[float] = ends) -> None:
            barrier.wait()
            contended(trial)
            ends.append(time.perf_counter())

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        waits.append((max(ends) - body_end[trial]) * 1e6)
    med, p99 = percentiles(waits)
    return (f"{threads} threads on one key: slowest wait after owner", med, p99,
            f"body ran {runs['n']}x in {trials} trials; target <= 5000 us")


def _owner(db_url: str, token: str, started: multiprocessing.synchronize.Event, end_file: str) -> None:  # type: ignore[name-defined]
    client = TbayClient(db_url)

    @guarded(client, policy="mutating", tool_name="crossproc")
    def slow(token: str) -> str:
        started.set()
        time.sleep(0.2)
        with open(end_file, "w") as handle:
            handle.write(repr(time.time()))
        return token

    slow(token)
    client.close()


def cross_process_follower(db_url: str, trials: int = 10) -> tuple[str, float, float, str]:
    client = TbayClient(db_url)

    @guarded(client, policy="mutating", tool_name="crossproc")
    def slow(token: str) -> str:
        raise AssertionError("the follower must never run the body")

    waits = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        for trial in range(trials):
            end_file = os.path.join(scratch, f"end-{trial}")
            started = context.Event()
            token = f"{os.getpid()}-{trial}-{time.time()}"
            process = context.Process(target=_owner, args=(db_url, token, started, end_file))
            process.start()
            started.wait(30)
            time.sleep(0.02)
            assert slow(token) == token
            returned = time.time()
            process.join()
            with open(end_file) as handle:
                waits.append((returned - float(handle.read())) * 1e6)
    client.close()
    med, p99 = percentiles(waits)
    return ("follower in another process: wait after owner", med, p99, "target <= 50000 us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="calls per timed row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db_url = f"sqlite:///{scratch}/bench.db"
        rows = bench_single_process(db_url, args.n)
        rows.append(cross_process_follower(db_url))
    print(f"tbay_core on SQLite, Python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print(f"{'scenario':<52} {'median us':>10} {'p99 us':>10}  note")
    for name, med, p99, note in rows:
        print(f"{name:<52} {med:>10.1f} {p99:>10.1f}  {note}")


if __name__ == "__main__":
    main()
