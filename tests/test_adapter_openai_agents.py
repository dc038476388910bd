"""The OpenAI Agents SDK adapter, driven end to end through real ``Runner.run`` / ``Runner.run_sync``.

The model is scripted (``agents_fakes.ScriptedModel``): it emits function calls
and a final message, and keeps every input it receives, so the tests read what
the model saw as each tool's result. Nothing touches the network: tracing is
off and the model object is passed to the agent directly. Every test runs on
SQLite and on PostgreSQL (the ``client`` fixture).
"""

from __future__ import annotations

from frameworks import need

need("agents", "openai-agents")

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from agents import (  # noqa: E402
    Agent,
    FunctionTool,
    Handoff,
    RunConfig,
    Runner,
    function_tool,
    handoff,
    set_tracing_disabled,
)
from agents.tool_context import ToolContext  # noqa: E402
from agents_fakes import ScriptedModel, message, tool_call, tool_outputs  # noqa: E402
from tbay_openai_agents import (  # noqa: E402
    AgentsAdapter,
    TbayRunHooks,
    guard_agent,
    guard_function_tool,
    is_guarded,
    original_tool,
)

from tbay_core import (  # noqa: E402
    PolicyError,
    TbayClient,
    ToolNameClash,
    guard_toolkit,
    guarded,
    scope,
)

set_tracing_disabled(True)


def run(agent: Agent[Any], text: str = "go", **options: Any) -> Any:
    """One async ``Runner.run`` to completion (the tests are plain sync functions)."""
    return asyncio.run(Runner.run(agent, text, **options))


def rows(client: TbayClient, tool: str) -> list[Any]:
    return client.executions(tool=tool, limit=None)


# ---------------------------------------------------------------------------- the wrapper itself


def test_guarded_tool_is_a_drop_in_copy(client: TbayClient) -> None:
    @function_tool(name_override="find_order", description_override="Find an order by id.",
                   strict_mode=False)
    def find(order_id: str, verbose: bool = False) -> str:
        return order_id

    @function_tool
    def strict_tool(customer_id: str, amount: float) -> str:
        """Refund a customer."""
        return customer_id

    for original in (find, strict_tool):
        invoker = original.on_invoke_tool
        guarded_tool = guard_function_tool(original, "mutating", client=client)
        assert isinstance(guarded_tool, FunctionTool) and type(guarded_tool) is type(original)
        assert guarded_tool is not original and original.on_invoke_tool is invoker  # untouched
        for spec in dataclasses.fields(FunctionTool):
            if spec.name != "on_invoke_tool":
                assert getattr(guarded_tool, spec.name) == getattr(original, spec.name), spec.name
        assert is_guarded(guarded_tool) and not is_guarded(original)
        assert original_tool(guarded_tool) is original
        # guarding again re-guards the original instead of nesting two guards
        again = guard_function_tool(guarded_tool, "readonly", client=client)
        assert original_tool(again) is original
    assert find.strict_json_schema is False and strict_tool.strict_json_schema is True


def test_unknown_policy_fails_when_guarding(client: TbayClient) -> None:
    @function_tool
    def search(query: str) -> str:
        """Search."""
        return query

    with pytest.raises(PolicyError, match="did you mean 'readonly'"):
        guard_function_tool(search, "readonyl", client=client)


def test_guard_toolkit_guards_function_tools_and_plain_functions(client: TbayClient) -> None:
    calls: list[str] = []

    @function_tool
    def lookup(order_id: str) -> str:
        """Look up an order."""
        calls.append(order_id)
        return f"order {order_id}"

    def plain_search(query: str) -> str:
        calls.append(query)
        return query

    adapter = AgentsAdapter()
    assert adapter.handles(lookup) and not adapter.handles(plain_search)
    assert adapter.tool_name(lookup) == "lookup"

    tools = guard_toolkit([lookup, plain_search], {"lookup": "readonly", "plain_*": "mutating"},
                          client=client)
    assert isinstance(tools[0], FunctionTool) and is_guarded(tools[0])
    assert tools[0].name == "lookup" and tools[0].params_json_schema == lookup.params_json_schema
    assert callable(tools[1]) and tools[1].__name__ == "plain_search"
    assert tools[1]("x") == tools[1]("x") == "x"
    assert calls == ["x"]

    with pytest.raises(PolicyError, match="lookup, plain_search"):
        guard_toolkit([lookup, plain_search], {"other": "readonly"}, client=client)


# ---------------------------------------------------------------------------- runs: once, replayed


def test_parallel_and_repeated_identical_calls_run_the_body_once(client: TbayClient) -> None:
    runs: list[str] = []
    entered: list[str] = []
    second_call_following = asyncio.Event()

    def tenant_of(ctx: ToolContext[Any]) -> str:
        # Called by the guarded tool just before it asks tbay; everything from here to the
        # follower's wait is synchronous, so once the second identical call has been here,
        # it follows the first one's RUNNING execution by the time the first body resumes.
        entered.append(ctx.tool_call_id)
        if len(entered) == 2:
            second_call_following.set()
        return "acme"

    @function_tool
    async def build_report(report_id: str) -> dict:
        """Build an expensive report."""
        runs.append(report_id)
        await asyncio.wait_for(second_call_following.wait(), 60)
        return {"report": report_id, "nonce": uuid.uuid4().hex}

    model = ScriptedModel([
        [tool_call("build_report", {"report_id": "q3"}, "call_1"),
         tool_call("build_report", {"report_id": "q3"}, "call_2")],
        [tool_call("build_report", {"report_id": "q3"}, "call_3")],
        [message("done")],
    ])
    agent = Agent(name="analyst", model=model, tools=[build_report])
    safe = guard_agent(agent, {"build_report": "mutating"}, client=client,
                       tenant_from_context=tenant_of)

    result = run(safe, hooks=TbayRunHooks())

    assert result.final_output == "done"
    assert runs == ["q3"]
    first_turn = tool_outputs(model.inputs[1])
    second_turn = tool_outputs(model.inputs[2])
    assert set(first_turn) == {"call_1", "call_2"}
    assert first_turn["call_1"] == first_turn["call_2"] == second_turn["call_3"]
    assert "q3" in first_turn["call_1"] and "nonce" in first_turn["call_1"]
    [execution] = rows(client, "build_report")
    assert execution.status == "SUCCEEDED" and execution.tenant == "acme"
    assert execution.args == {"report_id": "q3"}
    assert execution.links["tool_call_id"] in {"call_1", "call_2"}


def test_run_sync_replays_across_runs(client: TbayClient) -> None:
    runs: list[tuple[str, int]] = []

    @function_tool
    def charge_card(customer_id: str, cents: int) -> str:
        """Charge a customer's card."""
        runs.append((customer_id, cents))
        return f"charged {cents} to {customer_id}, receipt {uuid.uuid4().hex[:8]}"

    model = ScriptedModel([
        [tool_call("charge_card", {"customer_id": "c-1", "cents": 500}, "call_a")],
        [message("charged")],
        # a second run: the model asks for the very same charge again
        [tool_call("charge_card", {"cents": 500, "customer_id": "c-1"}, "call_b")],
        [message("charged again?")],
    ])
    safe = guard_agent(Agent(name="billing", model=model, tools=[charge_card]),
                       {"*": "mutating"}, client=client)

    first = Runner.run_sync(safe, "charge c-1")
    receipt = tool_outputs(model.inputs[1])["call_a"]
    second = Runner.run_sync(safe, "charge c-1 again")

    assert (first.final_output, second.final_output) == ("charged", "charged again?")
    assert runs == [("c-1", 500)]
    assert tool_outputs(model.inputs[3])["call_b"] == receipt
    assert len(rows(client, "charge_card")) == 1


def test_a_failing_body_is_recorded_and_its_failure_replayed(client: TbayClient) -> None:
    runs: list[int] = []

    @function_tool
    def flaky_transfer(amount: int) -> str:
        """Move money."""
        runs.append(amount)
        raise ConnectionError("bank unreachable")

    model = ScriptedModel([
        [tool_call("flaky_transfer", {"amount": 7}, "call_1")],
        [tool_call("flaky_transfer", {"amount": 7}, "call_2")],
        [message("gave up")],
    ])
    safe = guard_agent(Agent(name="ops", model=model, tools=[flaky_transfer]), {"*": "mutating"},
                       client=client)

    assert run(safe).final_output == "gave up"
    assert runs == [7]
    # the owner's failure went through the SDK's own failure_error_function, as without tbay
    assert "error occurred" in tool_outputs(model.inputs[1])["call_1"].lower()
    replayed = tool_outputs(model.inputs[2])["call_2"]
    assert replayed.startswith("[tbay: ExecutionFailed]") and "bank unreachable" in replayed
    [execution] = rows(client, "flaky_transfer")
    assert execution.status == "FAILED" and execution.error_type == "ConnectionError"


def test_a_hand_built_function_tool_is_guarded_too(client: TbayClient) -> None:
    runs: list[dict[str, Any]] = []

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        runs.append(json.loads(arguments))
        return f"pinged {len(runs)}"

    ping = FunctionTool(
        name="ping_host", description="Ping a host.",
        params_json_schema={"type": "object", "properties": {"host": {"type": "string"}},
                            "required": ["host"], "additionalProperties": False},
        on_invoke_tool=invoke,
    )
    model = ScriptedModel([
        [tool_call("ping_host", {"host": "db1"}, "call_1")],
        [tool_call("ping_host", {"host": "db1"}, "call_2")],
        [message("ok")],
    ])
    safe = guard_agent(Agent(name="ops", model=model, tools=[ping]), {"ping_*": "readonly"},
                       client=client)

    assert run(safe).final_output == "ok"
    assert runs == [{"host": "db1"}]
    assert tool_outputs(model.inputs[2])["call_2"] == "pinged 1"


def test_arguments_that_are_not_a_json_object_never_run(client: TbayClient) -> None:
    runs: list[str] = []

    @function_tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        runs.append(path)
        return "deleted"

    broken = tool_call("delete_file", {}, "call_1").model_copy(update={"arguments": "{not json"})
    model = ScriptedModel([[broken], [message("sorry")]])
    safe = guard_agent(Agent(name="ops", model=model, tools=[delete_file]), {"*": "destructive"},
                       client=client)

    assert run(safe).final_output == "sorry"
    assert runs == []
    assert "call_1" in tool_outputs(model.inputs[1])
    assert rows(client, "delete_file") == []


# ---------------------------------------------------------------------------- approval and refusals


def test_a_rejected_destructive_call_never_runs_and_the_run_completes(client: TbayClient) -> None:
    runs: list[str] = []

    @function_tool
    def wipe_account(account_id: str) -> str:
        """Delete an account and all its data."""
        runs.append(account_id)
        return "wiped"

    client.policies["wipes"] = client.policies["destructive"].copy(
        name="wipes", approval_mode="block", approval_timeout="10m")
    model = ScriptedModel([
        [tool_call("wipe_account", {"account_id": "acct-9"}, "call_1")],
        [message("the wipe was refused")],
    ])
    safe = guard_agent(Agent(name="admin", model=model, tools=[wipe_account]), {"*": "wipes"},
                       client=client)

    def reviewer() -> None:  # a human, elsewhere, says no while the run waits
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for execution in client.pending():
                if execution.tool_name == "wipe_account":
                    client.reject(execution.id, by="ops-lead", reason="wrong account")
                    return
            time.sleep(0.01)

    human = threading.Thread(target=reviewer)
    human.start()
    try:
        result = run(safe)
    finally:
        human.join()

    assert result.final_output == "the wipe was refused"
    assert runs == []
    seen = tool_outputs(model.inputs[1])["call_1"]
    assert seen.startswith("[tbay: ApprovalRejected]")
    assert "ops-lead" in seen and "wrong account" in seen and "Do not retry" in seen
    [execution] = rows(client, "wipe_account")
    assert (execution.status, execution.decided_by) == ("REJECTED", "ops-lead")


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_deferred_approval_then_the_same_call_again(client: TbayClient, decision: str) -> None:
    runs: list[tuple[str, float]] = []

    @function_tool
    def refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        runs.append((order_id, amount))
        return f"refunded {amount:.2f} on {order_id}"

    client.policies["refunds"] = client.policies["destructive"].copy(
        name="refunds", approval_mode="defer")
    call = {"order_id": "o-8", "amount": 500.0}
    model = ScriptedModel([
        [tool_call("refund", call, "call_1")], [message("waiting for approval")],
        [tool_call("refund", call, "call_2")], [message("second run done")],
    ])
    safe = guard_agent(Agent(name="support", model=model, tools=[refund]), {"refund": "refunds"},
                       client=client)

    assert run(safe).final_output == "waiting for approval"
    pending_text = tool_outputs(model.inputs[1])["call_1"]
    assert pending_text.startswith("[tbay: ApprovalPending]") and runs == []
    [waiting] = client.pending()
    assert waiting.tool_name == "refund" and waiting.id in pending_text
    getattr(client, decision)(waiting.id, by="manager", reason="checked")

    assert run(safe).final_output == "second run done"
    seen = tool_outputs(model.inputs[3])["call_2"]
    if decision == "approve":
        assert runs == [("o-8", 500.0)] and seen == "refunded 500.00 on o-8"
        assert client.get(waiting.id).status == "SUCCEEDED"
    else:
        assert runs == [] and seen.startswith("[tbay: ApprovalRejected]")


def test_paused_and_rate_limited_calls_reach_the_model_as_text(client: TbayClient) -> None:
    runs: list[str] = []

    @function_tool
    def send_sms(to: str) -> str:
        """Send a text message."""
        runs.append(to)
        return f"sent to {to}"

    @function_tool
    def restart_service(name: str) -> str:
        """Restart a service."""
        runs.append(name)
        return "restarted"

    client.policies["sms"] = client.policies["mutating"].copy(name="sms", rate_limit="1/1h")
    client.pause(tool="restart_service", reason="incident 12", by="sre")
    model = ScriptedModel([
        [tool_call("send_sms", {"to": "+100"}, "call_1"),
         tool_call("restart_service", {"name": "api"}, "call_2")],
        [tool_call("send_sms", {"to": "+200"}, "call_3")],
        [message("finished")],
    ])
    safe = guard_agent(Agent(name="ops", model=model, tools=[send_sms, restart_service]),
                       {"send_sms": "sms", "restart_service": "mutating"}, client=client)

    assert run(safe).final_output == "finished"
    assert runs == ["+100"]
    first, second = tool_outputs(model.inputs[1]), tool_outputs(model.inputs[2])
    assert first["call_1"] == "sent to +100"
    assert first["call_2"].startswith("[tbay: ToolPaused]") and "incident 12" in first["call_2"]
    assert second["call_3"].startswith("[tbay: RateLimitExceeded]")


# ---------------------------------------------------------------------------- guard_agent


def _support_desk() -> tuple[Agent[Any], Agent[Any], Agent[Any], dict[str, list[Any]], ScriptedModel]:
    """triage -> billing (Agent) and -> support (Handoff); billing -> triage (a cycle)."""
    calls: dict[str, list[Any]] = {"lookup": [], "refund": []}

    @function_tool
    def lookup(order_id: str) -> str:
        """Look up an order."""
        calls["lookup"].append(order_id)
        return f"order {order_id}: shipped"

    @function_tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        calls["refund"].append(order_id)
        return f"refunded {order_id}"

    model = ScriptedModel([])
    support = Agent(name="support", model=model, tools=[lookup])
    billing = Agent(name="billing", model=model, tools=[refund])
    triage = Agent(name="triage", model=model, tools=[lookup],
                   handoffs=[billing, handoff(support)])
    billing.handoffs = [triage]
    return triage, billing, support, calls, model


def test_guard_agent_copies_the_whole_handoff_graph(client: TbayClient) -> None:
    triage, billing, support, _, _ = _support_desk()
    originals = {id(agent): list(agent.tools) for agent in (triage, billing, support)}

    safe = guard_agent(triage, {"lookup": "readonly", "refund": "destructive"}, client=client)

    assert safe is not triage and safe.name == "triage"
    safe_billing, support_handoff = safe.handoffs
    assert isinstance(safe_billing, Agent) and safe_billing is not billing
    assert isinstance(support_handoff, Handoff) and support_handoff is not triage.handoffs[1]
    safe_support = support_handoff._agent_ref()
    assert safe_support is not support and safe_support.name == "support"
    assert triage.handoffs[1]._agent_ref() is support  # the original handoff is untouched
    assert safe_billing.handoffs == [safe]  # the cycle closes on the copies
    assert all(is_guarded(tool) for agent in (safe, safe_billing, safe_support) for tool in agent.tools)
    assert safe.tools[0] is safe_support.tools[0]  # one shared tool, one guarded copy
    for agent in (triage, billing, support):  # nothing of the originals changed
        assert agent.tools == originals[id(agent)] and not any(map(is_guarded, agent.tools))


def test_handoffs_run_the_guarded_tools_of_every_agent(client: TbayClient) -> None:
    triage, _, _, calls, model = _support_desk()
    model.turns = [
        [tool_call("transfer_to_billing", {}, "h_1")],                       # triage
        [tool_call("refund", {"order_id": "o-1"}, "call_1")],                # billing
        [tool_call("refund", {"order_id": "o-1"}, "call_2")],                # billing, again
        [tool_call("transfer_to_triage", {}, "h_2")],                        # billing -> triage
        [tool_call("transfer_to_support", {}, "h_3")],                       # triage -> support
        [tool_call("lookup", {"order_id": "o-1"}, "call_3")],                # support
        [message("all done")],
    ]
    client.policies["refunds"] = client.policies["mutating"].copy(name="refunds")
    safe = guard_agent(triage, {"lookup": "readonly", "refund": "refunds"}, client=client)

    result = run(safe, hooks=TbayRunHooks())

    assert result.final_output == "all done"
    assert calls == {"refund": ["o-1"], "lookup": ["o-1"]}
    assert tool_outputs(model.inputs[3])["call_2"] == "refunded o-1"
    [refund_row] = rows(client, "refund")
    [lookup_row] = rows(client, "lookup")
    assert (refund_row.agent, refund_row.policy_name, refund_row.links["tool_call_id"]) == (
        "billing", "refunds", "call_1")
    assert (lookup_row.agent, lookup_row.policy_name, lookup_row.links["tool_call_id"]) == (
        "support", "readonly", "call_3")


def test_guard_agent_fails_closed_listing_every_unmatched_tool(client: TbayClient) -> None:
    triage, billing, _, _, _ = _support_desk()
    with pytest.raises(PolicyError) as raised:
        guard_agent(triage, {"look*": "readonly"}, client=client)
    assert "refund (agent 'billing')" in str(raised.value)
    assert "lookup" not in str(raised.value)
    assert not any(is_guarded(tool) for tool in billing.tools)
    with pytest.raises(PolicyError, match="lookup \\(agent 'triage'\\).*refund \\(agent 'billing'\\)"):
        guard_agent(triage, {}, client=client)


def test_two_different_tools_under_one_name_clash(client: TbayClient) -> None:
    @function_tool(name_override="lookup")
    def lookup_orders(order_id: str) -> str:
        return order_id

    @function_tool(name_override="lookup")
    def lookup_customers(customer_id: str) -> str:
        return customer_id

    orders = Agent(name="orders", tools=[lookup_orders])
    customers = Agent(name="customers", tools=[lookup_customers], handoffs=[orders])
    with pytest.raises(ToolNameClash, match="lookup"):
        guard_agent(customers, {"*": "readonly"}, client=client)


def test_a_function_tool_made_from_a_guarded_function_is_not_guarded_twice(
    client: TbayClient,
) -> None:
    runs: list[str] = []

    def geocode(address: str) -> str:
        """Geocode an address."""
        runs.append(address)
        return f"{address}: 52.5, 13.4"

    tool = function_tool(guarded(client, policy="readonly")(geocode))
    model = ScriptedModel([
        [tool_call("geocode", {"address": "Berlin"}, "call_1")],
        [tool_call("geocode", {"address": "Berlin"}, "call_2")],
        [message("found")],
    ])
    agent = Agent(name="maps", model=model, tools=[tool])
    safe = guard_agent(agent, {"*": "readonly"}, client=client)
    assert safe.tools[0] is tool  # its own guard stands; no second, nested guard

    assert run(safe).final_output == "found"
    assert runs == ["Berlin"]
    assert len(rows(client, "geocode")) == 1
    with pytest.raises(PolicyError, match="already @guarded with policy 'readonly'"):
        guard_agent(agent, {"*": "mutating"}, client=client)


def test_an_agent_used_as_a_tool_is_one_guarded_call(client: TbayClient) -> None:
    inner_model = ScriptedModel([[message("hola")]])
    translate = Agent(name="translator", model=inner_model).as_tool(
        tool_name="translate", tool_description="Translate text to Spanish.")
    model = ScriptedModel([
        [tool_call("translate", {"input": "hello"}, "call_1")],
        [tool_call("translate", {"input": "hello"}, "call_2")],
        [message("done")],
    ])
    safe = guard_agent(Agent(name="writer", model=model, tools=[translate]), {"*": "readonly"},
                       client=client)

    assert run(safe).final_output == "done"
    assert len(inner_model.inputs) == 1  # the nested run ran once; the second call replayed it
    assert tool_outputs(model.inputs[2]) == {"call_1": "hola", "call_2": "hola"}


def test_the_sdks_own_needs_approval_still_interrupts_guarded_tools(client: TbayClient) -> None:
    runs: list[tuple[str, int]] = []

    async def above_100(ctx: Any, params: dict[str, Any], call_id: str) -> bool:
        return bool(params["amount"] > 100)

    @function_tool(needs_approval=above_100)
    def pay(to: str, amount: int) -> str:
        """Pay someone."""
        runs.append((to, amount))
        return f"paid {amount} to {to}"

    model = ScriptedModel([
        [tool_call("pay", {"to": "ann", "amount": 500}, "call_1"),
         tool_call("pay", {"to": "bob", "amount": 5}, "call_2")],
        [message("paid both")],
    ])
    safe = guard_agent(Agent(name="payer", model=model, tools=[pay]), {"*": "mutating"},
                       client=client)

    async def approve_and_resume() -> Any:
        interrupted = await Runner.run(safe, "pay them")
        assert [item.name for item in interrupted.interruptions] == ["pay"]
        assert runs == [("bob", 5)]
        state = interrupted.to_state()
        for item in interrupted.interruptions:
            state.approve(item)
        return await Runner.run(safe, state)

    assert asyncio.run(approve_and_resume()).final_output == "paid both"
    assert sorted(runs) == [("ann", 500), ("bob", 5)]
    assert {row.args["to"]: row.status for row in rows(client, "pay")} == {
        "ann": "SUCCEEDED", "bob": "SUCCEEDED"}


# ---------------------------------------------------------------------------- hooks and tenant


def test_hooks_record_agent_tool_call_id_and_run_links(client: TbayClient) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    model = ScriptedModel([
        [tool_call("get_weather", {"city": "Oslo"}, "call_w1")], [message("ok")],
        [tool_call("get_weather", {"city": "Rome"}, "call_w2")], [message("ok")],
    ])
    safe = guard_agent(Agent(name="forecaster", model=model, tools=[get_weather]),
                       {"*": "readonly"}, client=client)

    with scope(agent="outer-agent", links={"request": "r-1"}):
        run(safe, hooks=TbayRunHooks(links={"ticket": "T-42"}),
            run_config=RunConfig(group_id="thread-7", trace_id="trace_0123456789abcdef"))
        run(safe)  # no hooks: only what the scope says

    oslo = next(row for row in rows(client, "get_weather") if row.args["city"] == "Oslo")
    rome = next(row for row in rows(client, "get_weather") if row.args["city"] == "Rome")
    assert oslo.agent == "forecaster"
    assert oslo.links == {
        "request": "r-1", "framework": "openai-agents", "tool_call_id": "call_w1",
        "group_id": "thread-7", "trace_id": "trace_0123456789abcdef", "ticket": "T-42",
    }
    assert (rome.agent, rome.links) == ("outer-agent", {"request": "r-1"})


@dataclasses.dataclass
class AppContext:
    tenant: str | None = None
    org: str | None = None


def test_the_tenant_comes_from_the_run_context(client: TbayClient) -> None:
    runs: list[str] = []

    @function_tool
    def list_invoices(month: str) -> str:
        """List invoices of a month."""
        runs.append(month)
        return f"{len(runs)} invoices"

    def ask(context: Any, **guard_options: Any) -> str:
        model = ScriptedModel([[tool_call("list_invoices", {"month": "2024-05"}, "call_1")],
                               [message("listed")]])
        safe = guard_agent(Agent(name="books", model=model, tools=[list_invoices]),
                           {"*": "readonly"}, client=client, **guard_options)
        run(safe, context=context)
        return tool_outputs(model.inputs[1])["call_1"]

    assert ask(AppContext(tenant="acme")) == "1 invoices"
    assert ask({"tenant": "globex"}) == "2 invoices"  # another tenant: another key
    assert ask({"tenant": "acme"}) == "1 invoices"  # acme's result, replayed
    assert ask(AppContext(org="initech"), tenant_from_context=lambda ctx: ctx.context.org) == (
        "3 invoices")
    assert ask(AppContext(tenant="acme"), tenant="fixed") == "4 invoices"  # explicit tenant wins
    with scope(tenant="ambient"):
        assert ask(AppContext()) == "5 invoices"  # no tenant in the context: the scope's
        assert ask(AppContext(tenant="acme")) == "1 invoices"  # the run context wins over it
    refused = ask({"tenant": object()})
    assert "invoices" not in refused  # a tenant without a stable value: nothing ran

    by_tenant = {row.tenant for row in rows(client, "list_invoices")}
    assert by_tenant == {"acme", "globex", "initech", "fixed", "ambient"}
    assert len(runs) == 5


def test_tbay_core_never_imports_the_agents_sdk(python: str, tmp_path: Any) -> None:
    """Guarding plain functions, even through guard_toolkit, leaves the SDK unimported."""
    code = (
        "import sys, tbay_core\n"
        f"client = tbay_core.TbayClient('sqlite:///{tmp_path / 'core.db'}')\n"
        "def ping(host: str) -> str:\n    return host\n"
        "[guarded_ping] = tbay_core.guard_toolkit([ping], {'*': 'readonly'}, client=client)\n"
        "assert guarded_ping('db1') == 'db1'\n"
        "assert 'agents' not in sys.modules and 'tbay_openai_agents' not in sys.modules\n"
    )
    subprocess.run([python, "-c", code], check=True, timeout=120)


def test_the_demo_tells_its_story(python: str, subprocess_env: dict[str, str], db_url: str,
                                  tmp_path: Any) -> None:
    demo = Path(__file__).resolve().parent.parent / "examples" / "openai_agents_demo.py"
    env = {key: value for key, value in subprocess_env.items() if key != "OPENAI_API_KEY"}
    for _ in range(2):  # a second run against the same database tells the same story
        done = subprocess.run([python, str(demo)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert out.splitlines()[0] == f"database: {db_url}"
        assert "the lookup_order body ran 1 time(s) for 3 calls" in out
        assert "the model saw: [tbay: ApprovalPending]" in out
        assert "the refund body ran 0 time(s)" in out and "the refund body ran 1 time(s)" in out
        assert "Done: refunded 25.00 on order-" in out
    with TbayClient(db_url) as reader:
        refunds = reader.executions(tool="refund", limit=None)
        assert [row.status for row in refunds] == ["SUCCEEDED", "SUCCEEDED"]
        assert all(row.decided_by == "demo-operator" and row.agent == "support-bot"
                   and row.tenant == "acme" for row in refunds)
