"""Child-process workers for ``tests/test_processes.py``.

Run as ``python -m tests.workers MODE ...`` from the repository root with
``TBAY_DB_URL`` set (the ``subprocess_env`` fixture does both). Every worker
guards one tool, ``tool_body``, under the tool name and policy it is given, and
writes one JSON line to stdout per call it makes:

* ``call``: optionally wait at a file barrier, make one call, print the outcome.
* ``repl``: read one JSON object per stdin line (``{"arg": "a"}``), make that
  call, print the outcome; ends at EOF.

The body records every run durably by appending one line to an events file
(``O_APPEND``), so the parent counts body runs across processes, including
processes it killed mid-body. It can also signal that it started (a file) and
block until the parent releases it (another file).

The test module also loads this file (by path) for :func:`register_policies`,
:func:`make_tool` and :func:`body_runs`, so the parent's own calls use the
very same tool and policies as the children.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbay_core import TbayClient, TbayError, guarded

FAST_LEASE = 0.6
"""Lease of the ``fast_*`` policies: short, so crash recovery happens within a test."""

HANG_GUARD = 30.0
"""How long a worker waits for a file before it gives up (only to avoid hung processes)."""


def register_policies(client: TbayClient) -> None:
    """The short-lease variants of the built-in policies the process tests use."""
    policies = client.policies
    policies["fast_readonly"] = policies["readonly"].copy(name="fast_readonly", lease_timeout=FAST_LEASE)
    policies["fast_mutating"] = policies["mutating"].copy(name="fast_mutating", lease_timeout=FAST_LEASE)
    policies["fast_destructive"] = policies["destructive"].copy(
        name="fast_destructive", lease_timeout=FAST_LEASE, approval_mode="defer"
    )
    policies["retrying_mutating"] = policies["mutating"].copy(
        name="retrying_mutating", lease_timeout=FAST_LEASE, max_retries=1, retry_backoff=0
    )
    # Long enough that a busy two-core machine never lets it lapse between renewals
    # (renewed every third of it), short enough that several renewals are observed quickly.
    policies["beating_mutating"] = policies["mutating"].copy(name="beating_mutating", lease_timeout=1.5)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line with a single O_APPEND write: safe across processes, survives SIGKILL."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def touch(path: str | os.PathLike[str]) -> None:
    Path(path).touch()


def wait_for_file(path: str | os.PathLike[str], timeout: float = HANG_GUARD) -> None:
    """Block until ``path`` exists (polling every millisecond); raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {os.getpid()}: {path} did not appear within {timeout:g}s")
        time.sleep(0.001)


def body_runs(events: str | os.PathLike[str], tool: str | None = None) -> list[dict[str, Any]]:
    """Every recorded body run (``{"tool", "arg", "pid", "phase", "value"}``), in order."""
    if not os.path.exists(events):
        return []
    runs = [json.loads(line) for line in Path(events).read_text().splitlines() if line.strip()]
    return [run for run in runs if tool is None or run["tool"] == tool]


def make_tool(
    client: TbayClient,
    *,
    tool: str,
    policy: str,
    events: str | os.PathLike[str],
    started: str | os.PathLike[str] | None = None,
    release: str | os.PathLike[str] | None = None,
    sleep: float = 0.0,
    label: str = "",
) -> Callable[[str], str]:
    """The guarded tool: records "start", signals ``started``, waits for ``release``, sleeps,
    records "end" and returns a fresh value ``"<label>:<pid>:<uuid>"``."""

    def tool_body(arg: str) -> str:
        pid = os.getpid()
        append_line(events, json.dumps({"tool": tool, "arg": arg, "pid": pid, "phase": "start"}))
        if started is not None:
            touch(started)
        if release is not None:
            wait_for_file(release)
        if sleep:
            time.sleep(sleep)
        value = f"{label}:{pid}:{uuid.uuid4().hex}"
        append_line(events, json.dumps(
            {"tool": tool, "arg": arg, "pid": pid, "phase": "end", "value": value}
        ))
        return value

    return guarded(client, policy=policy, tool_name=tool)(tool_body)


def describe(outcome: Callable[[], Any]) -> dict[str, Any]:
    """Run one call and turn its value or its tbay error into a JSON-friendly dict."""
    try:
        return {"ok": True, "value": outcome()}
    except TbayError as exc:
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            **{
                name: getattr(exc, name)
                for name in ("error_type", "error_message", "execution_id", "reason", "by")
                if hasattr(exc, name)
            },
        }


def spy_on_follow(client: TbayClient, following: str) -> None:
    """Touch ``following`` the first time this process polls an execution another caller runs.

    This only observes: the real ``poll`` runs and its answer is returned
    unchanged. It lets the parent know, without sleeping, that this process
    is following (rather than about to claim or already replaying).
    """
    store = client.store
    real_poll = store.poll

    def poll(execution_id: str) -> Any:
        state = real_poll(execution_id)
        if state is not None and state.status == "RUNNING" and not os.path.exists(following):
            touch(following)
        return state

    store.poll = poll  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workers")
    parser.add_argument("mode", choices=("call", "repl"))
    parser.add_argument("--tool", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--events", required=True, help="file that records every body run")
    parser.add_argument("--arg", default="a", help="the argument of the call (mode call)")
    parser.add_argument("--label", default="", help="prefix of the values the body returns")
    parser.add_argument("--started", help="file the body creates when it starts")
    parser.add_argument("--release", help="file the body waits for before returning")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds the body sleeps")
    parser.add_argument("--ready", help="file to create before waiting for --go")
    parser.add_argument("--go", help="file to wait for before creating the client and calling")
    parser.add_argument("--following", help="file to create once this process follows a run")
    options = parser.parse_args(argv)

    if options.go:  # a barrier: nothing, not even the database, is touched before it opens
        if options.ready:
            touch(options.ready)
        wait_for_file(options.go)
    client = TbayClient()
    try:
        register_policies(client)
        if options.following:
            spy_on_follow(client, options.following)
        call = make_tool(
            client, tool=options.tool, policy=options.policy, events=options.events,
            started=options.started, release=options.release, sleep=options.sleep,
            label=options.label,
        )
        if options.mode == "call":
            print(json.dumps(describe(lambda: call(options.arg))), flush=True)
            return 0
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            print(json.dumps(describe(lambda request=request: call(request["arg"]))), flush=True)
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
