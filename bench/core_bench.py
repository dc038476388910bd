"""Overhead of a guarded call on SQLite, as a table: prints figures, asserts nothing.

    python bench/core_bench.py [--n 20000]

Rows: the bare function, a readonly cache hit (and with ``local_cache``), an
async cache hit, a first-time (miss) call of a mutating tool, 8 threads on one
key (how often the body ran, how long the slowest caller waited after the
owner's body returned), and a follower in another process. Medians and p99s in
microseconds. The scenarios are those of ``scenarios.py``, which
``compare.py`` also runs against tbay 0.3.0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402

TARGETS = {
    "readonly cache hit": "target <= 30 us median",
    "mutating first call": "target <= 300 us over the bare function",
    "8 threads, one key: slowest wait after owner": "target <= 5,000 us",
    "cross-process follower: wait after owner": "target <= 50,000 us",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="calls per timed row")
    args = parser.parse_args()
    scenarios.IMPL = scenarios.load("tbay_core")
    with tempfile.TemporaryDirectory() as scratch:
        db_url = f"sqlite:///{scratch}/bench.db"
        client = scenarios.IMPL.TbayClient(db_url)
        rows = scenarios.scenario_single(client, args.n)
        rows.update(scenarios.scenario_local_cache(client, args.n))
        rows.update(scenarios.scenario_threads(client))
        rows.update(scenarios.scenario_cross_process("tbay_core", client, db_url))
        client.close()
    print(f"tbay_core on SQLite, Python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print(f"{'scenario':<48} {'median us':>10} {'p99 us':>10}  note")
    for name, figures in rows.items():
        if isinstance(figures, dict):
            print(f"{name:<48} {figures['median']:>10.1f} {figures['p99']:>10.1f}  {TARGETS.get(name, '')}")
    print(f"\n8 threads on one key: the body ran {rows['body_runs']} times in {rows['trials']} trials")


if __name__ == "__main__":
    main()
