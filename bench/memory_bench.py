"""Peak RSS of one process over 100,000 distinct guarded calls: the client must not grow per call.

    python bench/memory_bench.py [--calls 100000] [--db-url URL]

Prints the resident set size every 10% of the run. Flat numbers after the
warm-up mean the client keeps no per-call state (in-process wake-ups, leases,
redactors and the optional local cache are all released or bounded).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tbay_core import TbayClient, guarded  # noqa: E402


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--db-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        client = TbayClient(args.db_url or f"sqlite:///{scratch}/memory.db")
        client.policies["readonly_local"] = client.policies["readonly"].copy(name="readonly_local",
                                                                               local_cache=True)

        @guarded(client, policy="readonly_local")
        def lookup(item: int, note: str) -> dict:
            return {"item": item, "note": note}

        @guarded(client, policy="mutating")
        def record(item: int) -> int:
            return item

        step = max(1, args.calls // 10)
        print(f"{'calls':>8} {'rss MiB':>8}")
        for i in range(args.calls):
            lookup(i, "x")
            lookup(i, "x")  # a replay (local cache filled, bounded)
            record(i)
            if (i + 1) % step == 0:
                print(f"{i + 1:>8} {rss_mib():>8.1f}", flush=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.1f} MiB after {args.calls} distinct calls ({3 * args.calls} guarded calls)")
        client.close()


if __name__ == "__main__":
    main()
