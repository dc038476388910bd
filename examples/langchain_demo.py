"""tbay guarding a real LangChain agent, offline: replays and an approval gate.

Run it with ``python examples/langchain_demo.py`` (needs ``pip install -e ".[langchain]"``;
no API keys, no network). It drives the real ``langchain.agents.create_agent``
loop with a scripted chat model (a ``BaseChatModel`` that answers from a
script instead of calling a provider) and guards every tool through
``TbayMiddleware``:

1. the model looks the same order up twice: the second call is replayed from
   tbay, the tool body runs once;
2. the model asks for a refund, a destructive call in ``defer`` mode: it does
   not run, and the model reads the "waits for approval" text;
3. a human approves it (``client.approve``, or ``tbay approve ID``) and the
   agent asks again: the refund runs, once.

State lives in ``$TBAY_DB_URL`` when set, else in a fresh SQLite file in a
temp directory. Order ids carry this run's id, so each run tells the same
story on a shared database.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

try:
    from langchain.agents import create_agent
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
except ImportError as exc:  # pragma: no cover - a hint instead of a traceback
    sys.exit(f"this demo needs LangChain ({exc}); install it with: pip install -e '.[langchain]'")

from tbay_langchain import TbayCallbackHandler, TbayMiddleware

from tbay_core import TbayClient

RUN = uuid.uuid4().hex[:6]
ORDER = f"A-{RUN}"
ran = {"lookup_order": 0, "refund_order": 0}


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays a script: each call returns the next AIMessage."""

    script: list[AIMessage]
    position: int = 0

    def __init__(self, script: Sequence[AIMessage], **kwargs: Any):
        super().__init__(script=list(script), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted-demo"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self  # the script already knows which tools to call

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        message = self.script[self.position]
        self.position += 1
        return ChatResult(generations=[ChatGeneration(message=message.model_copy())])


def asks(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@tool
def lookup_order(order_id: str) -> dict:
    """Look an order up in the shop's database."""
    ran["lookup_order"] += 1
    return {"order_id": order_id, "status": "delivered", "total": 30.0}


@tool
def refund_order(order_id: str, amount: float) -> str:
    """Refund an order (moves money: needs a human's approval)."""
    ran["refund_order"] += 1
    return f"refunded {amount:.2f} on {order_id}"


def show_turns(result: dict[str, Any]) -> None:
    """Print the tool calls of one agent run and what the model read back."""
    for message in result["messages"]:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                print(f"  model asks   {call['name']}({call['args']})  [call {call['id']}]")
            if message.content:
                print(f"  model says   {message.content}")
        elif isinstance(message, ToolMessage):
            status = "" if message.status == "success" else f" (status={message.status})"
            print(f"  model reads  {message.content}{status}  [call {message.tool_call_id}]")


def main() -> None:
    db_url = os.environ.get("TBAY_DB_URL") or f"sqlite:///{tempfile.mkdtemp(prefix='tbay-lc-')}/tbay.db"
    print(f"tbay + LangChain create_agent demo (database: {db_url})")
    with TbayClient(db_url) as client:
        # destructive = approval required; defer = do not block the agent, tell the model instead
        client.policies["refunds"] = client.policies["destructive"].copy(
            name="refunds", approval_mode="defer"
        )
        middleware = TbayMiddleware({"lookup_*": "readonly", "refund_*": "refunds"}, client)
        links = TbayCallbackHandler()  # records LangChain run ids on each execution
        config = {"callbacks": [links]}

        print("\n1) the agent looks the order up twice, then asks for a refund")
        model = ScriptedChatModel([
            asks("lookup_order", {"order_id": ORDER}, "call-1"),
            asks("lookup_order", {"order_id": ORDER}, "call-2"),
            asks("refund_order", {"order_id": ORDER, "amount": 30.0}, "call-3"),
            AIMessage(content="The refund is waiting for a human's approval."),
        ])
        agent = create_agent(model, [lookup_order, refund_order], middleware=[middleware])
        show_turns(agent.invoke({"messages": [("user", f"Refund order {ORDER}")]}, config=config))
        print(f"  -> lookup_order body ran {ran['lookup_order']} time(s) for 2 calls (the second was replayed)")
        print(f"  -> refund_order body ran {ran['refund_order']} time(s): it waits for approval")

        [pending] = [e for e in client.pending() if e.args.get("order_id") == ORDER]
        print(f"\n2) a human approves execution {pending.id} ({pending.tool_name} {pending.args})")
        client.approve(pending.id, by="demo-operator", reason="customer verified")

        print("\n3) the agent asks for the same refund again")
        model = ScriptedChatModel([
            asks("refund_order", {"order_id": ORDER, "amount": 30.0}, "call-4"),
            AIMessage(content="Done: the order is refunded."),
        ])
        agent = create_agent(model, [lookup_order, refund_order], middleware=[middleware])
        show_turns(agent.invoke({"messages": [("user", "Is it approved now? Then refund it.")]},
                                config=config))
        print(f"  -> refund_order body ran {ran['refund_order']} time(s)")

        print("\n4) the audit log (tbay log / tbay show ID)")
        for execution in reversed(client.executions(limit=10)):
            if execution.args.get("order_id") != ORDER:
                continue
            decided = f", decided by {execution.decided_by}" if execution.decided_by else ""
            print(f"  {execution.id}  {execution.tool_name:<13} {execution.status:<10} {execution.args}{decided}")
            print(f"      agent run {execution.links.get('langchain_root_run_id')}, "
                  f"tool call {execution.links.get('langchain_tool_call_id')}")
        print(f"\nSee one in full with: tbay --db-url {db_url} show {pending.id}")


if __name__ == "__main__":
    main()
