"""Child-process workers for the approval and guardrail tests.

Run as ``python -m tests.approval_workers MODE ...`` from the repository root with
``TBAY_DB_URL`` set (the ``subprocess_env`` fixture does both). It reuses the
tool body and the outcome format of ``tests/workers.py`` (one JSON line per call,
every body run appended to an events file), and adds what those tests need and
``tests/workers.py`` does not offer: policies given on the command line as JSON,
so the child guards its tools with exactly the policies the parent built
(``{"name": {"base": "mutating", "max_concurrent": 1, "lease_timeout": 0.6}}``),
and several tools in one ``repl`` child (each request names its tool and policy).

* ``call``: make one call (``--tool``, ``--policy``, ``--arg``), print the outcome.
* ``repl``: one JSON request per stdin line (``{"tool": "x", "policy": "p", "arg": "a"}``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbay_core import TbayClient

try:  # a child: ``python -m tests.approval_workers`` from the repository root
    from tests import workers
except ImportError:  # the test process, where pytest put tests/ itself on sys.path
    import workers  # type: ignore[no-redef]


REPO_ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 30.0
"""Upper bound on any wait for a child; reached only when something is broken."""


def register(client: TbayClient, specs: dict[str, dict[str, Any]]) -> None:
    """Add each ``{name: {"base": BUILTIN, **fields}}`` policy to ``client.policies``."""
    for name, spec in specs.items():
        fields = dict(spec)
        base = fields.pop("base", "mutating")
        client.policies[name] = client.policies[base].copy(name=name, **fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.approval_workers")
    parser.add_argument("mode", choices=("call", "repl"))
    parser.add_argument("--events", required=True, help="file that records every body run")
    parser.add_argument("--policies", default="{}", help="JSON: {name: {base, field: value}}")
    parser.add_argument("--tool", help="tool name (mode call)")
    parser.add_argument("--policy", help="policy name (mode call)")
    parser.add_argument("--arg", default="a", help="the argument of the call (mode call)")
    parser.add_argument("--label", default="", help="prefix of the values the body returns")
    parser.add_argument("--started", help="file the body creates when it starts (mode call)")
    parser.add_argument("--release", help="file the body waits for before returning (mode call)")
    options = parser.parse_args(argv)

    client = TbayClient()
    try:
        register(client, json.loads(options.policies))
        tools: dict[tuple[str, str], Callable[[str], str]] = {}

        def tool(name: str, policy: str, **extra: Any) -> Callable[[str], str]:
            if (name, policy) not in tools:
                tools[name, policy] = workers.make_tool(
                    client, tool=name, policy=policy, events=options.events, label=options.label,
                    **extra,
                )
            return tools[name, policy]

        if options.mode == "call":
            call = tool(options.tool, options.policy, started=options.started,
                        release=options.release)
            print(json.dumps(workers.describe(lambda: call(options.arg))), flush=True)
            return 0
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            call = tool(request["tool"], request["policy"])
            print(json.dumps(workers.describe(lambda call=call, request=request: call(request["arg"]))),
                  flush=True)
        return 0
    finally:
        client.close()


# --------------------------------------------------------------------------- parent side


class Child:
    """One child process running this module; its stdout JSON lines arrive on a queue."""

    def __init__(self, python: str, env: dict[str, str], tmp_path: Path, name: str, mode: str,
                 *, events: Path, policies: dict[str, dict[str, Any]], **options: Any):
        self.name = name
        self.stderr_path = tmp_path / f"{name}.stderr"
        argv = [python, "-m", "tests.approval_workers", mode, "--events", str(events),
                "--policies", json.dumps(policies)]
        for option, value in options.items():
            argv += [f"--{option.replace('_', '-')}", str(value)]
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=REPO_ROOT, text=True, stderr=stderr, stdout=subprocess.PIPE,
                stdin=subprocess.PIPE if mode == "repl" else subprocess.DEVNULL,
            )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def describe(self) -> str:
        stderr = self.stderr_path.read_text() if self.stderr_path.exists() else ""
        return f"child {self.name} (pid {self.pid}, exit {self.proc.poll()}), stderr:\n{stderr}"

    def next_result(self, timeout: float = HANG_GUARD) -> dict[str, Any]:
        """The next JSON line the child printed (one per call)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout:g}s from {self.describe()}") from None
        if line is None:
            raise AssertionError(f"exited without answering: {self.describe()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, **request: Any) -> dict[str, Any]:
        """Make one call in a ``repl`` child and return its outcome."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.next_result()

    def result(self) -> dict[str, Any]:
        """The single answer of a ``call`` child, once it exited cleanly."""
        answer = self.next_result()
        assert self.proc.wait(HANG_GUARD) == 0, self.describe()
        return answer

    def kill9(self) -> None:
        """SIGKILL the child (a crash: no finally, no atexit) and reap it."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc.wait(HANG_GUARD) == -signal.SIGKILL

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def wait_until(condition: Callable[[], Any], what: str, *, watch: tuple[Child, ...] = (),
               timeout: float = HANG_GUARD) -> Any:
    """Poll ``condition`` until it is truthy and return its value; fail early if a child exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for child in watch:
            if child.proc.poll() is not None:
                raise AssertionError(f"waiting for {what}: {child.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s (hang guard)")
        time.sleep(0.002)


def call_in_thread(fn: Callable[[], Any], timeout: float = HANG_GUARD) -> Any:
    """Run a blocking call with a hang guard; return its value or raise its exception."""
    thread, box = start_call(fn)
    return finish_call(thread, box, timeout)


def start_call(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``fn`` in a daemon thread, in a copy of the caller's context (so a ``scope`` set
    by the test applies); :func:`finish_call` collects its outcome."""
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(fn)
        except BaseException as exc:  # handed to the test thread by finish_call
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def finish_call(thread: threading.Thread, box: dict[str, Any], timeout: float = HANG_GUARD) -> Any:
    thread.join(timeout)
    assert not thread.is_alive(), f"the call did not return within {timeout:g}s (hang guard)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def body_starts(events: Path, tool: str) -> list[dict[str, Any]]:
    """Every start of the body of ``tool`` recorded in ``events`` (any process)."""
    return [run for run in workers.body_runs(events, tool) if run["phase"] == "start"]


if __name__ == "__main__":
    sys.exit(main())
