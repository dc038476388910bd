"""tbay_core against its predecessor tbay 0.3.0, same scenarios, same run, side by side.

    python bench/compare.py [--n 5000] [--no-postgres] [--write bench/RESULTS.md]

Installs ``tbay==0.3.0`` into its own virtual environment under
``bench/.venv-tbay030`` (git-ignored; the distribution name clashes with ours,
so it never goes into the project's environment), runs ``scenarios.py`` with it
and with this checkout, on SQLite and on a throwaway PostgreSQL server started
from the local binaries, and prints medians, p99s and the ratio per row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OLD_VENV = HERE / ".venv-tbay030"
ROWS = [
    "bare function",
    "readonly cache hit",
    "readonly cache hit, local_cache",
    "async cache hit",
    "mutating first call",
    "8 threads, one key: slowest wait after owner",
    "cross-process follower: wait after owner",
    "4 processes, distinct keys: latency",
    "4 processes, distinct keys: calls/s",
]


def old_python() -> str:
    """The interpreter of the tbay 0.3.0 environment, created on first use."""
    python = OLD_VENV / "bin" / "python"
    if not python.exists():
        venv.create(OLD_VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "tbay==0.3.0", "psycopg2-binary"],
                       check=True)
    return str(python)


def run_scenarios(python: str, impl: str, db_url: str, n: int, skip: str = "") -> dict[str, Any]:
    command = [python, str(HERE / "scenarios.py"), "--impl", impl, "--db-url", db_url, "--n", str(n)]
    if skip:
        command += ["--skip", skip]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def postgres_urls() -> tuple[Any, str, str]:
    """A throwaway server (tests/pgserver.py) with one database per library."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import psycopg2
    from pgserver import PgServer, find_binaries

    bindir = find_binaries()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found; install postgresql or pass --no-postgres")
    server = PgServer(bindir)
    server.start()
    conn = psycopg2.connect(server.base_url)
    conn.autocommit = True
    for name in ("bench_core", "bench_old"):
        conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    base = server.base_url.rsplit("/", 1)[0]
    return server, f"{base}/bench_core", f"{base}/bench_old"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if unit == "calls/s" or value >= 100 else f"{value:.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| database | scenario | tbay_core median | tbay_core p99 | tbay 0.3.0 median | tbay 0.3.0 p99 | ratio (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for database in ("sqlite", "postgres"):
        if f"{database}/new" not in results:
            continue
        new, old = results[f"{database}/new"], results.get(f"{database}/old", {})
        for row in ROWS:
            if row not in new:
                continue
            unit = "calls/s" if row.endswith("calls/s") else "us"
            if unit == "calls/s":
                a, b = new[row]["rate"], old.get(row, {}).get("rate")
                ratio = f"{a / b:.1f}x more" if b else "-"
                lines.append(f"| {database} | {row} | {fmt(a, unit)} | | {fmt(b, unit)} | | {ratio} |")
                continue
            a, b = new[row], old.get(row)
            ratio = "-"
            if b and row != "bare function" and a["median"] > 0:
                ratio = f"{b['median'] / a['median']:.1f}x faster"
            lines.append(
                f"| {database} | {row} | {fmt(a['median'], unit)} | {fmt(a['p99'], unit)} | "
                f"{fmt(b['median'], unit) if b else '-'} | {fmt(b['p99'], unit) if b else '-'} | {ratio} |"
            )
        runs = f"{new.get('body_runs')}/{new.get('trials')}"
        old_runs = f"{old.get('body_runs')}/{old.get('trials')}" if old else "-"
        lines.append(f"| {database} | 8 threads, one key: body runs per trial | {runs} | | {old_runs} | | |")
    lines.append("")
    lines.append("Times in microseconds. 'mutating first call' minus 'bare function' is the overhead of a miss.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="calls per timed single-process row")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--write", metavar="FILE", help="also write the table as Markdown to FILE")
    args = parser.parse_args()
    old = old_python()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite/new"] = run_scenarios(sys.executable, "tbay_core", f"sqlite:///{scratch}/new.db", args.n)
        results["sqlite/old"] = run_scenarios(old, "tbay030", f"sqlite:///{scratch}/old.db", args.n)
    if not args.no_postgres:
        server, new_url, old_url = postgres_urls()
        try:
            results["postgres/new"] = run_scenarios(sys.executable, "tbay_core", new_url, args.n // 2)
            results["postgres/old"] = run_scenarios(old, "tbay030", old_url, args.n // 2)
        finally:
            server.remove()
    text = table(results)
    print(text)
    if args.write:
        header = (
            f"# Benchmark results\n\nDate: {datetime.date.today().isoformat()}. Machine: "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
            f"{platform.machine()}.\n\nReproduce: `python bench/compare.py --write bench/RESULTS.md` "
            "(from the project's virtual environment, with PostgreSQL server binaries on PATH).\n\n"
        )
        Path(args.write).write_text(header + text + "\n")


if __name__ == "__main__":
    main()
