"""Child-process helpers for ``tests/test_postgres.py``.

Run as ``python -m tests.pg_workers MODE ...`` from the repository root (the
database URL comes from ``--db-url`` or ``TBAY_DB_URL``). Every mode prints
exactly one JSON line on stdout when it is done, so the parent reads one answer
per child:

* ``call``: optionally wait at a file barrier (``--ready``/``--go``), create a
  :class:`TbayClient`, make one call of the tool ``--tool`` under ``--policy``
  and print the outcome. ``--poll-cap`` sets ``client.store.poll_interval_cap``
  and ``--spy FILE`` records, one JSON line per read, every time this process
  re-reads an execution it waits on (see :func:`spy_on_waits`), so the parent
  knows the child is waiting, and whether it was woken by a notification.
* ``stress``: wait at the barrier, then make ``--calls`` calls over
  ``--mutating-keys`` keys of a ``mutating`` tool and ``--readonly-keys`` keys
  of a ``readonly`` tool, in a seeded random order, and print every answer.

Every body run appends one line to the ``--events`` file with a single
``O_APPEND`` write *before* it does anything else, carrying the fresh value it
will return, so the parent counts body runs across processes and compares
every caller's answer with the value the owner produced.

The test module imports this file too, so the parent's own calls use the very
same tool bodies and argument names (and so the same keys) as the children.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from tbay_core import TbayClient, TbayError, guarded

try:  # a child started with ``python -m tests.pg_workers`` from the repository root
    from tests.workers import append_line, touch, wait_for_file
except ImportError:  # the test process, where pytest put tests/ itself on sys.path
    from workers import append_line, touch, wait_for_file  # type: ignore[no-redef]



def read_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (none when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]




def make_tool(client: TbayClient, *, tool: str, policy: str, events: str | os.PathLike[str],
              started: str | os.PathLike[str] | None = None,
              release: str | os.PathLike[str] | None = None) -> Callable[[str], str]:
    """The guarded tool ``tool``: records its run (with the value it will return) in ``events``,
    touches ``started``, waits for ``release`` to exist, and returns a fresh uuid."""

    def tool_body(arg: str) -> str:
        value = uuid.uuid4().hex
        append_line(events, json.dumps({"tool": tool, "arg": arg, "pid": os.getpid(), "value": value}))
        if started is not None:
            touch(started)
        if release is not None:
            wait_for_file(release)
        return value

    return guarded(client, policy=policy, tool_name=tool)(tool_body)


def describe(outcome: Callable[[], Any]) -> dict[str, Any]:
    """Run one call; its value, or its tbay error as a JSON-friendly dict."""
    try:
        return {"ok": True, "value": outcome()}
    except TbayError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc),
                "error_type": getattr(exc, "error_type", None)}


def spy_on_waits(client: TbayClient, log: str | os.PathLike[str]) -> list[str | None]:
    """Record how this process waits on other callers' executions; only observes.

    Each re-read of a waited-on execution appends ``{"execution_id", "status",
    "approved", "woken"}`` to ``log``, where ``woken`` says whether the wait that
    preceded this read ended because the in-process wake-up future fired (a
    notification arrived) rather than because its timeout ran out. The real
    ``subscribe`` and ``poll`` run and their answers are returned unchanged.

    Returns the list the store's public :meth:`watch` hook fills with every
    execution id this process hears about through LISTEN/NOTIFY.
    """
    store, wakeups = client.store, client.engine.wakeups
    real_subscribe, real_poll = wakeups.subscribe, store.poll
    last: dict[str, Any] = {"future": None, "woken": False}

    def subscribe(execution_id: str) -> Future[None]:
        previous = last["future"]
        last["woken"] = previous is not None and previous.done()
        future = real_subscribe(execution_id)
        last["future"] = future
        return future

    def poll(execution_id: str) -> Any:
        state = real_poll(execution_id)
        append_line(log, json.dumps({
            "execution_id": execution_id,
            "status": None if state is None else state.status,
            "approved": None if state is None else state.approved,
            "woken": last["woken"],
        }))
        return state

    wakeups.subscribe = subscribe  # type: ignore[method-assign]
    store.poll = poll  # type: ignore[method-assign]
    heard: list[str | None] = []
    store.watch(heard.append)
    return heard


def _barrier(options: argparse.Namespace) -> None:
    if options.go:  # nothing, not even the database, is touched before the barrier opens
        if options.ready:
            touch(options.ready)
        wait_for_file(options.go)


def run_call(options: argparse.Namespace) -> dict[str, Any]:
    _barrier(options)
    client = TbayClient(options.db_url)
    try:
        heard: list[str | None] = []
        if options.poll_cap is not None:
            client.store.poll_interval_cap = options.poll_cap
        if options.spy:
            heard = spy_on_waits(client, options.spy)
        call = make_tool(client, tool=options.tool, policy=options.policy, events=options.events,
                         started=options.started, release=options.release)
        answer = describe(lambda: call(options.arg))
        answer["heard"] = heard
        return answer
    finally:
        client.close()


def run_stress(options: argparse.Namespace) -> dict[str, Any]:
    client = TbayClient(options.db_url)
    try:
        mutating = make_tool(client, tool="stress_mutating", policy="mutating", events=options.events)
        readonly = make_tool(client, tool="stress_readonly", policy="readonly", events=options.events)
        rng = random.Random(options.seed)
        plan = [
            ("mutating", f"m{rng.randrange(options.mutating_keys)}") if rng.random() < 0.5
            else ("readonly", f"r{rng.randrange(options.readonly_keys)}")
            for _ in range(options.calls)
        ]
        _barrier(options)
        answers = []
        for kind, key in plan:
            call = mutating if kind == "mutating" else readonly
            answers.append([kind, key, describe(lambda call=call, key=key: call(key))])
        return {"ok": True, "pid": os.getpid(), "answers": answers}
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pg_workers")
    parser.add_argument("mode", choices=("call", "stress"))
    parser.add_argument("--db-url", default=os.environ.get("TBAY_DB_URL"))
    parser.add_argument("--events", required=True, help="file every body run appends a line to")
    parser.add_argument("--ready", help="file to create before waiting for --go")
    parser.add_argument("--go", help="file to wait for before touching the database")
    # call
    parser.add_argument("--tool", default="pg_tool")
    parser.add_argument("--policy", default="mutating")
    parser.add_argument("--arg", default="a")
    parser.add_argument("--started", help="file the body creates when it starts")
    parser.add_argument("--release", help="file the body waits for before returning")
    parser.add_argument("--poll-cap", type=float, help="set client.store.poll_interval_cap")
    parser.add_argument("--spy", help="file recording every re-read of a waited-on execution")
    # stress
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--mutating-keys", type=int, default=50)
    parser.add_argument("--readonly-keys", type=int, default=50)
    options = parser.parse_args(argv)
    if not options.db_url:
        parser.error("give --db-url or set TBAY_DB_URL")
    answer = run_call(options) if options.mode == "call" else run_stress(options)
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
