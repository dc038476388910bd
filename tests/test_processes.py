"""Separate processes sharing one real SQLite file: singleflight, crash recovery, fencing, controls.

Children are real interpreters (``python -m tests.workers``, see ``tests/workers.py``);
crashes are ``SIGKILL`` of a real owner, stalls are ``SIGSTOP``. Every body run is
appended to an events file, so the tests count runs across processes. Nothing
asserts on time: timeouts only keep a broken build from hanging, and waits are
for observable facts (a file exists, a lease was renewed), not for sleeps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tbay_core import ApprovalPending, ExecutionFailed, TbayClient

REPO_ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("tbay_test_workers", Path(__file__).with_name("workers.py"))
assert _spec is not None and _spec.loader is not None
workers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(workers)

LEASE = workers.FAST_LEASE
HANG_GUARD = 30.0
"""Upper bound on any wait in this file; reached only when something is broken."""

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL / SIGSTOP")


# --------------------------------------------------------------------------- harness


class Worker:
    """One child process running ``tests.workers``; its stdout JSON lines arrive on a queue."""

    def __init__(self, python: str, env: dict[str, str], tmp_path: Path, name: str,
                 mode: str, options: dict[str, Any]):
        self.name = name
        self.stderr_path = tmp_path / f"{name}.stderr"
        argv = [python, "-m", "tests.workers", mode]
        for option, value in options.items():
            argv += [f"--{option}", str(value)]
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

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return f"worker {self.name} (pid {self.pid}, exit {self.proc.poll()}), stderr:\n{self.stderr()}"

    def next_result(self, timeout: float = HANG_GUARD) -> dict[str, Any]:
        """The next JSON line the worker printed (one per call)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no answer within {timeout:g}s from {self.describe()}")
        if line is None:
            pytest.fail(f"exited without answering: {self.describe()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, **request: Any) -> None:
        """Ask a ``repl`` worker to make one call (read its answer with :meth:`next_result`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def ask(self, **request: Any) -> dict[str, Any]:
        self.send(**request)
        return self.next_result()

    def result(self) -> dict[str, Any]:
        """The single answer of a ``call`` worker, once it exited cleanly."""
        answer = self.next_result()
        try:
            code = self.proc.wait(HANG_GUARD)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit after answering: {self.describe()}")
        assert code == 0, self.describe()
        return answer

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL the worker (a crash: no finally, no atexit) and reap it."""
        self.signal(signal.SIGKILL)
        assert self.proc.wait(HANG_GUARD) == -signal.SIGKILL

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(self.pid, signum)
                except ProcessLookupError:
                    break
            self.proc.wait(HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """The file every body run (in any process) appends a line to."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def spawn(python: str, subprocess_env: dict[str, str], tmp_path: Path,
          events: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers on this test's database; any still running at the end is killed."""
    started: list[Worker] = []

    def start(mode: str, *, name: str, **options: Any) -> Worker:
        options.setdefault("events", events)
        worker = Worker(python, subprocess_env, tmp_path, name, mode,
                        {key.replace("_", "-"): value for key, value in options.items()})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.cleanup()


def wait_until(condition: Callable[[], bool], what: str, *, watch: tuple[Worker, ...] = (),
               timeout: float = HANG_GUARD) -> None:
    """Poll ``condition``; fail early (with its stderr) when a watched worker exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        for worker in watch:
            if worker.proc.poll() is not None:
                pytest.fail(f"waiting for {what}: {worker.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.001)


def call_in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    """Run a blocking guarded call with a hang guard; return its value or raise its exception."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the call did not return within {timeout:g}s (hang guard)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def starts(events: Path, tool: str) -> list[dict[str, Any]]:
    return [run for run in workers.body_runs(events, tool) if run["phase"] == "start"]


def ends(events: Path, tool: str) -> list[dict[str, Any]]:
    return [run for run in workers.body_runs(events, tool) if run["phase"] == "end"]


def attempts(client: TbayClient, tool: str) -> list[Any]:
    """The audit rows of ``tool``, oldest attempt first."""
    return sorted(client.executions(tool=tool, limit=None), key=lambda e: (e.attempt, e.created_at))


@pytest.fixture
def parent(client: TbayClient) -> TbayClient:
    """The test's own client (database created and migrated before any child starts)."""
    workers.register_policies(client)
    return client


def start_and_wait_for_body(spawn: Callable[..., Worker], tmp_path: Path, *, tool: str,
                            policy: str, name: str = "owner", **options: Any) -> Worker:
    """Start a ``call`` worker whose body blocks (until ``release``), and wait until it runs."""
    started = tmp_path / f"{name}.started"
    options.setdefault("release", tmp_path / f"{name}.never")
    owner = spawn("call", name=name, tool=tool, policy=policy, started=started, label=name, **options)
    wait_until(started.exists, f"{name}'s body to start", watch=(owner,))
    return owner


# --------------------------------------------------------------------------- singleflight


def test_eight_processes_on_one_mutating_key_run_the_body_once(spawn, parent, tmp_path, events):
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(8)]
    hammers = [
        spawn("call", name=f"hammer-{i}", tool="hammer", policy="mutating", arg="same",
              sleep=0.3, label=f"hammer-{i}", ready=ready[i], go=go)
        for i in range(8)
    ]
    wait_until(lambda: all(path.exists() for path in ready), "all 8 workers at the barrier",
               watch=tuple(hammers))
    go.touch()

    answers = [worker.result() for worker in hammers]

    assert all(answer["ok"] for answer in answers), answers
    values = {answer["value"] for answer in answers}
    assert len(values) == 1, answers
    assert len(starts(events, "hammer")) == 1
    assert [run["value"] for run in ends(events, "hammer")] == list(values)
    rows = attempts(parent, "hammer")
    assert [(row.status, row.attempt) for row in rows] == [("SUCCEEDED", 1)]


def test_a_follower_in_another_process_gets_the_slow_owners_value(spawn, parent, tmp_path, events):
    release = tmp_path / "release"
    following = tmp_path / "following"
    owner = start_and_wait_for_body(spawn, tmp_path, tool="slow", policy="beating_mutating",
                                    release=release)
    (execution,) = parent.executions(tool="slow")
    follower = spawn("call", name="follower", tool="slow", policy="beating_mutating",
                     following=following, label="follower")
    wait_until(following.exists, "the follower to poll the running execution", watch=(owner, follower))

    # Keep the owner busy past its first lease: its heartbeat must keep the follower waiting.
    lease = parent.policies["beating_mutating"].lease_timeout
    first_lease = parent.get(execution.id).lease_expires_at
    assert first_lease is not None
    wait_until(
        lambda: (parent.get(execution.id).lease_expires_at or first_lease).timestamp()
        > first_lease.timestamp() + lease,
        "the owner's heartbeat to renew its lease beyond one lease period", watch=(owner, follower),
    )
    assert follower.proc.poll() is None  # still following
    release.touch()

    owned, followed = owner.result(), follower.result()
    assert owned["ok"] and followed["ok"], (owned, followed)
    assert followed["value"] == owned["value"]
    assert owned["value"].startswith(f"owner:{owner.pid}:")
    assert [run["pid"] for run in starts(events, "slow")] == [owner.pid]
    rows = attempts(parent, "slow")
    assert [(row.id, row.status) for row in rows] == [(execution.id, "SUCCEEDED")]


# --------------------------------------------------------------------------- crashes


def test_kill_9_of_a_readonly_owner_reruns_the_call(spawn, parent, tmp_path, events):
    owner = start_and_wait_for_body(spawn, tmp_path, tool="search", policy="fast_readonly")
    (first,) = parent.executions(tool="search")
    assert first.status == "RUNNING"
    owner.kill9()

    search = workers.make_tool(parent, tool="search", policy="fast_readonly", events=events,
                               label="parent")
    value = call_in_thread(lambda: search("a"), timeout=10 * LEASE)

    assert value.startswith(f"parent:{os.getpid()}:")
    assert [run["pid"] for run in starts(events, "search")] == [owner.pid, os.getpid()]
    rows = attempts(parent, "search")
    assert [(row.attempt, row.status) for row in rows] == [(1, "LOST"), (2, "SUCCEEDED")]
    assert rows[0].id == first.id
    assert rows[0].error_type == "OwnerLost"
    # Another process now replays the rerun's result.
    later = spawn("call", name="later", tool="search", policy="fast_readonly", label="later").result()
    assert later == {"ok": True, "value": value}
    assert len(starts(events, "search")) == 2


def test_kill_9_of_a_mutating_owner_is_lost_and_never_rerun(spawn, parent, tmp_path, events):
    owner = start_and_wait_for_body(spawn, tmp_path, tool="charge", policy="fast_mutating")
    (first,) = parent.executions(tool="charge")
    owner.kill9()

    charge = workers.make_tool(parent, tool="charge", policy="fast_mutating", events=events,
                               label="parent")
    with pytest.raises(ExecutionFailed) as caught:
        call_in_thread(lambda: charge("a"), timeout=10 * LEASE)

    failure = caught.value
    assert failure.error_type == "OwnerLost"
    assert failure.execution_id == first.id
    assert "stopped renewing its lease" in failure.error_message
    message = str(failure)
    for part in ("'charge'", first.id, "OwnerLost", f"tbay forget {first.id}"):
        assert part in message, message
    lost = parent.get(first.id)
    assert (lost.status, lost.error_type, lost.attempt) == ("LOST", "OwnerLost", 1)
    assert lost.finished_at is not None

    # Yet another process gets the same failure replayed, and the body still ran only once.
    replayed = spawn("call", name="replayer", tool="charge", policy="fast_mutating").result()
    assert replayed["ok"] is False, replayed
    assert (replayed["error"], replayed["error_type"], replayed["execution_id"]) == (
        "ExecutionFailed", "OwnerLost", first.id)
    with pytest.raises(ExecutionFailed) as again:
        charge("a")
    assert again.value.execution_id == first.id
    assert [run["pid"] for run in starts(events, "charge")] == [owner.pid]
    assert [row.id for row in attempts(parent, "charge")] == [first.id]


def test_kill_9_of_an_approved_destructive_owner_goes_back_to_a_human(spawn, parent, tmp_path, events):
    started = tmp_path / "owner.started"
    owner = spawn("repl", name="owner", tool="refund", policy="fast_destructive", label="owner",
                  started=started, release=tmp_path / "never")
    pending = owner.ask(arg="a")
    assert pending["error"] == "ApprovalPending", pending
    first_id = pending["execution_id"]
    parent.approve(first_id, by="ops", reason="looks right")
    owner.send(arg="a")  # the approved call now runs in the owner...
    wait_until(started.exists, "the approved body to start", watch=(owner,))
    owner.kill9()  # ...and dies mid-call

    refund = workers.make_tool(parent, tool="refund", policy="fast_destructive", events=events,
                               label="parent")
    with pytest.raises(ApprovalPending) as caught:
        call_in_thread(lambda: refund("a"), timeout=10 * LEASE)

    second_id = caught.value.execution_id
    assert second_id and second_id != first_id
    assert "stopped heartbeating" in str(caught.value)
    lost = parent.get(first_id)
    assert (lost.status, lost.error_type, lost.attempt) == ("LOST", "OwnerLost", 1)
    waiting = parent.get(second_id)
    assert (waiting.status, waiting.attempt) == ("WAITING_APPROVAL", 2)
    assert first_id in (waiting.approval_reason or "")
    assert [execution.id for execution in parent.pending()] == [second_id]
    assert len(starts(events, "refund")) == 1  # nobody re-ran it behind the human's back

    parent.approve(second_id, by="ops", reason="the first refund never went out")
    value = call_in_thread(lambda: refund("a"), timeout=HANG_GUARD)

    assert value.startswith(f"parent:{os.getpid()}:")
    done = parent.get(second_id)
    assert (done.status, done.decided_by) == ("SUCCEEDED", "ops")
    assert [run["pid"] for run in starts(events, "refund")] == [owner.pid, os.getpid()]
    assert refund("a") == value  # replayed from now on


def test_a_stalled_owner_cannot_overwrite_the_result_of_the_owner_that_took_over(
        spawn, parent, tmp_path, events):
    release = tmp_path / "release"
    owner = start_and_wait_for_body(spawn, tmp_path, tool="lookup", policy="fast_readonly",
                                    name="A", release=release)
    (first,) = parent.executions(tool="lookup")
    # Stop the owner right after a lease renewal committed, so it is not stopped mid-write
    # holding a lock (SQLite's write lock, a PostgreSQL row lock) that would block every
    # other writer: that is a different scenario from the one tested here.
    granted = parent.get(first.id).lease_expires_at
    wait_until(lambda: parent.get(first.id).lease_expires_at != granted,
               "a heartbeat of the owner", watch=(owner,))
    owner.signal(signal.SIGSTOP)

    lookup = workers.make_tool(parent, tool="lookup", policy="fast_readonly", events=events, label="B")
    value_b = call_in_thread(lambda: lookup("a"), timeout=10 * LEASE)
    assert value_b.startswith("B:")
    assert parent.get(first.id).status == "LOST"

    owner.signal(signal.SIGCONT)
    release.touch()
    answer = owner.result()

    # The stalled owner's caller still gets its own function's real value...
    assert answer["ok"], answer
    value_a = answer["value"]
    assert value_a.startswith(f"A:{owner.pid}:") and value_a != value_b
    assert {run["value"] for run in ends(events, "lookup")} == {value_a, value_b}
    assert "taken over" in owner.stderr()
    # ...but the stored outcome stays B's, and attempt 1 stays LOST.
    rows = attempts(parent, "lookup")
    assert [(row.attempt, row.status) for row in rows] == [(1, "LOST"), (2, "SUCCEEDED")]
    assert rows[0].id == first.id
    assert lookup("a") == value_b
    later = spawn("call", name="later", tool="lookup", policy="fast_readonly", label="later").result()
    assert later == {"ok": True, "value": value_b}
    assert len(starts(events, "lookup")) == 2


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("round_", range(3))
def test_processes_starting_together_on_a_new_database_all_succeed(spawn, db_url, tmp_path, events,
                                                                   round_):
    """Six processes create the schema at once (a new SQLite file, or a new PostgreSQL schema)."""
    sqlite_path = Path(db_url[len("sqlite:///"):]) if db_url.startswith("sqlite:") else None
    assert sqlite_path is None or not sqlite_path.exists()
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(6)]
    booters = [
        spawn("call", name=f"boot-{i}", tool="boot", policy="mutating", arg=f"p{i}",
              label=f"boot-{i}", ready=ready[i], go=go)
        for i in range(6)
    ]
    wait_until(lambda: all(p.exists() for p in ready), "all 6 workers at the barrier",
               watch=tuple(booters))
    assert sqlite_path is None or not sqlite_path.exists()  # nobody opened it before the barrier
    go.touch()

    answers = [worker.result() for worker in booters]

    assert all(answer["ok"] for answer in answers), answers
    assert len({answer["value"] for answer in answers}) == 6
    assert len(starts(events, "boot")) == 6
    if sqlite_path is not None:
        raw = sqlite3.connect(sqlite_path)
        try:
            assert len(raw.execute("SELECT id, version FROM tbay_schema_version").fetchall()) == 1
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            raw.close()
    with TbayClient(db_url) as client:
        rows = client.executions(tool="boot", limit=None)
    assert sorted(row.args["arg"] for row in rows) == [f"p{i}" for i in range(6)]
    assert {row.status for row in rows} == {"SUCCEEDED"}


# --------------------------------------------------------------------------- operator controls


def test_pausing_a_tool_stops_new_calls_in_other_processes_but_not_replays(spawn, parent, events):
    child = spawn("repl", name="child", tool="x", policy="mutating", label="child")
    cached = child.ask(arg="cached")
    assert cached["ok"], cached

    parent.pause(tool="x", reason="incident", by="ops")
    refused = child.ask(arg="fresh")
    assert (refused["ok"], refused["error"], refused["reason"], refused["by"]) == (
        False, "ToolPaused", "incident", "ops")
    assert "'x'" in refused["message"] and "incident" in refused["message"]
    assert child.ask(arg="cached") == cached  # a stored result is still served while paused
    assert [run["arg"] for run in starts(events, "x")] == ["cached"]

    parent.resume("x")
    ran = child.ask(arg="fresh")
    assert ran["ok"] and ran["value"] != cached["value"], ran
    assert [run["arg"] for run in starts(events, "x")] == ["cached", "fresh"]
    # The refused call left no row behind that could poison its key.
    assert sorted(row.args["arg"] for row in parent.executions(tool="x")) == ["cached", "fresh"]
    assert {row.status for row in parent.executions(tool="x")} == {"SUCCEEDED"}


def test_a_global_pause_stops_every_tool_in_other_processes(spawn, parent, events):
    child = spawn("repl", name="child", tool="y", policy="fast_readonly", label="child")
    parent.pause(reason="maintenance", by="ops")
    refused = child.ask(arg="a")
    assert (refused["error"], refused["reason"], refused["by"]) == ("ToolPaused", "maintenance", "ops")
    parent.resume()
    ran = child.ask(arg="a")
    assert ran["ok"], ran
    assert [run["arg"] for run in starts(events, "y")] == ["a"]


# --------------------------------------------------------------------------- found in review


def test_the_caller_that_finds_a_crash_retries_it_when_the_policy_allows(spawn, parent, tmp_path, events):
    """A crash under after_crash=fail with max_retries=1, retry_backoff=0: the caller that finds it retries."""
    owner = start_and_wait_for_body(spawn, tmp_path, tool="book", policy="retrying_mutating")
    owner.kill9()

    book = workers.make_tool(parent, tool="book", policy="retrying_mutating", events=events,
                             label="parent")
    retried = call_in_thread(lambda: book("a"), timeout=10 * LEASE)

    assert retried.startswith("parent:")
    assert book("a") == retried  # and the retry's result is what is replayed afterwards
    assert [(row.attempt, row.status) for row in attempts(parent, "book")] == [
        (1, "LOST"), (2, "SUCCEEDED")]


def test_a_stalled_mutating_owner_marked_lost_records_what_really_happened(
        spawn, parent, tmp_path, events):
    release = tmp_path / "release"
    owner = start_and_wait_for_body(spawn, tmp_path, tool="send", policy="fast_mutating",
                                    name="A", release=release)
    (first,) = parent.executions(tool="send")
    granted = parent.get(first.id).lease_expires_at
    wait_until(lambda: parent.get(first.id).lease_expires_at != granted,
               "a heartbeat of the owner", watch=(owner,))
    owner.signal(signal.SIGSTOP)
    send = workers.make_tool(parent, tool="send", policy="fast_mutating", events=events, label="B")
    with pytest.raises(ExecutionFailed):
        call_in_thread(lambda: send("a"), timeout=10 * LEASE)
    assert parent.get(first.id).status == "LOST"

    owner.signal(signal.SIGCONT)
    release.touch()
    answer = owner.result()
    assert answer["ok"], answer
    assert len(starts(events, "send")) == 1  # the side effect happened, exactly once

    # Nobody took the key over, so nothing fences the late outcome: the log should say it
    # succeeded (and identical calls replay it) instead of "lost" forever.
    assert parent.get(first.id).status == "SUCCEEDED"
    assert send("a") == answer["value"]


def test_the_pause_message_names_the_command_that_lifts_it(spawn, parent):
    child = spawn("repl", name="child", tool="x", policy="mutating", label="child")
    parent.pause(tool="x", reason="incident", by="ops")
    refused = child.ask(arg="a")
    assert refused["error"] == "ToolPaused"
    # `tbay resume` without --tool lifts only the global pause, not this one.
    assert "tbay resume --tool x" in refused["message"], refused["message"]
