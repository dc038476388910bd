"""tbay under the OpenAI Agents SDK: offline, no API key, a scripted model.

Run it with ``python examples/openai_agents_demo.py`` (needs ``pip install -e ".[openai-agents]"``).
State goes to ``$TBAY_DB_URL`` when set, else to a fresh temporary SQLite file.

A support agent, guarded with ``guard_agent``, is driven by ``Runner.run``
with a scripted ``Model`` that emits function calls, exactly as a real model
would:

1. the model calls ``lookup_order`` twice *in one turn* (the SDK runs the two
   calls concurrently) and once more in the next turn: the body runs once,
   the other two calls get the same result (singleflight, then a replay);
2. the model calls ``refund``, a destructive tool in ``defer`` mode: it does not
   run; the model gets a tool result saying it awaits approval, and the run
   ends normally;
3. an operator approves it through the client (``tbay approve ID`` in a shell
   does the same), the agent is run again, makes the same call, and the
   refund runs, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from agents import (
    Agent,
    Model,
    ModelResponse,
    Runner,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from tbay_openai_agents import TbayRunHooks, guard_agent

from tbay_core import TbayClient

set_tracing_disabled(True)  # nothing leaves this process: no trace export


# ---------------------------------------------------------------------------- a scripted model

def call(name: str, call_id: str, **arguments: Any) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(id=f"fc_{call_id}", call_id=call_id, type="function_call",
                                    name=name, arguments=json.dumps(arguments), status="completed")


def say(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(id=f"msg_{uuid.uuid4().hex[:8]}", type="message", role="assistant",
                                 status="completed",
                                 content=[ResponseOutputText(type="output_text", text=text,
                                                             annotations=[])])


def tool_results(model_input: str | list[Any]) -> dict[str, str]:
    """call_id -> the tool result text the model receives in its input."""
    found = {}
    for item in [] if isinstance(model_input, str) else model_input:
        data = item if isinstance(item, dict) else item.model_dump()
        if data.get("type") == "function_call_output":
            found[data["call_id"]] = str(data["output"])
    return found


Turn = Callable[[dict[str, str]], list[Any]]


class ScriptedModel(Model):
    """Plays one turn per request; a turn sees the tool results the model was given so far."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.seen: dict[str, str] = {}

    async def get_response(self, system_instructions: str | None, input: str | list[Any],
                           model_settings: Any, tools: list[Any], output_schema: Any,
                           handoffs: list[Any], tracing: Any, **kwargs: Any) -> ModelResponse:
        self.seen.update(tool_results(input))
        return ModelResponse(output=self.turns.pop(0)(self.seen), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("this demo does not stream")


# ---------------------------------------------------------------------------- the tools

body_runs = {"lookup_order": 0, "refund": 0}


@function_tool
async def lookup_order(order_id: str) -> dict:
    """Look up an order: its status and total."""
    body_runs["lookup_order"] += 1
    await asyncio.sleep(0.05)  # a slow backend: the second, concurrent call arrives meanwhile
    return {"order_id": order_id, "status": "delivered", "total": 25.0}


@function_tool
def refund(order_id: str, amount: float) -> str:
    """Refund an amount on an order. Irreversible."""
    body_runs["refund"] += 1
    return f"refunded {amount:.2f} on {order_id}"


@dataclass
class SupportContext:
    """The run context: guarded tools take their tenant from its ``tenant`` attribute."""

    tenant: str
    user: str


async def main() -> None:
    client = TbayClient(os.environ.get("TBAY_DB_URL")
                        or f"sqlite:///{tempfile.mkdtemp(prefix='tbay-agents-')}/tbay.db")
    print(f"database: {client.db_url}")
    client.policies["refunds"] = client.policies["destructive"].copy(
        name="refunds", approval_mode="defer")

    model = ScriptedModel()
    agent = Agent(name="support-bot", instructions="Help customers with their orders.",
                  model=model, tools=[lookup_order, refund])
    safe_agent = guard_agent(agent, {"lookup_*": "readonly", "refund": "refunds"}, client=client)
    context = SupportContext(tenant="acme", user="ada")
    order = f"order-{uuid.uuid4().hex[:6]}"  # fresh per demo run, so a second run tells the same story

    # ---- run 1: repeated lookups, then a refund that needs a human
    model.turns = [
        lambda seen: [call("lookup_order", "call_1", order_id=order),
                      call("lookup_order", "call_2", order_id=order)],
        lambda seen: [call("lookup_order", "call_3", order_id=order)],
        lambda seen: [call("refund", "call_4", order_id=order, amount=25.0)],
        lambda seen: [say(f"I asked for the refund; the tool said: {seen['call_4']}")],
    ]
    result = await Runner.run(safe_agent, f"Where is {order}? Refund it.", context=context,
                              hooks=TbayRunHooks(links={"ticket": "T-1001"}))
    print("\nrun 1")
    for call_id in ("call_1", "call_2", "call_3"):
        print(f"  lookup_order({order!r}) [{call_id}] -> {model.seen[call_id]}")
    print(f"  the lookup_order body ran {body_runs['lookup_order']} time(s) for 3 calls")
    print(f"  refund({order!r}, 25.0) -> the model saw: {model.seen['call_4']}")
    print(f"  the refund body ran {body_runs['refund']} time(s)")
    print(f"  final answer: {result.final_output[:60]}...")

    # ---- the operator approves (same as `tbay approve ID` in a shell)
    [waiting] = [row for row in client.pending() if row.args.get("order_id") == order]
    client.approve(waiting.id, by="demo-operator", reason="customer verified")
    print(f"\napproved execution {waiting.id} (in a terminal: tbay approve {waiting.id})")

    # ---- run 2: the model makes the same call again; now it runs, once
    model.turns = [
        lambda seen: [call("refund", "call_5", order_id=order, amount=25.0)],
        lambda seen: [say(f"Done: {seen['call_5']}")],
    ]
    result = await Runner.run(safe_agent, f"Is the refund of {order} through?", context=context,
                              hooks=TbayRunHooks(links={"ticket": "T-1001"}))
    print("\nrun 2")
    print(f"  refund({order!r}, 25.0) -> the model saw: {model.seen['call_5']}")
    print(f"  the refund body ran {body_runs['refund']} time(s)")
    print(f"  final answer: {result.final_output}")

    print("\naudit log (newest first):")
    for row in client.executions(limit=None):
        if row.args.get("order_id") != order:
            continue
        print(f"  {row.id}  {row.tool_name:<12} {row.status:<10} tenant={row.tenant} "
              f"agent={row.agent} tool_call_id={row.links.get('tool_call_id')} "
              f"ticket={row.links.get('ticket')} decided_by={row.decided_by}")
    client.close()


if __name__ == "__main__":
    asyncio.run(main())
