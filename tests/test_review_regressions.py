"""Regressions for bugs found in review: each test failed before its fix."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tbay_core import (
    ApprovalPending,
    InvalidTransition,
    TbayClient,
    ToolNameClash,
    guarded,
)


def test_closures_from_one_factory_are_one_tool_unless_named_apart(client: TbayClient) -> None:
    """Tools re-created per request (closures over that request's session) keep replaying;
    closures that do different things must be named apart (README, "Tool names")."""

    def make(index: str):  # noqa: ANN202 - a factory of tools
        def search(query: str) -> str:
            return f"{index}:{query}"

        return search

    web = guarded(client, policy="readonly", tool_name="search_web")(make("web"))
    docs = guarded(client, policy="readonly", tool_name="search_docs")(make("docs"))
    assert (web("x"), docs("x")) == ("web:x", "docs:x")
    again = guarded(client, policy="readonly", tool_name="search_web")(make("web"))
    assert again("x") == "web:x"
    with pytest.raises(ToolNameClash):
        guarded(client, policy="readonly", tool_name="search_web")(lambda query: query)


def test_local_cache_hits_are_audited_when_the_policy_says_so(client: TbayClient) -> None:
    client.policies["audited_local"] = client.policies["readonly"].copy(
        name="audited_local", local_cache=True, audit_replays=True, cache_ttl=60
    )

    @guarded(client, policy="audited_local")
    def lookup(item: int) -> int:
        return item

    for _ in range(5):
        lookup(1)
    (row,) = [r for r in client.stats() if r["tool"] == "lookup"]
    assert row["replays"] == 4


def test_purge_ends_and_removes_abandoned_requests_but_keeps_a_lost_mutating_key(client: TbayClient) -> None:
    client.policies["quick_defer"] = client.policies["destructive"].copy(
        name="quick_defer", approval_mode="defer", approval_timeout=0.05
    )
    client.policies["quick_mutating"] = client.policies["mutating"].copy(name="quick_mutating", lease_timeout=0.05)

    @guarded(client, policy="quick_defer")
    def refund(order: str) -> str:
        return order

    with pytest.raises(ApprovalPending) as pending:
        refund("a")
    # a RUNNING row whose owner vanished (simulated by stopping its heartbeat before the body runs)
    ran = threading.Event()

    @guarded(client, policy="quick_mutating")
    def charge(order: str) -> str:
        client.engine.heartbeat.stop()
        ran.set()
        time.sleep(0.3)
        return order

    worker = threading.Thread(target=charge, args=("b",))
    worker.start()
    ran.wait(5)
    time.sleep(0.15)  # lease lapsed
    assert client.purge(0.05, dry_run=True) >= 1
    assert client.get(pending.value.execution_id).status == "WAITING_APPROVAL"  # dry run changed nothing
    client.purge(0.05)
    worker.join(5)
    assert [e.status for e in client.executions(tool="refund")] == []  # expired, old, keyless: gone
    assert [e.status for e in client.executions(tool="charge")] in (["LOST"], ["SUCCEEDED"])


def test_concurrent_approve_and_reject_cannot_both_succeed(client: TbayClient) -> None:
    client.policies["deferred"] = client.policies["destructive"].copy(name="deferred", approval_mode="defer")

    @guarded(client, policy="deferred")
    def refund(order: str) -> str:
        return order

    for attempt in range(10):
        with pytest.raises(ApprovalPending) as pending:
            refund(f"o{attempt}")
        execution_id = pending.value.execution_id
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def decide(approve: bool, execution_id: str = execution_id, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                (client.approve if approve else client.reject)(execution_id, by="t")
                outcomes.append("approve" if approve else "reject")
            except InvalidTransition:
                outcomes.append("refused")

        threads = [threading.Thread(target=decide, args=(flag,)) for flag in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(outcomes).count("refused") == 1, outcomes
        row = client.get(execution_id)
        assert (row.status, row.approved) in (("WAITING_APPROVAL", True), ("REJECTED", False))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_connections_of_its_own(client: TbayClient) -> None:
    @guarded(client)
    def double(n: int) -> int:
        return 2 * n

    assert [double(i) for i in range(10)] == [2 * i for i in range(10)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        try:
            ok = all(double(100 + i) == 200 + 2 * i for i in range(30))
        finally:
            os._exit(0 if ok else 1)
    parent_ok = all(double(500 + i) == 1000 + 2 * i for i in range(30))
    _, status = os.waitpid(pid, 0)
    assert parent_ok and os.waitstatus_to_exitcode(status) == 0
    assert all(double(900 + i) == 1800 + 2 * i for i in range(10))  # the parent still works after
