"""tbay under a CrewAI crew: a repeated tool call replayed, a destructive one gated. Offline.

Run it with ``python examples/crewai_demo.py`` (needs ``pip install -e '.[crewai]'``).
No API key: the crew's model is a scripted ``BaseLLM`` that plays a fixed
conversation through CrewAI's real agent executor (native function calling).
State goes to ``$TBAY_DB_URL``, else to a fresh temporary SQLite file.

1. The agent looks the same order up twice: the tool body runs once, and the
   second call is answered by tbay with the stored result (CrewAI's own
   result cache is switched off for guarded tools, so it cannot bypass tbay).
2. The agent asks for a refund: the tool is ``destructive`` in ``defer`` mode,
   so nothing runs; the model reads a "waits for a human" tool result and
   tells the user. An operator approves it (here through the client; in a
   terminal ``tbay approve ID``), the crew runs again, and the refund runs once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid

# CrewAI writes under $HOME when imported and can send telemetry: give it a
# throwaway home and storage dir and switch telemetry and tracing off first.
_SCRATCH = tempfile.mkdtemp(prefix="tbay-crewai-demo-")
os.environ["HOME"] = _SCRATCH
os.environ["CREWAI_STORAGE_DIR"] = _SCRATCH
os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["OTEL_SDK_DISABLED"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"

from typing import Any  # noqa: E402

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402
from pydantic import Field  # noqa: E402

from tbay_core import TbayClient, guard_toolkit  # noqa: E402

logging.getLogger("crewai").setLevel(logging.ERROR)  # e.g. "approximate token count" for the fake model

DB_URL = os.environ.get("TBAY_DB_URL") or f"sqlite:///{os.path.join(_SCRATCH, 'tbay.db')}"
RUN = uuid.uuid4().hex[:6]  # fresh order ids, so every run tells the same story on a shared database
ORDER = f"A-{RUN}"
ran = {"lookup_order": 0, "refund_order": 0}


class ScriptedModel(BaseLLM):
    """Plays a fixed script through CrewAI; each step is a final text or a list of tool calls."""

    script: list[Any] = Field(default_factory=list)
    last_tool_results: list[str] = Field(default_factory=list)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None,
             available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> Any:
        self.last_tool_results = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
        return self.script.pop(0)

    def supports_function_calling(self) -> bool:
        return True  # CrewAI then sends tool schemas and expects tool calls back


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


@tool("lookup_order")
def lookup_order(order_id: str) -> dict:
    """Look an order up in the order database (read-only)."""
    ran["lookup_order"] += 1
    return {"order_id": order_id, "total": 120.0, "status": "delivered", "lookup": ran["lookup_order"]}


@tool("refund_order")
def refund_order(order_id: str, amount: float) -> str:
    """Refund an order. Irreversible: money leaves the account."""
    ran["refund_order"] += 1
    return f"refunded {amount:.2f} on order {order_id}"


def kickoff(tools: list[Any], script: list[Any]) -> tuple[str, ScriptedModel]:
    model = ScriptedModel(model="scripted-demo-model", script=script)
    agent = Agent(role="support agent", goal="resolve the customer's request",
                  backstory="careful with money", llm=model, tools=tools, verbose=False)
    task = Task(description=f"The customer wants order {ORDER} refunded.",
                expected_output="what was done", agent=agent)
    crew = Crew(agents=[agent], tasks=[task], cache=True, verbose=False)  # CrewAI's cache on: tbay wins anyway
    return crew.kickoff().raw, model


def main() -> None:
    client = TbayClient(DB_URL)
    print(f"tbay database: {DB_URL}")
    client.policies["refunds"] = client.policies["destructive"].copy(name="refunds", approval_mode="defer")
    tools = guard_toolkit([lookup_order, refund_order],
                          {"lookup_order": "readonly", "refund_*": "refunds"}, client=client)

    print("\n1. kickoff: the agent looks the order up twice, then asks for the refund")
    answer, model = kickoff(tools, [
        [tool_call("lookup_order", order_id=ORDER)],
        [tool_call("lookup_order", order_id=ORDER)],
        [tool_call("refund_order", order_id=ORDER, amount=120.0)],
        "The refund is waiting for a human to approve it.",
    ])
    first, second, refund = model.last_tool_results
    print(f"   first lookup  -> {first}")
    print(f"   second lookup -> {second}   (replayed by tbay: {first == second})")
    print(f"   lookup_order body ran {ran['lookup_order']} time(s) for 2 identical calls")
    print(f"   refund: the model saw: {refund}")
    print(f"   refund_order body ran {ran['refund_order']} time(s) before approval")
    print(f"   the crew answered: {answer}")

    (pending,) = [row for row in client.pending() if row.args.get("order_id") == ORDER]
    client.approve(pending.id, by="demo-operator", reason="customer verified")
    print(f"\n2. an operator approves execution {pending.id} (in a terminal: tbay approve {pending.id})")

    print("\n3. kickoff again: the same refund call now runs, once")
    answer, model = kickoff(tools, [
        [tool_call("refund_order", order_id=ORDER, amount=120.0)],
        "Refunded.",
    ])
    print(f"   refund: the model saw: {model.last_tool_results[0]}")
    print(f"   refund_order body ran {ran['refund_order']} time(s) after approval")
    print(f"   the crew answered: {answer}")

    print("\naudit log (newest first):")
    for row in client.executions(limit=10):
        if row.args.get("order_id") == ORDER:
            print(f"   {row.id}  {row.tool_name:<13} {row.status:<10} {row.policy_name:<9} "
                  f"decided_by={row.decided_by}")
    client.close()


if __name__ == "__main__":
    main()
