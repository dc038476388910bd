"""The CrewAI adapter, driven through real crews offline.

Real ``Crew.kickoff`` runs with a scripted ``BaseLLM`` (tests/crewai_fakes.py),
on both of CrewAI's tool paths: the ReAct text path (the model writes
"Action: ... Action Input: {...}") and native function calling (the model
returns tool calls). Both guarding styles are covered: the ``TbayCrewTool``
wrapper (``guard_toolkit`` / ``guard_tool``) and the global tool-call hooks
(``register_tbay_hooks``). Every behaviour runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile

# CrewAI writes under $HOME on import and may try telemetry: point it at a temp
# dir and switch telemetry and tracing off before crewai is imported.
_CREWAI_HOME = tempfile.mkdtemp(prefix="tbay-crewai-home-")
os.environ["HOME"] = _CREWAI_HOME
os.environ["CREWAI_STORAGE_DIR"] = _CREWAI_HOME
os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["OTEL_SDK_DISABLED"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"

from frameworks import need  # noqa: E402

need("crewai", "crewai")

import asyncio  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from crewai.tools import BaseTool, tool  # noqa: E402
from crewai_fakes import call_tool, final, make_crew, tool_calls  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from tbay_crewai import (  # noqa: E402
    CrewAIAdapter,
    TbayCrewTool,
    TbayRefusal,
    guard_tool,
    register_tbay_hooks,
    unregister_tbay_hooks,
)

from tbay_core import (  # noqa: E402
    ApprovalPending,
    PolicyError,
    TbayClient,
    ToolNameClash,
    ToolPaused,
    guard_toolkit,
    guarded,
    scope,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PATHS = ["react", "native"]


# ---------------------------------------------------------------------------- fixtures


class Toolbox:
    """Fresh CrewAI tools for one test, counting how often each body really ran."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {"lookup_order": 0, "order_status": 0, "refund_order": 0,
                                     "fx_quote": 0, "wipe_account": 0}
        runs = self.runs

        @tool("lookup_order")
        def lookup_order(query: str) -> str:
            """Look an order up in the order database."""
            runs["lookup_order"] += 1
            return f"order record #{runs['lookup_order']} for {query}"

        @tool("order_status")
        def order_status(order_id: str) -> str:
            """The shipping status of an order."""
            runs["order_status"] += 1
            return f"order {order_id} shipped"

        @tool("refund_order")
        def refund_order(order_id: str, amount: float) -> str:
            """Refund an order (irreversible)."""
            runs["refund_order"] += 1
            return f"refunded {amount:.2f} on order {order_id}"

        @tool("fx_quote")
        def fx_quote(currency: str) -> str:
            """A live exchange-rate quote."""
            runs["fx_quote"] += 1
            return f"{currency} quote #{runs['fx_quote']}"

        @tool("wipe_account")
        def wipe_account(account: str) -> str:
            """Delete an account."""
            runs["wipe_account"] += 1
            return f"wiped {account}"

        self.lookup_order = lookup_order
        self.order_status = order_status
        self.refund_order = refund_order
        self.fx_quote = fx_quote
        self.wipe_account = wipe_account

    def all(self) -> list[BaseTool]:
        return [self.lookup_order, self.order_status, self.refund_order, self.fx_quote]


@pytest.fixture
def tools() -> Toolbox:
    return Toolbox()


@pytest.fixture
def policies(client: TbayClient) -> dict[str, str]:
    """Lookups audited on replay (so a replay served by tbay leaves a trace); refunds deferred."""
    client.policies["lookups"] = client.policies["readonly"].copy(name="lookups", audit_replays=True)
    client.policies["refunds"] = client.policies["destructive"].copy(name="refunds",
                                                                    approval_mode="defer")
    return {"lookup_order": "lookups", "order_status": "readonly", "refund_*": "refunds",
            "fx_quote": "volatile"}


@pytest.fixture
def hooks_cleanup() -> Iterator[None]:
    yield
    unregister_tbay_hooks()


def replays(client: TbayClient, tool_name: str) -> int:
    return next((row["replays"] for row in client.stats() if row["tool"] == tool_name), 0)


def reject_pending_then(client: TbayClient, step: Any) -> Any:
    """A script step: a human rejects the pending refund between two model turns, then ``step``."""

    def act(messages: list[dict[str, Any]]) -> Any:
        pending = client.pending()
        assert [row.tool_name for row in pending] == ["refund_order"], pending
        client.reject(pending[0].id, by="alice", reason="order not eligible")
        return step

    return act


def support_script(client: TbayClient, native: bool) -> list[Any]:
    """Look up, check status, look up again (same arguments), try a refund twice, finish.

    Status calls sit between the repeated calls because CrewAI's ReAct path
    refuses an identical call made twice in a row before any tool runs.
    """
    refund = call_tool(native, "refund_order", {"order_id": "A7", "amount": 120})
    status = call_tool(native, "order_status", {"order_id": "A7"})
    return [
        call_tool(native, "lookup_order", {"query": "A7"}),
        status,
        call_tool(native, "lookup_order", {"query": "A7"}),
        refund,
        reject_pending_then(client, status),
        refund,
        final("done", native=native),
    ]


def assert_support_story(client: TbayClient, tools: Toolbox, results: list[str], output: Any) -> None:
    assert output.raw == "done"
    # the body ran once; the model saw the same (replayed) record twice
    assert tools.runs["lookup_order"] == 1
    assert len(results) == 6, results
    assert results[0].startswith("order record #1 for A7"), results
    assert results[2].startswith("order record #1 for A7"), results
    # the second lookup was answered by tbay (audited replay), not by CrewAI's cache
    assert replays(client, "lookup_order") == 1
    # the destructive call never ran; the model read the pending text, then the rejection
    assert tools.runs["refund_order"] == 0
    assert results[3].startswith("[tbay: ApprovalPending]"), results[3]
    assert "waits for a human" in results[3]
    assert results[5].startswith("[tbay: ApprovalRejected]"), results[5]
    assert "alice" in results[5] and "order not eligible" in results[5]
    assert "Do not retry" in results[5]
    assert tools.runs["order_status"] == 1
    lookups = client.executions(tool="lookup_order")
    assert [row.status for row in lookups] == ["SUCCEEDED"]
    assert lookups[0].args == {"query": "A7"}
    refunds = client.executions(tool="refund_order")
    assert [(row.status, row.decided_by) for row in refunds] == [("REJECTED", "alice")]


# ---------------------------------------------------------------------------- the wrapper


@pytest.mark.parametrize("path", PATHS)
def test_crew_with_guarded_tools_replays_and_gates(client: TbayClient, tools: Toolbox,
                                                   policies: dict[str, str], path: str) -> None:
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    assert all(isinstance(each, TbayCrewTool) for each in guarded_tools)
    crew, llm = make_crew(guarded_tools, support_script(client, path == "native"),
                          native=path == "native")
    output = crew.kickoff()
    assert_support_story(client, tools, llm.tool_results(), output)


@pytest.mark.parametrize("path", PATHS)
def test_crewai_cache_is_off_for_guarded_tools(client: TbayClient, tools: Toolbox,
                                               policies: dict[str, str], path: str) -> None:
    native = path == "native"
    script = [
        call_tool(native, "fx_quote", {"currency": "EUR"}),
        call_tool(native, "order_status", {"order_id": "B1"}),
        call_tool(native, "fx_quote", {"currency": "EUR"}),
        final("quoted", native=native),
    ]
    # Control: unguarded, CrewAI's cache (Crew(cache=True)) answers the repeat itself.
    crew, llm = make_crew([tools.fx_quote, tools.order_status], list(script), native=native)
    assert crew.kickoff().raw == "quoted"
    assert tools.runs["fx_quote"] == 1
    assert llm.tool_results()[2].startswith("EUR quote #1")

    # Guarded as volatile: tbay runs it every time, so CrewAI's cache must not answer.
    guarded_tools = guard_toolkit([tools.fx_quote, tools.order_status], policies, client=client)
    assert guarded_tools[0].cache_function({"currency": "EUR"}, "x") is False
    crew, llm = make_crew(guarded_tools, list(script), native=native)
    assert crew.kickoff().raw == "quoted"
    assert tools.runs["fx_quote"] == 3
    results = llm.tool_results()
    assert results[0].startswith("EUR quote #2") and results[2].startswith("EUR quote #3"), results
    assert len(client.executions(tool="fx_quote")) == 2


@pytest.mark.parametrize("style", ["wrapper", "hooks"])
def test_parallel_identical_native_calls_run_once(client: TbayClient, tools: Toolbox,
                                                  policies: dict[str, str], style: str,
                                                  hooks_cleanup: None) -> None:
    """CrewAI runs the tool calls of one model turn in a thread pool: tbay's singleflight applies."""
    if style == "wrapper":
        crew_tools = guard_toolkit(tools.all(), policies, client=client)
    else:
        register_tbay_hooks(policies, client)
        crew_tools = tools.all()
    both = tool_calls(("lookup_order", {"query": "P1"}), ("lookup_order", {"query": "P1"}),
                      ("order_status", {"order_id": "P1"}))
    crew, llm = make_crew(crew_tools, [both, final("ok", native=True)], native=True)
    assert crew.kickoff().raw == "ok"
    assert tools.runs["lookup_order"] == 1
    results = llm.tool_results()
    assert results[:2] == ["order record #1 for P1"] * 2 and results[2] == "order P1 shipped"
    assert len(client.executions(tool="lookup_order")) == 1


def test_repeated_kickoffs_replay_across_runs(client: TbayClient, tools: Toolbox,
                                              policies: dict[str, str]) -> None:
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    for _ in range(3):
        crew, llm = make_crew(guarded_tools, [call_tool(False, "lookup_order", {"query": "C3"}),
                                              final("ok")], native=False)
        assert crew.kickoff().raw == "ok"
        assert llm.tool_results()[0].startswith("order record #1 for C3")
    assert tools.runs["lookup_order"] == 1
    assert replays(client, "lookup_order") == 2


def test_deferred_call_runs_after_approval_in_a_later_kickoff(client: TbayClient, tools: Toolbox,
                                                              policies: dict[str, str]) -> None:
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    refund = call_tool(True, "refund_order", {"order_id": "D4", "amount": 80})
    crew, llm = make_crew(guarded_tools, [refund, final("asked", native=True)], native=True)
    assert crew.kickoff().raw == "asked"
    assert llm.tool_results()[0].startswith("[tbay: ApprovalPending]")
    assert tools.runs["refund_order"] == 0
    (pending,) = client.pending()
    client.approve(pending.id, by="bob", reason="verified")
    crew, llm = make_crew(guarded_tools, [refund, final("refunded", native=True)], native=True)
    assert crew.kickoff().raw == "refunded"
    assert llm.tool_results() == ["refunded 80.00 on order D4"]
    assert tools.runs["refund_order"] == 1
    assert client.get(pending.id).status == "SUCCEEDED"


def test_scope_tenant_and_agent_reach_the_audit_log(client: TbayClient, tools: Toolbox,
                                                    policies: dict[str, str]) -> None:
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    crew, _ = make_crew(guarded_tools, [call_tool(True, "order_status", {"order_id": "E5"}),
                                        final("ok", native=True)], native=True)
    with scope(tenant="acme", agent="crew-bot"):
        crew.kickoff()
    (row,) = client.executions(tool="order_status")
    assert (row.tenant, row.agent) == ("acme", "crew-bot")


def test_async_kickoff_keeps_the_scope_and_replays(client: TbayClient, tools: Toolbox,
                                                   policies: dict[str, str]) -> None:
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    script = [call_tool(False, "lookup_order", {"query": "F6"}),
              call_tool(False, "order_status", {"order_id": "F6"}),
              call_tool(False, "lookup_order", {"query": "F6"}),
              final("ok")]
    crew, llm = make_crew(guarded_tools, script, native=False)

    async def main() -> Any:
        async with scope(tenant="acme"):
            return await crew.akickoff()

    assert asyncio.run(main()).raw == "ok"
    assert tools.runs["lookup_order"] == 1
    results = llm.tool_results()
    assert results[0].startswith("order record #1 for F6")
    assert results[2].startswith("order record #1 for F6")
    assert {row.tenant for row in client.executions()} == {"acme"}


# ---------------------------------------------------------------------------- the wrapper, directly


class Receipt(BaseModel):
    order_id: str
    amount: float


class IssueReceipt(BaseTool):
    name: str = "Issue Receipt"
    description: str = "Issue a receipt for an order."
    calls: int = 0

    def _run(self, order_id: str, amount: float = 10.0) -> Receipt:
        self.calls += 1
        return Receipt(order_id=order_id, amount=amount)


def test_wrapper_is_a_drop_in(client: TbayClient, tools: Toolbox) -> None:
    original = IssueReceipt()
    wrapped = guard_tool(original, "mutating", client=client)
    assert isinstance(wrapped, BaseTool) and isinstance(wrapped, TbayCrewTool)
    assert (wrapped.name, wrapped.description) == (original.name, original.description)
    assert wrapped.args_schema is original.args_schema
    assert wrapped.result_schema is original.result_schema
    assert wrapped.formatted_description == original.formatted_description
    assert wrapped.wrapped_tool is original
    assert wrapped.tbay_policy == "mutating"
    adapter = CrewAIAdapter()
    assert adapter.handles(original) and not adapter.handles(lambda: None)
    assert adapter.tool_name(original) == "Issue Receipt"

    # defaults are part of the validated arguments: these are one call
    first = wrapped.run(order_id="R1")
    again = wrapped.run(order_id="R1", amount=10.0)
    positional = wrapped.run("R1")
    assert first == again == positional == Receipt(order_id="R1", amount=10.0)
    assert type(again) is Receipt  # rebuilt from the return annotation on replay
    assert original.calls == 1
    assert wrapped.format_output_for_agent(again) == original.format_output_for_agent(again)


def test_async_run_paths(client: TbayClient) -> None:
    bodies: list[str] = []

    @tool("fetch_page")
    async def fetch_page(url: str) -> str:
        """Fetch a page."""
        bodies.append(url)
        await asyncio.sleep(0)
        return f"page {url}"

    @tool("count_words")
    def count_words(text: str) -> int:
        """Count words."""
        bodies.append(text)
        return len(text.split())

    fetch, count = guard_toolkit([fetch_page, count_words], {"*": "readonly"}, client=client)

    async def main() -> None:
        assert await fetch.arun(url="a") == "page a"
        assert await fetch.arun(url="a") == "page a"
        assert await count.arun(text="x y z") == 3
        assert count.run(text="x y z") == 3

    asyncio.run(main())
    assert fetch.run(url="a") == "page a"  # the sync path of an async tool shares the key
    assert bodies == ["a", "x y z"]


def test_structured_tool_ainvoke_stays_on_the_event_loop(client: TbayClient, tools: Toolbox,
                                                        policies: dict[str, str]) -> None:
    """CrewAI's async tool path (``ToolUsage.ause``) awaits ``ainvoke``: it must keep the scope."""
    (lookup,) = guard_toolkit([tools.lookup_order], policies, client=client)
    structured = lookup.to_structured_tool()
    assert structured.name == "lookup_order" and structured.args_schema is lookup.args_schema

    async def main() -> list[Any]:
        async with scope(tenant="acme"):
            return [await structured.ainvoke({"query": "K1"}), await structured.ainvoke('{"query": "K1"}'),
                    structured.invoke({"query": "K1"})]

    results = asyncio.run(main())
    assert results == ["order record #1 for K1"] * 3
    assert tools.runs["lookup_order"] == 1
    assert structured.current_usage_count == 3
    (row,) = client.executions(tool="lookup_order")
    assert row.tenant == "acme"


def test_refusals_are_text_for_agents_and_exceptions_for_python(client: TbayClient,
                                                                tools: Toolbox,
                                                                policies: dict[str, str]) -> None:
    @guarded(client, policy="refunds")
    def refund_by_hand(order_id: str, amount: float) -> str:
        return "refunded"

    refund, plain = guard_toolkit([tools.refund_order, refund_by_hand], policies, client=client)
    assert isinstance(refund, TbayCrewTool) and callable(plain) and not isinstance(plain, BaseTool)

    text = refund.run(order_id="G7", amount=5)
    assert isinstance(text, TbayRefusal) and isinstance(text.error, ApprovalPending)
    assert text.startswith("[tbay: ApprovalPending]")
    assert refund.format_output_for_agent(text) == str(text)
    with pytest.raises(ApprovalPending):
        refund.call(order_id="G7", amount=5)
    with pytest.raises(ApprovalPending):
        asyncio.run(refund.acall(order_id="G7", amount=5))
    with pytest.raises(ApprovalPending):
        plain("G7", 5)

    client.pause("fx_quote", reason="maintenance", by="ops")
    (quote,) = guard_toolkit([tools.fx_quote], policies, client=client)
    paused = asyncio.run(quote.arun(currency="USD"))
    assert isinstance(paused, TbayRefusal) and isinstance(paused.error, ToolPaused)
    assert "maintenance" in paused
    with pytest.raises(ToolPaused):
        quote.call(currency="USD")
    assert tools.runs["refund_order"] == tools.runs["fx_quote"] == 0


def test_the_owner_gets_the_real_exception_later_callers_a_replayed_failure(client: TbayClient) -> None:
    attempts: list[str] = []

    @tool("send_email")
    def send_email(to: str) -> str:
        """Send an email."""
        attempts.append(to)
        raise ConnectionError("smtp down")

    (send,) = guard_toolkit([send_email], {"send_email": "mutating"}, client=client)
    with pytest.raises(ConnectionError, match="smtp down"):
        send.run(to="x@example.com")
    replayed = send.run(to="x@example.com")
    assert isinstance(replayed, TbayRefusal) and replayed.startswith("[tbay: ExecutionFailed]")
    assert "smtp down" in replayed
    assert attempts == ["x@example.com"]


def test_guarding_errors(client: TbayClient, tools: Toolbox) -> None:
    with pytest.raises(PolicyError, match="wipe_account"):
        guard_toolkit([tools.lookup_order, tools.wipe_account], {"lookup_order": "readonly"},
                      client=client)
    with pytest.raises(PolicyError, match="unknown policy 'readonyl'"):
        guard_toolkit([tools.lookup_order], {"*": "readonyl"}, client=client)
    (wrapped,) = guard_toolkit([tools.lookup_order], {"*": "readonly"}, client=client)
    with pytest.raises(TypeError, match="already guarded"):
        guard_tool(wrapped, "readonly", client=client)

    @tool("lookup_order")
    def another_lookup(query: str) -> str:
        """A different function under the same tool name."""
        return "other"

    with pytest.raises(ToolNameClash):
        guard_toolkit([another_lookup], {"*": "readonly"}, client=client)

    @guarded(client, policy="readonly")
    def already(query: str) -> str:
        """Guarded as a function first."""
        return query

    with pytest.raises(TypeError, match="@guarded"):
        guard_tool(tool("already")(already), "readonly", client=client)


# ---------------------------------------------------------------------------- the hooks


@pytest.mark.parametrize("path", PATHS)
def test_hooks_guard_unwrapped_tools_in_a_crew(client: TbayClient, tools: Toolbox,
                                               policies: dict[str, str], path: str,
                                               hooks_cleanup: None) -> None:
    native = path == "native"
    hooks = register_tbay_hooks(policies, client)
    assert hooks.installed
    script = support_script(client, native)
    # An unmatched tool is blocked (fail closed) before the final answer.
    script.insert(-1, call_tool(native, "wipe_account", {"account": "acme"}))
    crew, llm = make_crew([*tools.all(), tools.wipe_account], script, native=native)
    output = crew.kickoff()
    results = llm.tool_results()
    assert results[-1].startswith("[tbay] tool 'wipe_account' is not covered"), results
    assert tools.runs["wipe_account"] == 0
    assert_support_story(client, tools, results[:-1], output)
    (row,) = client.executions(tool="lookup_order")
    assert row.agent == "support agent"
    assert set(row.links) == {"crewai_task_id", "crewai_crew_id"}


def test_hooks_replay_identical_calls_in_a_row_and_across_kickoffs(client: TbayClient,
                                                                   tools: Toolbox,
                                                                   policies: dict[str, str],
                                                                   hooks_cleanup: None) -> None:
    with register_tbay_hooks(policies, client) as hooks:
        lookup = call_tool(False, "lookup_order", {"query": "H8"})
        for _ in range(2):
            crew, llm = make_crew(tools.all(), [lookup, lookup, final("ok")], native=False)
            assert crew.kickoff().raw == "ok"
            results = llm.tool_results()
            assert [r.startswith("order record #1 for H8") for r in results] == [True, True]
        assert hooks.installed
    assert not hooks.installed
    assert tools.runs["lookup_order"] == 1
    assert replays(client, "lookup_order") == 3

    # unregistered: CrewAI runs the tool itself again
    crew, llm = make_crew(tools.all(), [lookup, final("ok")], native=False)
    crew.kickoff()
    assert tools.runs["lookup_order"] == 2


def test_hooks_leave_wrapped_tools_to_their_wrapper(client: TbayClient, tools: Toolbox,
                                                    policies: dict[str, str],
                                                    hooks_cleanup: None) -> None:
    register_tbay_hooks({"*": "volatile"}, client)  # would run every call, if it applied
    guarded_tools = guard_toolkit(tools.all(), policies, client=client)
    lookup = call_tool(True, "lookup_order", {"query": "J9"})
    crew, llm = make_crew(guarded_tools, [lookup, lookup, final("ok", native=True)], native=True)
    assert crew.kickoff().raw == "ok"
    assert tools.runs["lookup_order"] == 1
    assert {row.policy_name for row in client.executions()} == {"lookups"}


def test_hooks_never_let_two_tools_share_a_name(client: TbayClient, tools: Toolbox,
                                               hooks_cleanup: None) -> None:
    register_tbay_hooks({"*": "readonly"}, client)
    crew, _ = make_crew([tools.lookup_order], [call_tool(True, "lookup_order", {"query": "L1"}),
                                               final("ok", native=True)], native=True)
    crew.kickoff()

    @tool("lookup_order")
    def other_lookup(query: str) -> str:
        """A different tool under the same name: it must not get the first tool's results."""
        raise AssertionError("must not run")

    crew, llm = make_crew([other_lookup], [call_tool(True, "lookup_order", {"query": "L1"}),
                                           final("ok", native=True)], native=True)
    assert crew.kickoff().raw == "ok"
    (text,) = llm.tool_results()
    assert text.startswith("[tbay] the call to tool 'lookup_order' was blocked"), text
    assert "ToolNameClash" in text
    assert tools.runs["lookup_order"] == 1


def test_hooks_match_sanitised_names_and_report_tool_failures(client: TbayClient,
                                                              hooks_cleanup: None) -> None:
    attempts: list[str] = []

    @tool("Notify Customer")
    def notify(customer: str, channel: str = "email") -> str:
        """Notify a customer."""
        attempts.append(customer)
        raise ConnectionError("gateway down")

    receipt = IssueReceipt()
    # exact (sanitised) names win over the pattern listed first
    register_tbay_hooks({"*": "volatile", "issue_receipt": "mutating", "notify_customer": "mutating"},
                        client)
    script = [
        tool_calls(("issue_receipt", {"order_id": "M1"})),
        tool_calls(("issue_receipt", {"order_id": "M1", "amount": 10.0})),  # the default: one call
        tool_calls(("notify_customer", {"customer": "c1"})),
        tool_calls(("notify_customer", {"customer": "c1", "channel": "email"})),
        final("ok", native=True),
    ]
    crew, llm = make_crew([receipt, notify], script, native=True)
    assert crew.kickoff().raw == "ok"
    first, second, failed, replayed = llm.tool_results()
    assert first == second == Receipt(order_id="M1", amount=10.0).model_dump_json()
    assert receipt.calls == 1
    assert failed == "Error executing tool: gateway down"
    assert replayed.startswith("[tbay: ExecutionFailed]") and "gateway down" in replayed
    assert attempts == ["c1"]
    rows = {row.tool_name: row for row in client.executions()}
    assert rows["Issue Receipt"].policy_name == "mutating"
    assert rows["Issue Receipt"].args == {"order_id": "M1", "amount": 10.0}
    assert (rows["Notify Customer"].status, rows["Notify Customer"].error_type) == (
        "FAILED", "ConnectionError")


def test_hook_registration_errors_and_unregister(client: TbayClient, hooks_cleanup: None) -> None:
    with pytest.raises(PolicyError, match="unknown policy"):
        register_tbay_hooks({"*": "readonyl"}, client)
    with pytest.raises(PolicyError, match="empty"):
        register_tbay_hooks({}, client)
    first = register_tbay_hooks({"*": "readonly"}, client)
    second = register_tbay_hooks({"*": "readonly"}, client)
    assert unregister_tbay_hooks(first) == 1
    assert unregister_tbay_hooks(first) == 0
    assert second.installed
    assert unregister_tbay_hooks() == 1
    assert not second.installed


# ---------------------------------------------------------------------------- packaging and demo


def test_core_never_imports_crewai() -> None:
    code = (
        "import sys, tbay_core\n"
        "from tbay_core import guard_toolkit, TbayClient\n"
        "def f(x: int) -> int: return x\n"
        "c = TbayClient('sqlite:///' + sys.argv[1])\n"
        "guard_toolkit([f], {'*': 'readonly'}, client=c)\n"
        "assert 'crewai' not in sys.modules and 'tbay_crewai' not in sys.modules, sorted(sys.modules)\n"
    )
    db = Path(tempfile.mkdtemp(prefix="tbay-crewai-core-")) / "db.sqlite"
    result = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_demo_runs_offline(sqlite_url: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TBAY_DB_URL"] = sqlite_url
    env["HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "crewai_demo.py")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "lookup_order body ran 1 time(s) for 2 identical calls" in out, out
    assert "the model saw: [tbay: ApprovalPending]" in out, out
    assert "refund_order body ran 0 time(s) before approval" in out, out
    assert "refund_order body ran 1 time(s) after approval" in out, out
    with TbayClient(sqlite_url) as client:
        statuses = sorted(row.status for row in client.executions(tool="refund_order"))
    assert statuses == ["SUCCEEDED"]

