"""Guardrails: rate limits, concurrency caps, budgets, the kill switch and execution timeouts.

Every test runs on both stores (``db_url``). Concurrency is exercised with real threads and
real processes (a ``kill -9`` of a child holding the only slot); the kill switch with a child
process and the real CLI. Refusals must leave no row behind and must not count against a
window. Nothing asserts on time: the only sleeps wait for a rate window the library itself
announced (``retry_after``), and every wait has a hang guard.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import approval_workers
import pytest
from approval_workers import (
    Child,
    body_starts,
    call_in_thread,
    finish_call,
    start_call,
    wait_until,
)

from tbay_core import (
    ApprovalPending,
    BudgetExceeded,
    ConcurrencyLimitExceeded,
    ExecutionFailed,
    ExecutionTimeout,
    RateLimitExceeded,
    TbayClient,
    ToolPaused,
    scope,
)

HANG_GUARD = approval_workers.HANG_GUARD
workers = approval_workers.workers


# --------------------------------------------------------------------------- harness


class Runs:
    """Counts body runs in this process (thread-safe)."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._lock = threading.Lock()

    def add(self, value: Any) -> None:
        with self._lock:
            self.args.append(value)

    @property
    def n(self) -> int:
        return len(self.args)


class Gauge:
    """How many bodies run at once, and the most ever seen."""

    def __init__(self) -> None:
        self.current = 0
        self.most = 0
        self.entered = 0
        self.cond = threading.Condition()

    def enter(self) -> None:
        with self.cond:
            self.current += 1
            self.entered += 1
            self.most = max(self.most, self.current)
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.current -= 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, HANG_GUARD), "hang guard"


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def spawn(python: str, subprocess_env: dict[str, str], tmp_path: Path,
          events: Path) -> Iterator[Callable[..., Child]]:
    """Start children on this test's database; any still running at the end is killed."""
    started: list[Child] = []

    def start(mode: str, *, name: str, policies: dict[str, Any], **options: Any) -> Child:
        child = Child(python, subprocess_env, tmp_path, name, mode, events=events,
                      policies=policies, **options)
        started.append(child)
        return child

    yield start
    for child in started:
        child.cleanup()


def policy(client: TbayClient, name: str, base: str = "mutating", **changes: Any) -> str:
    client.policies[name] = client.policies[base].copy(name=name, **changes)
    return name


def rows(client: TbayClient, tool: str) -> list[Any]:
    return client.executions(tool=tool, limit=None)


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_refuses_call_n_plus_one_and_refusals_do_not_extend_the_window(client):
    window = 1.0
    runs = Runs()
    send = client.guard(lambda to: runs.add(to) or f"sent {to}", tool_name="send",
                        policy=policy(client, "rated", rate_limit="3/1s"))
    for i in range(3):
        assert send(f"u{i}") == f"sent u{i}"

    with pytest.raises(RateLimitExceeded) as refused:
        send("u3")
    first = refused.value.retry_after
    opens_at = time.monotonic() + first
    assert 0 < first <= window
    assert "'send'" in str(refused.value) and "rated" in str(refused.value)
    assert send("u0") == "sent u0"  # a replay is never rate limited (nor counted)

    retry_afters = [first]
    for _ in range(3):  # refused calls spread over the window: none of them may count
        time.sleep(0.05)
        with pytest.raises(RateLimitExceeded) as again:
            send("u3")
        assert 0 < again.value.retry_after <= window
        retry_afters.append(again.value.retry_after)
    assert retry_afters == sorted(retry_afters, reverse=True)  # the same deadline, coming closer
    assert runs.n == 3
    assert sorted(row.args["to"] for row in rows(client, "send")) == ["u0", "u1", "u2"]

    time.sleep(max(0.0, opens_at - time.monotonic()) + 0.05)  # the window the refusal announced
    assert send("u3") == "sent u3"  # the refused key runs normally, on time
    assert runs.args == ["u0", "u1", "u2", "u3"]
    assert {row.status for row in rows(client, "send")} == {"SUCCEEDED"}


def test_rate_limit_is_per_tool_and_per_tenant(client):
    runs = Runs()
    rated = policy(client, "rated", rate_limit="2/1h")
    send = client.guard(lambda to: runs.add(("send", to)), tool_name="send", policy=rated)
    notify = client.guard(lambda to: runs.add(("notify", to)), tool_name="notify", policy=rated)
    send_as_initech = client.guard(lambda to: runs.add(("initech", to)), tool_name="send",
                                   policy=rated, tenant="initech")

    send("a")
    send("b")
    with pytest.raises(RateLimitExceeded) as refused:
        send("c")
    assert 0 < refused.value.retry_after <= 3600
    notify("a")  # another tool has its own window
    notify("b")
    with pytest.raises(RateLimitExceeded):
        notify("c")
    with scope(tenant="acme"):  # another tenant has its own window
        send("c")
        send("d")
        with pytest.raises(RateLimitExceeded):
            send("e")
    with scope(tenant="globex"):
        send("e")
    send_as_initech("e")
    with pytest.raises(RateLimitExceeded):
        send("e")  # the tenant-less window is still full
    assert len(runs.args) == 8
    assert len(rows(client, "send")) == 6 and len(rows(client, "notify")) == 2


def test_eight_threads_racing_for_a_rate_limit_start_exactly_the_limit(client):
    runs = Runs()
    send = client.guard(lambda to: runs.add(to), tool_name="send",
                        policy=policy(client, "rated", rate_limit="3/1h"))
    barrier = threading.Barrier(8)

    def race(i: int) -> str:
        barrier.wait(HANG_GUARD)
        try:
            send(f"u{i}")
            return "ran"
        except RateLimitExceeded:
            return "refused"

    calls = [start_call(lambda i=i: race(i)) for i in range(8)]
    outcomes = [finish_call(*call) for call in calls]
    assert sorted(outcomes) == ["ran"] * 3 + ["refused"] * 5
    assert runs.n == 3 and len(rows(client, "send")) == 3


def test_rate_limit_counts_calls_made_by_other_processes(spawn, client, events):
    specs = {"rated": {"base": "mutating", "rate_limit": "2/1h"}}
    approval_workers.register(client, specs)
    send = workers.make_tool(client, tool="send", policy="rated", events=events, label="parent")
    send("a")
    child = spawn("repl", name="child", policies=specs, label="child")
    assert child.ask(tool="send", policy="rated", arg="b")["ok"]
    refused = child.ask(tool="send", policy="rated", arg="c")
    assert (refused["ok"], refused["error"]) == (False, "RateLimitExceeded"), refused
    with pytest.raises(RateLimitExceeded):
        send("c")
    assert [run["arg"] for run in body_starts(events, "send")] == ["a", "b"]


def test_rejected_and_expired_requests_do_not_use_up_the_rate(client):
    gated = policy(client, "gated", base="destructive", approval_mode="defer", rate_limit="2/1h")
    send = client.guard(lambda to: to, tool_name="send", policy=gated)
    with pytest.raises(ApprovalPending) as a:
        send("a")
    with pytest.raises(ApprovalPending):
        send("b")
    with pytest.raises(RateLimitExceeded):  # two requests are two executions started
        send("c")
    client.reject(a.value.execution_id, reason="no")
    with pytest.raises(ApprovalPending):  # the rejected one never ran: its slot is free again
        send("c")


# --------------------------------------------------------------------------- concurrency


def test_max_concurrent_is_never_exceeded_by_eight_threads_and_all_eventually_run(client):
    cap, total = 2, 8
    gauge = Gauge()
    capped = policy(client, "capped", max_concurrent=cap, concurrency_wait_timeout="30s")

    def work(item: int) -> int:
        gauge.enter()
        try:
            # Hold the slot until the cap was reached once (or every call is in), so the
            # measurement sees the cap filled rather than calls that merely never overlapped.
            gauge.wait_for(lambda: gauge.most >= cap or gauge.entered == total)
            time.sleep(0.01)
            return item * 10
        finally:
            gauge.leave()

    work = client.guard(work, policy=capped)
    calls = [start_call(lambda i=i: work(i)) for i in range(total)]
    assert [finish_call(*call) for call in calls] == [i * 10 for i in range(total)]
    assert gauge.most == cap
    assert gauge.entered == total
    assert len(rows(client, "work")) == total
    assert {row.status for row in rows(client, "work")} == {"SUCCEEDED"}


def test_with_no_wait_extra_calls_are_refused_but_replays_and_followers_never_wait(client, tmp_path):
    capped = policy(client, "capped", max_concurrent=2, concurrency_wait_timeout=0)
    release = threading.Event()
    gauge = Gauge()
    runs = Runs()

    def work(item: str) -> str:
        runs.add(item)
        if item != "cached":
            gauge.enter()
            release.wait(HANG_GUARD)
            gauge.leave()
        return f"done {item}"

    work = client.guard(work, policy=capped)
    assert work("cached") == "done cached"
    holders = [start_call(lambda item=item: work(item)) for item in ("a", "b")]
    gauge.wait_for(lambda: gauge.current == 2)

    with pytest.raises(ConcurrencyLimitExceeded) as refused:
        call_in_thread(lambda: work("x"))
    message = str(refused.value)
    assert "'work'" in message and "max_concurrent" in message and "capped" in message
    assert "x" not in {row.args["item"] for row in rows(client, "work")}  # no row left behind

    assert call_in_thread(lambda: work("cached")) == "done cached"  # a cache hit takes no slot

    following = tmp_path / "following"
    workers.spy_on_follow(client, str(following))  # observes store.poll; changes nothing
    follower = start_call(lambda: work("a"))  # same call as a running one: follows, not refused
    wait_until(following.exists, "the identical call to follow the running one")
    release.set()
    assert [finish_call(*call) for call in holders] == ["done a", "done b"]
    assert finish_call(*follower) == "done a"
    assert work("x") == "done x"  # a slot is free again
    assert sorted(runs.args) == ["a", "b", "cached", "x"]


def test_the_slot_of_a_killed_owner_comes_back_once_its_lease_expires(spawn, client, tmp_path, events):
    specs = {"one_slot": {"base": "mutating", "max_concurrent": 1, "lease_timeout": 0.6}}
    approval_workers.register(client, specs)
    started = tmp_path / "child.started"
    child = spawn("call", name="owner", policies=specs, tool="export", policy="one_slot",
                  arg="child", label="child", started=started, release=tmp_path / "never")
    wait_until(started.exists, "the child's body to start", watch=(child,))
    export = workers.make_tool(client, tool="export", policy="one_slot", events=events,
                               label="parent")
    with pytest.raises(ConcurrencyLimitExceeded):  # the child holds the only slot
        export("parent")

    child.kill9()
    client.policies["one_slot"].concurrency_wait_timeout = HANG_GUARD
    value = call_in_thread(lambda: export("parent"))

    assert value.startswith("parent:")
    assert [run["pid"] for run in body_starts(events, "export")] == [child.pid, os.getpid()]
    by_arg = {row.args["arg"]: row for row in rows(client, "export")}
    assert by_arg["parent"].status == "SUCCEEDED"
    assert by_arg["child"].status in ("RUNNING", "LOST")  # nobody asked for the child's key


def test_an_approved_call_waits_for_a_concurrency_slot(client):
    """Found in review: RUN_APPROVED started an approved execution without checking max_concurrent."""
    capped = policy(client, "capped_gate", base="destructive", approval_mode="defer",
                    max_concurrent=1, concurrency_wait_timeout=0)
    release = threading.Event()
    gauge = Gauge()

    def wipe(disk: str) -> str:
        gauge.enter()
        release.wait(HANG_GUARD)
        gauge.leave()
        return f"wiped {disk}"

    wipe = client.guard(wipe, policy=capped)
    for disk in ("a", "b"):
        with pytest.raises(ApprovalPending) as pending:
            wipe(disk)
        client.approve(pending.value.execution_id)
    holder = start_call(lambda: wipe("a"))
    gauge.wait_for(lambda: gauge.current == 1)
    try:
        second = start_call(lambda: wipe("b"))
        wait_until(lambda: gauge.most > 1 or not second[0].is_alive(),
                   "the approved second call to be refused (or to run past the cap)")
        assert gauge.most == 1
        with pytest.raises(ConcurrencyLimitExceeded):
            finish_call(*second)
    finally:
        release.set()
        finish_call(*holder)


# --------------------------------------------------------------------------- budget


def spend_tool(client: TbayClient, runs: Runs, name: str = "budgeted", **budget: Any) -> Callable[..., Any]:
    budget = {"arg": "amount", "max": 100, "per": "1h", **budget}
    changes = {"approval_mode": "defer"} if budget.get("on_exceed") == "approve" else {}
    policy(client, name, budget=budget, **changes)

    def spend(order: str, amount: Any = None) -> str:
        runs.add((order, amount))
        return f"spent {amount} on {order}"

    return client.guard(spend, policy=name)


def test_a_refused_over_budget_call_does_not_stop_a_following_smaller_one(client):
    runs = Runs()
    spend = spend_tool(client, runs)
    spend("o1", 50)
    spend("o2", 30)  # 80 of 100 spent
    with pytest.raises(BudgetExceeded) as refused:
        spend("o3", 50)
    assert "'spend'" in str(refused.value) and "amount" in str(refused.value)
    assert spend("o4", 10) == "spent 10 on o4"  # the refused 50 was not counted: 90
    with pytest.raises(BudgetExceeded):
        spend("o5", 11)
    assert spend("o6", 10) == "spent 10 on o6"  # exactly the maximum is allowed: 100
    with pytest.raises(BudgetExceeded):
        spend("o7", 0.01)
    assert spend("o1", 50) == "spent 50 on o1"  # a replay spends nothing and is never refused
    assert [order for order, _ in runs.args] == ["o1", "o2", "o4", "o6"]
    assert sorted(row.args["order"] for row in rows(client, "spend")) == ["o1", "o2", "o4", "o6"]


def test_eight_threads_racing_for_a_budget_never_overspend_it(client):
    runs = Runs()
    spend = spend_tool(client, runs)
    barrier = threading.Barrier(8)

    def race(i: int) -> str:
        barrier.wait(HANG_GUARD)
        try:
            spend(f"o{i}", 20)
            return "ran"
        except BudgetExceeded:
            return "refused"

    calls = [start_call(lambda i=i: race(i)) for i in range(8)]
    outcomes = [finish_call(*call) for call in calls]
    assert sorted(outcomes) == ["ran"] * 5 + ["refused"] * 3
    assert runs.n == 5


def test_budget_is_per_tenant(client):
    runs = Runs()
    spend = spend_tool(client, runs)
    with scope(tenant="acme"):
        spend("o1", 100)
        with pytest.raises(BudgetExceeded):
            spend("o2", 1)
    with scope(tenant="globex"):
        spend("o1", 100)
    spend("o1", 60)
    assert runs.n == 3


@pytest.mark.parametrize("amount", [None, "abc", "", -1, True, float("nan"), [5]], ids=repr)
def test_a_missing_or_non_numeric_budget_argument_is_refused(client, amount):
    runs = Runs()
    spend = spend_tool(client, runs)
    with pytest.raises(BudgetExceeded) as refused:
        spend("o1", amount)
    assert "amount" in str(refused.value) and "'spend'" in str(refused.value)
    with pytest.raises(BudgetExceeded):
        spend("o1")  # omitted altogether
    assert runs.n == 0 and rows(client, "spend") == []
    assert spend("o1", 5) == "spent 5 on o1"


def test_on_exceed_approve_sends_the_over_budget_call_to_a_human(client):
    runs = Runs()
    spend = spend_tool(client, runs, name="budget_gate", on_exceed="approve")
    spend("o1", 80)
    with pytest.raises(ApprovalPending) as pending:
        spend("o2", 50)
    row = client.get(pending.value.execution_id)
    assert row.status == "WAITING_APPROVAL"
    assert "budget" in (row.approval_reason or "")
    assert [e.id for e in client.pending()] == [row.id]
    assert runs.args == [("o1", 80)]

    client.approve(row.id, by="finance")
    assert spend("o2", 50) == "spent 50 on o2"
    assert runs.args == [("o1", 80), ("o2", 50)]
    with pytest.raises(BudgetExceeded):  # a missing amount is still refused outright
        spend("o3", "lots")


def test_on_exceed_approve_in_block_mode_waits_for_the_human(client):
    runs = Runs()
    spend = spend_tool(client, runs, name="budget_gate", on_exceed="approve")
    client.policies["budget_gate"].approval_mode = "block"
    spend("o1", 80)
    thread, box = start_call(lambda: spend("o2", 50))
    (waiting,) = wait_until(client.pending, "the over-budget call to wait for a human")
    assert thread.is_alive() and runs.n == 1
    client.approve(waiting.id)
    assert finish_call(thread, box) == "spent 50 on o2"
    assert runs.n == 2


# --------------------------------------------------------------------------- kill switch


@pytest.fixture
def cli(python: str, subprocess_env: dict[str, str],
        tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([python, "-m", "tbay_core.cli", *args], env=subprocess_env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    return run


def test_pausing_a_tool_refuses_new_calls_in_another_process_and_still_replays(spawn, client, cli,
                                                                                  events):
    child = spawn("repl", name="child", policies={}, label="child")
    cached = child.ask(tool="x", policy="mutating", arg="cached")
    assert cached["ok"], cached

    cli("pause", "--tool", "x", "--reason", "incident 42", "--by", "ops")
    refused = child.ask(tool="x", policy="mutating", arg="fresh")
    assert (refused["ok"], refused["error"], refused["reason"], refused["by"]) == (
        False, "ToolPaused", "incident 42", "ops"), refused
    assert "'x'" in refused["message"] and "incident 42" in refused["message"]
    assert child.ask(tool="x", policy="mutating", arg="cached") == cached  # replays still served
    assert child.ask(tool="y", policy="mutating", arg="other")["ok"]  # other tools run
    assert [row.args["arg"] for row in rows(client, "x")] == ["cached"]  # the refusal left no row

    client.resume("x")
    ran = child.ask(tool="x", policy="mutating", arg="fresh")
    assert ran["ok"] and ran["value"] != cached["value"], ran
    assert [run["arg"] for run in body_starts(events, "x")] == ["cached", "fresh"]
    assert sorted(row.args["arg"] for row in rows(client, "x")) == ["cached", "fresh"]


def test_a_global_pause_stops_every_tool_in_every_process(spawn, client, events):
    child = spawn("repl", name="child", policies={}, label="child")
    here = client.guard(lambda n: n, tool_name="here", policy="readonly")
    client.pause(reason="maintenance", by="ops")

    for tool, policy_name in (("x", "mutating"), ("y", "readonly"), ("z", "volatile")):
        refused = child.ask(tool=tool, policy=policy_name, arg="a")
        assert (refused["error"], refused["reason"], refused["by"]) == (
            "ToolPaused", "maintenance", "ops"), refused
    with pytest.raises(ToolPaused) as paused_here:
        here(1)
    assert paused_here.value.reason == "maintenance"
    assert client.executions() == []
    assert body_starts(events, "x") == []

    client.resume()
    assert child.ask(tool="x", policy="mutating", arg="a")["ok"]
    assert here(1) == 1


def test_a_paused_tool_does_not_run_an_approved_call(client):
    """Found in review: RUN_APPROVED started an approved execution while its tool was paused."""
    runs = Runs()
    gate = policy(client, "gate", base="destructive", approval_mode="defer")
    wipe = client.guard(lambda disk: runs.add(disk), tool_name="wipe", policy=gate)
    with pytest.raises(ApprovalPending) as pending:
        wipe("a")
    client.approve(pending.value.execution_id, by="ops")
    client.pause("wipe", reason="incident", by="ops")
    try:
        with pytest.raises(ToolPaused):
            wipe("a")
        assert runs.n == 0
    finally:
        client.resume("wipe")


# --------------------------------------------------------------------------- execution timeout


def wait_until_ended(client: TbayClient, execution_id: str) -> Any:
    return wait_until(
        lambda: (row := client.get(execution_id)).status not in ("RUNNING", "WAITING_APPROVAL") and row,
        "the timed-out execution to record its outcome",
    )


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_execution_timeout_answers_the_caller_and_the_row_records_what_really_happened(client,
                                                                                        outcome):
    release = threading.Event()
    runs = Runs()

    def export(report: str) -> str:
        runs.add(report)
        assert release.wait(HANG_GUARD)
        if outcome == "raises":
            raise OSError("disk full")
        return f"{report} exported"

    export = client.guard(export, policy=policy(client, "slow", execution_timeout="200ms"))
    with pytest.raises(ExecutionTimeout) as timed_out:
        call_in_thread(lambda: export("q3"))
    execution_id = timed_out.value.execution_id
    assert execution_id and execution_id in str(timed_out.value)
    assert "'export'" in str(timed_out.value)
    assert client.get(execution_id).status == "RUNNING"

    release.set()
    ended = wait_until_ended(client, execution_id)
    if outcome == "returns":
        assert (ended.status, ended.finished_at is not None) == ("SUCCEEDED", True)
        assert export("q3") == "q3 exported"
    else:
        assert (ended.status, ended.error_type, ended.error_message) == ("FAILED", "OSError",
                                                                         "disk full")
        with pytest.raises(ExecutionFailed) as replayed:
            export("q3")
        assert replayed.value.execution_id == execution_id
    assert runs.n == 1


def test_an_identical_call_following_a_timed_out_execution_also_times_out(client):
    """Found in review: a follower of a hung execution waited as long as the body ran,
    ignoring execution_timeout (the owner's heartbeat keeps the lease alive)."""
    release = threading.Event()

    def export(report: str) -> str:
        release.wait(HANG_GUARD)
        return f"{report} exported"

    export = client.guard(export, policy=policy(client, "slow", execution_timeout="200ms"))
    with pytest.raises(ExecutionTimeout) as first:
        call_in_thread(lambda: export("q3"))
    try:
        follower = start_call(lambda: export("q3"))
        # Ten times the execution_timeout: only a follower that ignores it is still waiting.
        wait_until(lambda: not follower[0].is_alive(), "the follower to be answered", timeout=2)
        with pytest.raises(ExecutionTimeout) as second:
            finish_call(*follower)
        assert second.value.execution_id == first.value.execution_id
    finally:
        release.set()


def test_async_execution_timeout_answers_the_caller_and_the_row_records_the_result(client):
    runs = Runs()

    async def export(report: str) -> str:
        runs.add(report)
        while not release.is_set():
            await asyncio.sleep(0.005)
        return f"{report} exported"

    release = threading.Event()
    export = client.guard(export, policy=policy(client, "slow", execution_timeout="200ms"))

    async def scenario() -> tuple[str, Any, str]:
        with pytest.raises(ExecutionTimeout) as timed_out:
            await asyncio.wait_for(export("q4"), HANG_GUARD)
        execution_id = timed_out.value.execution_id
        assert client.get(execution_id).status == "RUNNING"
        release.set()
        deadline = time.monotonic() + HANG_GUARD
        while client.get(execution_id).status == "RUNNING":  # the body goes on in this loop
            assert time.monotonic() < deadline, "hang guard"
            await asyncio.sleep(0.005)
        return execution_id, client.get(execution_id), await export("q4")

    execution_id, ended, replayed = asyncio.run(scenario())
    assert ended.status == "SUCCEEDED"
    assert replayed == "q4 exported"
    assert runs.n == 1
