"""Human approval: block and defer modes, the CLI deciding for a caller in another process,
timeouts, late or unknown decisions, and the bypass for small values.

Every test runs on both stores (``db_url``). Cross-process tests start real interpreters
(``python -m tests.approval_workers``) and decide through the real CLI
(``python -m tbay_core.cli``). Nothing asserts on time: waits are for observable facts
(a request is pending, a body ran), bounded only by hang guards.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
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
    ApprovalRejected,
    ApprovalTimeout,
    InvalidTransition,
    TbayClient,
    UnknownExecution,
)

HANG_GUARD = approval_workers.HANG_GUARD
GATE = {"base": "destructive", "approval_timeout": "60s"}
"""Block mode (the destructive default) with a timeout no test reaches."""


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


@pytest.fixture
def cli(python: str, subprocess_env: dict[str, str],
        tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``tbay`` command against this test's database."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "tbay_core.cli", *args], env=subprocess_env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)

    return run


def cli_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def cli_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failed CLI run: one readable line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def the_pending(client: TbayClient, what: str, **guard: Any) -> Any:
    """Wait until exactly one execution waits for a human and return it."""
    (waiting,) = wait_until(client.pending, what, **guard)
    return waiting


def defer_policy(client: TbayClient, name: str = "gate", **changes: Any) -> str:
    client.policies[name] = client.policies["destructive"].copy(
        name=name, approval_mode="defer", **changes
    )
    return name


def block_policy(client: TbayClient, name: str = "gate", **changes: Any) -> str:
    changes.setdefault("approval_timeout", "60s")
    client.policies[name] = client.policies["destructive"].copy(name=name, **changes)
    return name


# --------------------------------------------------------------------------- block mode, two processes


def start_blocked_child(spawn: Callable[..., Child], client: TbayClient) -> tuple[Child, Any]:
    """A child process calling ``wire("250")`` under a block-mode gate, waiting for a human."""
    approval_workers.register(client, {"gate": GATE})  # the database exists before the child
    child = spawn("call", name="caller", policies={"gate": GATE}, tool="wire", policy="gate",
                  arg="250", label="child")
    waiting = the_pending(client, "the child's call to wait for approval", watch=(child,))
    assert (waiting.tool_name, waiting.status, waiting.args) == ("wire", "WAITING_APPROVAL",
                                                                 {"arg": "250"})
    return child, waiting


def test_tbay_approve_in_another_process_releases_a_blocked_caller_which_runs_once(
        spawn, client, cli, events):
    child, waiting = start_blocked_child(spawn, client)
    assert child.proc.poll() is None  # blocked, not answered
    assert body_starts(events, "wire") == []

    out = cli_ok(cli("approve", waiting.id, "--by", "carol", "--reason", "checked"))
    assert waiting.id in out

    answer = child.result()
    assert answer["ok"], answer
    assert answer["value"].startswith(f"child:{child.pid}:")
    assert [run["pid"] for run in body_starts(events, "wire")] == [child.pid]
    done = client.get(waiting.id)
    assert (done.status, done.decided_by, done.decision_reason) == ("SUCCEEDED", "carol", "checked")
    # The same call made here afterwards replays the child's result; the body ran once.
    wire = approval_workers.workers.make_tool(client, tool="wire", policy="gate", events=events)
    assert wire("250") == answer["value"]
    assert len(body_starts(events, "wire")) == 1
    assert [e.id for e in client.executions(tool="wire")] == [waiting.id]


def test_tbay_reject_in_another_process_gives_the_blocked_caller_the_reason_and_who(
        spawn, client, cli, events):
    child, waiting = start_blocked_child(spawn, client)

    out = cli_ok(cli("reject", waiting.id, "--by", "carol", "--reason", "amount too large"))
    assert waiting.id in out

    answer = child.result()
    assert (answer["ok"], answer["error"]) == (False, "ApprovalRejected"), answer
    assert (answer["reason"], answer["by"]) == ("amount too large", "carol")
    assert answer["execution_id"] == waiting.id
    assert "amount too large" in answer["message"] and "'wire'" in answer["message"]
    assert body_starts(events, "wire") == []  # the function never ran
    row = client.get(waiting.id)
    assert (row.status, row.decided_by, row.decision_reason) == ("REJECTED", "carol",
                                                                 "amount too large")
    # An identical call here replays the rejection (without asking again or running).
    wire = approval_workers.workers.make_tool(client, tool="wire", policy="gate", events=events)
    with pytest.raises(ApprovalRejected) as again:
        wire("250")
    assert (again.value.reason, again.value.by) == ("amount too large", "carol")
    assert body_starts(events, "wire") == []
    assert client.pending() == []


# --------------------------------------------------------------------------- block mode, one process


def test_block_mode_returns_after_approve_from_another_thread_and_runs_once(client):
    runs = Runs()

    def transfer(amount: float) -> str:
        runs.add(amount)
        return f"sent {amount}"

    transfer = client.guard(transfer, policy=block_policy(client))
    thread, box = start_call(lambda: transfer(75.0))
    waiting = the_pending(client, "the call to wait for approval")
    assert thread.is_alive() and runs.n == 0

    approved = client.approve(waiting.id, by="ops", reason="fine")
    assert (approved.decided_by, approved.decision_reason, approved.approved) == ("ops", "fine", True)

    assert finish_call(thread, box) == "sent 75.0"
    assert runs.args == [75.0]
    assert client.get(waiting.id).status == "SUCCEEDED"
    assert transfer(75.0) == "sent 75.0"  # replayed
    assert runs.n == 1


def test_block_mode_callers_waiting_on_one_request_share_the_single_approved_run(client):
    runs = Runs()
    release = threading.Event()

    def transfer(amount: float) -> str:
        runs.add(amount)
        release.wait(HANG_GUARD)
        return f"sent {amount}"

    transfer = client.guard(transfer, policy=block_policy(client))
    calls = [start_call(lambda: transfer(10.0)) for _ in range(4)]
    waiting = the_pending(client, "one request for the four identical calls")
    client.approve(waiting.id, by="ops")
    wait_until(lambda: runs.n, "the approved body to start")
    release.set()

    assert [finish_call(*call) for call in calls] == ["sent 10.0"] * 4
    assert runs.n == 1
    assert [e.id for e in client.executions(tool="transfer")] == [waiting.id]


def test_block_mode_rejection_from_another_thread_raises_with_reason_and_who(client):
    runs = Runs()
    transfer = client.guard(lambda amount: runs.add(amount), policy=block_policy(client),
                            tool_name="transfer")
    thread, box = start_call(lambda: transfer(9000))
    waiting = the_pending(client, "the call to wait for approval")
    client.reject(waiting.id, by="risk-team", reason="over the daily limit")

    with pytest.raises(ApprovalRejected) as rejected:
        finish_call(thread, box)
    assert (rejected.value.reason, rejected.value.by) == ("over the daily limit", "risk-team")
    assert rejected.value.execution_id == waiting.id
    assert runs.n == 0


def test_block_mode_approval_of_a_volatile_tool_runs_the_call(client):
    """Found in review: a keyless (volatile) caller re-claimed after the approval and started a
    new WAITING_APPROVAL execution each time, so it never returned."""
    client.policies["gated_volatile"] = client.policies["volatile"].copy(
        name="gated_volatile", approval_required=True, approval_timeout="60s"
    )
    runs = Runs()
    ping = client.guard(lambda host: runs.add(host) or f"pinged {host}", policy="gated_volatile",
                        tool_name="ping")
    thread, box = start_call(lambda: ping("db-1"))
    waiting = the_pending(client, "the volatile call to wait for approval")
    client.approve(waiting.id, by="ops")
    wait_until(lambda: not thread.is_alive() or len(client.executions(tool="ping")) > 1,
               "the approved call to return (or to ask again)")

    assert [(e.id, e.status) for e in client.executions(tool="ping")] == [(waiting.id, "SUCCEEDED")]
    assert finish_call(thread, box) == "pinged db-1"
    assert runs.args == ["db-1"]


# --------------------------------------------------------------------------- defer mode


def test_defer_mode_raises_pending_at_once_then_runs_once_after_approval_then_replays(client):
    runs = Runs()

    def close_account(account: str) -> str:
        runs.add(account)
        return f"closed {account}"

    close_account = client.guard(close_account, policy=defer_policy(client))

    with pytest.raises(ApprovalPending) as first:
        call_in_thread(lambda: close_account("acc-1"))  # at once: no waiting in defer mode
    execution_id = first.value.execution_id
    assert execution_id and "'close_account'" in str(first.value)
    assert f"tbay approve {execution_id}" in str(first.value)
    row = client.get(execution_id)
    assert (row.status, row.approved) == ("WAITING_APPROVAL", False)
    # Asking again before a decision points at the same request; nothing runs.
    with pytest.raises(ApprovalPending) as again:
        close_account("acc-1")
    assert again.value.execution_id == execution_id
    assert [e.id for e in client.pending()] == [execution_id]
    assert runs.n == 0

    client.approve(execution_id, by="ops")
    assert close_account("acc-1") == "closed acc-1"
    assert runs.args == ["acc-1"]
    assert close_account("acc-1") == "closed acc-1"  # the third call replays
    assert runs.n == 1
    done = client.get(execution_id)
    assert (done.status, done.decided_by) == ("SUCCEEDED", "ops")
    assert [e.id for e in client.executions(tool="close_account")] == [execution_id]


def test_defer_mode_approved_call_repeated_by_many_threads_runs_once(client):
    runs = Runs()
    release = threading.Event()

    def close_account(account: str) -> str:
        runs.add(account)
        release.wait(HANG_GUARD)
        return f"closed {account}"

    close_account = client.guard(close_account, policy=defer_policy(client))
    with pytest.raises(ApprovalPending) as pending:
        close_account("acc-2")
    client.approve(pending.value.execution_id)

    calls = [start_call(lambda: close_account("acc-2")) for _ in range(6)]
    wait_until(lambda: runs.n, "the approved body to start")
    release.set()
    assert [finish_call(*call) for call in calls] == ["closed acc-2"] * 6
    assert runs.n == 1


# --------------------------------------------------------------------------- timeouts and bad decisions


def wait_for_deadline(client: TbayClient, execution_id: str) -> None:
    """Wait until the approval deadline of ``execution_id`` has passed (it leaves ``pending()``)."""
    wait_until(lambda: execution_id not in {e.id for e in client.pending()},
               "the approval deadline to pass")


def test_approval_timeout_expires_the_request_and_a_later_call_asks_again(client):
    runs = Runs()
    delete_repo = client.guard(lambda repo: runs.add(repo), tool_name="delete_repo",
                               policy=defer_policy(client, approval_timeout="300ms"))
    with pytest.raises(ApprovalPending) as first:
        delete_repo("tbay")
    first_id = first.value.execution_id
    wait_for_deadline(client, first_id)

    with pytest.raises(ApprovalPending) as second:
        delete_repo("tbay")
    second_id = second.value.execution_id
    assert second_id != first_id
    expired = client.get(first_id)
    assert (expired.status, expired.error_type, expired.approved) == ("EXPIRED", "ApprovalTimeout",
                                                                      False)
    assert client.get(second_id).status == "WAITING_APPROVAL"
    assert [e.id for e in client.pending()] == [second_id]

    # A late approve of the expired request is an error and changes nothing.
    with pytest.raises(InvalidTransition) as late:
        client.approve(first_id, by="late-larry")
    assert first_id in str(late.value) and "EXPIRED" in str(late.value)
    assert client.get(first_id) == expired
    with pytest.raises(InvalidTransition):
        client.reject(first_id, by="late-larry", reason="too late anyway")
    assert client.get(first_id) == expired
    assert runs.n == 0


def test_block_mode_approval_timeout_raises_and_the_next_call_asks_again(client):
    runs = Runs()
    delete_repo = client.guard(lambda repo: runs.add(repo) or "deleted", tool_name="delete_repo",
                               policy=block_policy(client, approval_timeout="300ms"))
    with pytest.raises(ApprovalTimeout) as timed_out:
        call_in_thread(lambda: delete_repo("tbay"))
    first_id = timed_out.value.execution_id
    assert first_id and "'delete_repo'" in str(timed_out.value)
    expired = client.get(first_id)
    assert (expired.status, expired.error_type) == ("EXPIRED", "ApprovalTimeout")

    with pytest.raises(InvalidTransition):
        client.approve(first_id, by="late-larry")
    after = client.get(first_id)
    assert after == expired and not after.approved and after.decided_by is None

    # The key was freed: the same call asks a human again (a new request), and this one is answered.
    block_policy(client, approval_timeout="60s")
    thread, box = start_call(lambda: delete_repo("tbay"))
    waiting = the_pending(client, "the repeated call to ask again")
    assert waiting.id != first_id and waiting.attempt == 2
    client.approve(waiting.id, by="ops")
    assert finish_call(thread, box) == "deleted"
    assert runs.args == ["tbay"]


def test_approving_after_the_deadline_with_nobody_calling_errors_and_does_not_approve(client):
    runs = Runs()
    delete_repo = client.guard(lambda repo: runs.add(repo) or "deleted", tool_name="delete_repo",
                               policy=defer_policy(client, approval_timeout="300ms"))
    with pytest.raises(ApprovalPending) as first:
        delete_repo("tbay")
    first_id = first.value.execution_id
    wait_for_deadline(client, first_id)

    with pytest.raises(InvalidTransition):
        client.approve(first_id, by="late-larry")
    row = client.get(first_id)
    assert (row.status, row.approved, row.decided_by) == ("EXPIRED", False, None)
    with pytest.raises(ApprovalPending) as again:  # asked again, not run on the late approval
        delete_repo("tbay")
    assert again.value.execution_id != first_id
    assert runs.n == 0


def test_deciding_an_unknown_execution_raises_unknown_execution(client, cli):
    for decide in (client.approve, client.reject):
        with pytest.raises(UnknownExecution) as unknown:
            decide("0123456789abcdef0123456789abcdef", by="ops")
        assert "0123456789abcdef0123456789abcdef" in str(unknown.value)
    cli_error(cli("approve", "no-such-id"), "no-such-id")
    cli_error(cli("reject", "no-such-id", "--reason", "x"), "no-such-id")
    assert client.executions() == []


def test_deciding_an_execution_that_is_not_waiting_errors_and_changes_nothing(client, cli):
    runs = Runs()
    plain = client.guard(lambda x: runs.add(x) or x, tool_name="plain")
    plain(1)
    (succeeded,) = client.executions(tool="plain")
    for decide in (client.approve, client.reject):
        with pytest.raises(InvalidTransition) as error:
            decide(succeeded.id, by="mallory", reason="late")
        assert succeeded.id in str(error.value) and "SUCCEEDED" in str(error.value)
    cli_error(cli("approve", succeeded.id, "--by", "mallory"), succeeded.id)
    assert client.get(succeeded.id) == succeeded

    gated = client.guard(lambda x: runs.add(x) or x, tool_name="gated", policy=defer_policy(client))
    with pytest.raises(ApprovalPending) as a:
        gated("a")
    with pytest.raises(ApprovalPending) as b:
        gated("b")
    client.reject(a.value.execution_id, by="bob", reason="no")
    rejected = client.get(a.value.execution_id)
    with pytest.raises(InvalidTransition):
        client.approve(rejected.id, by="mallory")
    with pytest.raises(InvalidTransition):
        client.reject(rejected.id, by="mallory", reason="again")
    assert client.get(rejected.id) == rejected

    client.approve(b.value.execution_id, by="alice", reason="ok")
    approved = client.get(b.value.execution_id)
    with pytest.raises(InvalidTransition) as twice:  # approved, not run yet
        client.approve(approved.id, by="mallory")
    assert "already approved" in str(twice.value)
    with pytest.raises(InvalidTransition):
        client.reject(approved.id, by="mallory", reason="changed my mind")
    assert client.get(approved.id) == approved
    assert gated("b") == "b"
    assert runs.args == [1, "b"]


# --------------------------------------------------------------------------- bypass for small values


def refund_tool(client: TbayClient, runs: Runs) -> Callable[..., Any]:
    policy = defer_policy(client, "refunds", approval_bypass_arg="amount", approval_bypass_max=100)

    def refund(order: str, amount: Any = None) -> str:
        runs.add(amount)
        return f"refunded {amount}"

    return client.guard(refund, policy=policy)


@pytest.mark.parametrize("amount", [0, 50, 99.5, 100, Decimal("20")], ids=repr)
def test_a_small_bypass_value_runs_without_approval(client, amount):
    runs = Runs()
    refund = refund_tool(client, runs)
    assert refund("o-1", amount) == f"refunded {amount}"
    assert runs.args == [amount]
    (row,) = client.executions(tool="refund")
    assert (row.status, row.decided_by) == ("SUCCEEDED", None)
    assert client.pending() == []


@pytest.mark.parametrize(
    "amount",
    [100.01, 5000, None, "abc", "", -5, -0.01, True, float("nan"), float("inf"), [10], {"v": 10}],
    ids=repr,
)
def test_a_large_missing_non_numeric_or_negative_bypass_value_needs_approval(client, amount):
    runs = Runs()
    refund = refund_tool(client, runs)
    with pytest.raises(ApprovalPending) as pending:
        refund("o-1", amount)
    assert runs.n == 0
    row = client.get(pending.value.execution_id)
    assert row.status == "WAITING_APPROVAL"
    assert "amount" in (row.approval_reason or "")
    client.approve(row.id, by="ops")
    assert refund("o-1", amount) == f"refunded {amount}"
    assert runs.n == 1


def test_an_omitted_bypass_argument_needs_approval(client):
    runs = Runs()
    refund = refund_tool(client, runs)
    with pytest.raises(ApprovalPending):
        refund("o-1")
    with pytest.raises(ApprovalPending):
        refund(order="o-2")
    assert runs.n == 0


def test_a_dotted_bypass_path_reads_a_nested_value(client):
    policy = defer_policy(client, "nested", approval_bypass_arg="order.amount",
                          approval_bypass_max=100)
    runs = Runs()

    def refund(order: dict) -> str:
        runs.add(order)
        return "ok"

    refund = client.guard(refund, policy=policy)
    assert refund({"id": "o-1", "amount": 10}) == "ok"
    for order in ({"id": "o-2", "amount": 1000}, {"id": "o-3"}, {"id": "o-4", "amount": "ten"}):
        with pytest.raises(ApprovalPending):
            refund(order)
    assert runs.args == [{"id": "o-1", "amount": 10}]


def test_pending_lists_each_waiting_request_with_its_reason(client, cli):
    runs = Runs()
    refund = refund_tool(client, runs)
    ids = []
    for order in ("o-1", "o-2"):
        with pytest.raises(ApprovalPending) as pending:
            refund(order, 500)
        ids.append(pending.value.execution_id)
    refund("o-3", 5)
    assert sorted(e.id for e in client.pending()) == sorted(ids)
    out = cli_ok(cli("pending"))
    assert all(execution_id in out for execution_id in ids)
    assert runs.args == [5]
