"""The LangChain adapter, driven end to end through the real framework, offline.

Real ``BaseTool``s, a real ``ToolNode`` inside a compiled LangGraph graph, the
real ``langchain.agents.create_agent`` loop with a scripted chat model
(:mod:`langchain_fakes`), and a real database (SQLite and PostgreSQL through
the ``client`` fixture). Nothing of tbay is mocked; nothing asserts on time.
"""

from __future__ import annotations

from frameworks import need

need("langchain", "langchain")

import asyncio  # noqa: E402
import inspect  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Annotated, Any  # noqa: E402
from uuid import UUID  # noqa: E402

import pytest  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain.tools import InjectedState, ToolRuntime  # noqa: E402
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.tools import (  # noqa: E402
    BaseTool,
    InjectedToolCallId,
    StructuredTool,
    ToolException,
    tool,
)
from langchain_core.tools.render import render_text_description  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from langchain_fakes import ScriptedChatModel, answer, calls, tool_call  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402

try:  # the ToolNode create_agent runs tools with (langchain 1.0 has its own; later ones re-export langgraph's)
    from langchain.tools.tool_node import _ToolNode as ToolNode  # noqa: E402
except ImportError:  # pragma: no cover
    from langgraph.prebuilt import ToolNode  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from tbay_langchain import (  # noqa: E402
    LangChainAdapter,
    TbayCallbackHandler,
    TbayMiddleware,
    TbayTool,
    guard_tool,
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
from tbay_core.refusals import as_tool_result  # noqa: E402

WAIT = 30.0  # upper bound for background helpers; never asserted on


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class Runs:
    """Counts tool body runs per name, thread-safely, and what each run received."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def hit(self, name: str, **received: Any) -> int:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            self.received.append(received)
            return self.counts[name]

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def tool_graph(tools: list[BaseTool]) -> Any:
    """A compiled graph whose only node is a ToolNode (what create_agent runs tools with)."""
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    return graph.compile()


def ai(*tool_calls: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [AIMessage(content="", tool_calls=list(tool_calls))]}


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return tool_call(name, args, call_id)


def wait_for_pending(client: TbayClient, tool_name: str) -> str:
    """Id of the execution of ``tool_name`` waiting for approval (polls; bounded, not asserted on)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for execution in client.pending():
            if execution.tool_name == tool_name:
                return execution.id
        time.sleep(0.01)
    raise AssertionError(f"no execution of {tool_name} waited for approval")


def defer_policy(client: TbayClient) -> str:
    client.policies["refunds"] = client.policies["destructive"].copy(
        name="refunds", approval_mode="defer"
    )
    return "refunds"


class Recorder(BaseCallbackHandler):
    """Records what LangChain reports: tool runs (by their ``query`` input) and root runs."""

    run_inline = True

    def __init__(self) -> None:
        self.tool_runs: dict[str, UUID] = {}  # query -> tool run id
        self.tool_parents: dict[str, UUID | None] = {}
        self.roots: list[UUID] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is None:
            self.roots.append(run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, inputs: Any = None, **kwargs: Any) -> None:
        query = (inputs or {}).get("query", "")
        self.tool_runs[query] = run_id
        self.tool_parents[query] = parent_run_id


def reports_tool_call_ids() -> bool:
    """Whether this langchain-core tells callbacks the tool call id (1.0 does not)."""
    return "tool_call_id=tool_call_id" in inspect.getsource(BaseTool.run)


# ---------------------------------------------------------------------------
# tools used by several tests
# ---------------------------------------------------------------------------


def make_search(runs: Runs) -> BaseTool:
    @tool
    def search(query: str, limit: int = 3) -> dict:
        """Search the docs for a query."""
        runs.hit("search", query=query, limit=limit)
        return {"query": query, "hits": [f"{query} #{i}" for i in range(limit)]}

    return search


def make_refund(runs: Runs) -> BaseTool:
    @tool
    def refund_order(order_id: str, amount: float) -> str:
        """Refund an order."""
        runs.hit("refund_order", order_id=order_id, amount=amount)
        return f"refunded {amount:.2f} on {order_id}"

    return refund_order


# ---------------------------------------------------------------------------
# the wrapper keeps what the model and the framework see
# ---------------------------------------------------------------------------


class LookupInput(BaseModel):
    """Inputs of the lookup tool."""

    order_id: str = Field(description="the order")
    verbose: bool = Field(default=False, description="include the lines")


class CustomSearch(BaseTool):
    """A BaseTool subclass whose schema comes from its _run signature."""

    name: str = "custom_search"
    description: str = "Search with a custom tool class."

    def _run(self, query: str, page: int = 1, run_manager: Any = None) -> str:
        return f"{query}:{page}"


def schema_cases() -> list[BaseTool]:
    @tool
    def search(query: str, limit: int = 3, tool_call_id: Annotated[str, InjectedToolCallId] = "") -> str:
        """Search the docs."""
        return query

    @tool(response_format="content_and_artifact", return_direct=True)
    def report(order_id: str, runtime: ToolRuntime) -> tuple[str, dict]:
        """Build a report."""
        return order_id, {"id": order_id}

    def lookup(order_id: str, verbose: bool = False) -> dict:
        return {"order_id": order_id}

    structured = StructuredTool.from_function(
        lookup, name="lookup", description="Look an order up.", args_schema=LookupInput
    )
    json_schema_tool = StructuredTool(
        name="json_tool", description="A tool with a JSON schema.", func=lambda **kw: kw,
        args_schema={"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    )
    return [search, report, structured, CustomSearch(), json_schema_tool]


@pytest.mark.parametrize("index", range(5))
def test_wrapper_keeps_name_description_and_schemas(client: TbayClient, index: int) -> None:
    original = schema_cases()[index]
    wrapped = guard_tool(original, "readonly", client=client)
    assert isinstance(wrapped, BaseTool) and isinstance(wrapped, TbayTool)
    assert wrapped.wrapped is original
    for field in ("name", "description", "args_schema", "return_direct", "response_format"):
        assert getattr(wrapped, field) == getattr(original, field), field
    original_schema, wrapped_schema = original.tool_call_schema, wrapped.tool_call_schema
    if isinstance(original_schema, dict):
        assert wrapped_schema == original_schema
    else:
        assert wrapped_schema.model_json_schema() == original_schema.model_json_schema()
    for view in (lambda t: t.args, convert_to_openai_tool):
        assert same_or_same_error(view, wrapped, original)


def same_or_same_error(view: Any, wrapped: BaseTool, original: BaseTool) -> bool:
    """The wrapper shows the same as the original, or fails the same way (``args`` of a
    ``ToolRuntime`` tool has no JSON schema on langchain-core 1.0)."""
    try:
        expected = view(original)
    except Exception as exc:
        with pytest.raises(type(exc)):
            view(wrapped)
        return True
    return bool(view(wrapped) == expected)


def test_single_string_input_is_the_same_call_as_the_dict(client: TbayClient) -> None:
    runs = Runs()
    search = guard_tool(make_search(runs), "readonly", client=client)
    first = search.invoke("tbay")
    assert search.invoke({"query": "tbay"}) == first
    assert search.invoke({"query": "tbay", "limit": 3}) == first  # defaults applied
    assert search.run({"query": "tbay"}) == first
    assert runs["search"] == 1
    assert search.invoke({"query": "tbay", "limit": 1}) != first
    assert runs["search"] == 2


# ---------------------------------------------------------------------------
# sync and async calls, replays with the caller's tool_call_id
# ---------------------------------------------------------------------------


def test_invoke_replays_with_the_new_tool_call_id(client: TbayClient) -> None:
    runs = Runs()
    search = guard_tool(make_search(runs), "readonly", client=client)
    first = search.invoke(call("search", {"query": "tbay"}, "call-1"))
    second = search.invoke(call("search", {"query": "tbay"}, "call-2"))
    assert runs["search"] == 1
    assert isinstance(first, ToolMessage) and isinstance(second, ToolMessage)
    assert (first.tool_call_id, second.tool_call_id) == ("call-1", "call-2")
    assert second.content == first.content and second.name == "search"
    assert second.status == "success"
    # plain callers get the value itself, replayed equal
    assert search.invoke({"query": "tbay"}) == {"query": "tbay", "hits": ["tbay #0", "tbay #1", "tbay #2"]}
    assert runs["search"] == 1
    [execution] = client.executions(tool="search")
    assert execution.status == "SUCCEEDED" and execution.args == {"query": "tbay", "limit": 3}


def test_async_paths_ainvoke_and_arun(client: TbayClient) -> None:
    runs = Runs()

    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        runs.hit("fetch", url=url)
        await asyncio.sleep(0)
        return f"<html>{url}</html>"

    sync_search = guard_tool(make_search(runs), "readonly", client=client)
    fetch_tool = guard_tool(fetch, "readonly", client=client)

    async def main() -> list[Any]:
        return [
            await fetch_tool.ainvoke(call("fetch", {"url": "a"}, "c1")),
            await fetch_tool.ainvoke(call("fetch", {"url": "a"}, "c2")),
            await fetch_tool.arun({"url": "a"}),
            await sync_search.ainvoke({"query": "q"}),  # a sync tool on the async path
            await sync_search.arun({"query": "q"}),
        ]

    first, second, plain, search_value, search_again = asyncio.run(main())
    assert runs["fetch"] == 1 and runs["search"] == 1
    assert (first.tool_call_id, second.tool_call_id) == ("c1", "c2")
    assert first.content == second.content == plain == "<html>a</html>"
    assert search_value == search_again
    # the same tool's sync path shares the key: the async run is replayed
    assert sync_search.invoke({"query": "q"}) == search_value
    assert runs["search"] == 1
    # an async-only tool called synchronously fails like the original and records nothing
    with pytest.raises(NotImplementedError):
        fetch_tool.invoke({"url": "b"})
    assert [e.args for e in client.executions(tool="fetch")] == [{"url": "a"}]


def test_tool_returning_its_own_tool_message_replays_with_the_new_id(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def lookup(order_id: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> ToolMessage:
        """Look an order up, answering with a message of its own."""
        runs.hit("lookup", tool_call_id=tool_call_id)
        return ToolMessage(f"order {order_id}: paid", artifact={"paid": True},
                           tool_call_id=tool_call_id, name="lookup")

    guarded_lookup = guard_tool(lookup, "mutating", client=client)
    first = guarded_lookup.invoke(call("lookup", {"order_id": "A1"}, "id-1"))
    second = guarded_lookup.invoke(call("lookup", {"order_id": "A1"}, "id-2"))
    assert runs["lookup"] == 1  # the injected tool_call_id is not part of the key
    assert first.tool_call_id == "id-1" and second.tool_call_id == "id-2"
    assert second.content == "order A1: paid" and second.artifact == {"paid": True}
    assert second.id != first.id or second.id is None  # never the stored message's id
    [execution] = client.executions(tool="lookup")
    assert execution.args == {"order_id": "A1"}


def test_content_and_artifact_replays_both(client: TbayClient) -> None:
    runs = Runs()

    @tool(response_format="content_and_artifact")
    def report(order_id: str) -> tuple[str, dict]:
        """Build a report."""
        runs.hit("report")
        return f"report {order_id}", {"lines": [1, 2], "order": order_id}

    guarded_report = guard_tool(report, "readonly", client=client)
    first = guarded_report.invoke(call("report", {"order_id": "A"}, "a"))
    second = guarded_report.invoke(call("report", {"order_id": "A"}, "b"))
    assert runs["report"] == 1
    assert (second.content, second.artifact, second.tool_call_id) == (first.content, first.artifact, "b")


# ---------------------------------------------------------------------------
# ToolNode: parallel identical tool calls run the body once
# ---------------------------------------------------------------------------


def test_toolnode_parallel_identical_calls_run_once_sync(client: TbayClient) -> None:
    runs = Runs()
    threads: set[str] = set()

    @tool
    def slow_search(query: str) -> dict:
        """A slow search."""
        threads.add(threading.current_thread().name)
        runs.hit("slow_search")
        time.sleep(0.2)  # lets the second call arrive while the first runs (not asserted on)
        return {"query": query}

    app = tool_graph([guard_tool(slow_search, "readonly", client=client)])
    state = app.invoke(ai(call("slow_search", {"query": "x"}, "a"), call("slow_search", {"query": "x"}, "b")))
    messages = tool_messages(state)
    assert runs["slow_search"] == 1
    assert [m.tool_call_id for m in messages] == ["a", "b"]
    assert messages[0].content == messages[1].content == '{"query": "x"}'
    assert all(m.status == "success" for m in messages)
    assert len(client.executions(tool="slow_search")) == 1


def test_toolnode_parallel_identical_calls_run_once_async(client: TbayClient) -> None:
    runs = Runs()

    @tool
    async def slow_fetch(url: str) -> str:
        """A slow async fetch."""
        runs.hit("slow_fetch")
        await asyncio.sleep(0.2)
        return f"page {url}"

    @tool
    def sync_lookup(key: str) -> str:
        """A sync tool run by the async ToolNode."""
        runs.hit("sync_lookup")
        time.sleep(0.1)
        return f"value of {key}"

    app = tool_graph([guard_tool(slow_fetch, "readonly", client=client),
                      guard_tool(sync_lookup, "readonly", client=client)])
    state = asyncio.run(app.ainvoke(ai(
        call("slow_fetch", {"url": "u"}, "a"), call("slow_fetch", {"url": "u"}, "b"),
        call("sync_lookup", {"key": "k"}, "c"), call("sync_lookup", {"key": "k"}, "d"),
    )))
    messages = tool_messages(state)
    assert runs["slow_fetch"] == 1 and runs["sync_lookup"] == 1
    assert [m.tool_call_id for m in messages] == ["a", "b", "c", "d"]
    assert [m.content for m in messages] == ["page u", "page u", "value of k", "value of k"]


# ---------------------------------------------------------------------------
# injected arguments are never part of the key
# ---------------------------------------------------------------------------


def test_injected_arguments_are_not_in_the_key(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def with_runtime(query: str, runtime: ToolRuntime) -> str:
        """Uses the LangGraph runtime."""
        runs.hit("with_runtime", tool_call_id=runtime.tool_call_id)
        return f"runtime saw {runtime.tool_call_id}"

    @tool
    def with_state(query: str, state: Annotated[dict, InjectedState]) -> str:
        """Uses the graph state."""
        runs.hit("with_state", messages=len(state["messages"]))
        return f"state had {len(state['messages'])} messages"

    @tool
    def with_call_id(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Uses its tool call id."""
        runs.hit("with_call_id")
        return f"first id {tool_call_id}"

    tools = [guard_tool(t, "mutating", client=client) for t in (with_runtime, with_state, with_call_id)]
    app = tool_graph(tools)
    first = tool_messages(app.invoke(ai(
        call("with_runtime", {"query": "q"}, "r1"), call("with_state", {"query": "q"}, "s1"),
        call("with_call_id", {"query": "q"}, "i1"),
    )))
    # a second turn: other tool call ids, a longer state; and a model trying to forge an injected arg
    second_state = ai(
        call("with_runtime", {"query": "q"}, "r2"), call("with_state", {"query": "q"}, "s2"),
        call("with_call_id", {"query": "q", "tool_call_id": "forged"}, "i2"),
    )
    second_state["messages"] = [AIMessage("earlier"), AIMessage("turns"), *second_state["messages"]]
    second = tool_messages(app.invoke(second_state))
    assert runs.counts == {"with_runtime": 1, "with_state": 1, "with_call_id": 1}
    assert [m.tool_call_id for m in second] == ["r2", "s2", "i2"]
    assert [m.content for m in second] == [m.content for m in first]
    assert first[0].content == "runtime saw r1"  # the body really received the injected values
    for name in ("with_runtime", "with_state", "with_call_id"):
        [execution] = client.executions(tool=name)
        assert execution.args == {"query": "q"}, name


class NoteInput(BaseModel):
    """An explicit schema that leaves the injected runtime out (LangChain reads it from the function)."""

    text: str


def test_runtime_declared_only_on_the_function_is_still_injected(client: TbayClient) -> None:
    runs = Runs()

    def write_note(text: str, runtime: ToolRuntime) -> str:
        runs.hit("write_note", tool_call_id=runtime.tool_call_id)
        return f"noted {text} (first call {runtime.tool_call_id})"

    original = StructuredTool.from_function(write_note, name="write_note", description="Write a note.",
                                            args_schema=NoteInput)
    try:
        tool_graph([original]).invoke(ai(call("write_note", {"text": "probe"}, "probe")))
    except TypeError:  # langchain 1.0 reads injected arguments from the schema only
        pytest.skip("this LangChain version does not inject a runtime declared only on the function")
    runs.counts.clear()
    wrapped = guard_tool(original, "mutating", client=client)
    assert inspect.signature(wrapped.func) == inspect.signature(original.func)
    assert render_text_description([wrapped]) == render_text_description([original])
    app = tool_graph([wrapped])
    [first] = tool_messages(app.invoke(ai(call("write_note", {"text": "hi"}, "w1"))))
    [second] = tool_messages(app.invoke(ai(call("write_note", {"text": "hi"}, "w2"))))
    assert first.content == second.content == "noted hi (first call w1)"
    assert second.tool_call_id == "w2" and runs["write_note"] == 1
    # the exposed function is guarded too, keyed without the injected runtime
    assert wrapped.func("hi", runtime=None) == "noted hi (first call w1)"
    assert runs["write_note"] == 1
    assert client.executions(tool="write_note")[0].args == {"text": "hi"}


def test_runnable_config_parameter_is_not_in_the_key(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def configured(query: str, config: RunnableConfig) -> str:
        """Reads its RunnableConfig."""
        runs.hit("configured", tags=config.get("tags"))
        return f"{query} with {sorted(config.get('tags') or [])}"

    guarded_tool = guard_tool(configured, "readonly", client=client)
    first = guarded_tool.invoke({"query": "q"}, config={"tags": ["one"], "run_name": "a"})
    second = guarded_tool.invoke({"query": "q"}, config={"tags": ["two"], "metadata": {"x": 1}})
    assert first == second == "q with ['one']"
    assert runs["configured"] == 1
    assert client.executions(tool="configured")[0].args == {"query": "q"}


# ---------------------------------------------------------------------------
# refusals: ToolMessages in agent loops, exceptions for plain callers
# ---------------------------------------------------------------------------


def test_refusals_are_tool_messages_for_tool_calls_and_exceptions_for_plain_calls(client: TbayClient) -> None:
    runs = Runs()
    search = guard_tool(make_search(runs), "readonly", client=client)
    client.pause("search", reason="maintenance", by="ops")
    with pytest.raises(ToolPaused) as raised:
        search.invoke({"query": "x"})
    message = search.invoke(call("search", {"query": "x"}, "p1"))
    assert isinstance(message, ToolMessage)
    assert message.status == "error" and message.tool_call_id == "p1" and message.name == "search"
    assert message.content == as_tool_result(raised.value)
    assert "maintenance" in message.content
    async_message = asyncio.run(search.ainvoke(call("search", {"query": "x"}, "p2")))
    assert async_message.status == "error" and async_message.tool_call_id == "p2"
    with pytest.raises(ToolPaused):
        asyncio.run(search.arun({"query": "x"}))
    # inside a ToolNode the loop goes on: the refusal is the tool's answer
    [node_message] = tool_messages(tool_graph([search]).invoke(ai(call("search", {"query": "x"}, "p3"))))
    assert node_message.status == "error" and "[tbay: ToolPaused]" in node_message.content
    assert runs["search"] == 0
    client.resume("search")
    assert search.invoke({"query": "x"})["query"] == "x"


def test_failures_are_recorded_and_replayed_as_failures(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def charge(order_id: str) -> str:
        """Charge an order; the card is declined."""
        runs.hit("charge")
        raise ToolException("card declined")

    charge.handle_tool_error = True
    guarded_charge = guard_tool(charge, "mutating", client=client)
    first = guarded_charge.invoke(call("charge", {"order_id": "A"}, "c1"))
    assert first.status == "error" and first.content == "card declined"  # the owner's own answer
    second = guarded_charge.invoke(call("charge", {"order_id": "A"}, "c2"))
    assert runs["charge"] == 1  # a mutating failure is replayed, not re-run
    assert second.status == "error" and second.tool_call_id == "c2"
    assert "[tbay: ExecutionFailed]" in second.content and "card declined" in second.content
    [execution] = client.executions(tool="charge")
    assert execution.status == "FAILED" and execution.error_message == "card declined"


def test_a_command_result_is_not_replayed_under_another_call(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def handoff(team: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Hand the conversation to a team."""
        runs.hit("handoff")
        return Command(update={"messages": [ToolMessage(f"handed to {team}", tool_call_id=tool_call_id)]})

    app = tool_graph([guard_tool(handoff, "mutating", client=client)])
    [first] = tool_messages(app.invoke(ai(call("handoff", {"team": "billing"}, "h1"))))
    [second] = tool_messages(app.invoke(ai(call("handoff", {"team": "billing"}, "h2"))))
    assert first.content == "handed to billing"
    assert runs["handoff"] == 1
    assert second.status == "error" and second.tool_call_id == "h2"
    assert "[tbay: ResultNotReplayable]" in second.content


# ---------------------------------------------------------------------------
# guard_toolkit through the entry point
# ---------------------------------------------------------------------------


def test_guard_toolkit_returns_langchain_tools_in_order(client: TbayClient) -> None:
    runs = Runs()

    def refund_small(order_id: str) -> str:
        runs.hit("refund_small")
        return f"small refund {order_id}"

    @tool
    async def refund_order(order_id: str, amount: float) -> str:
        """Refund an order."""
        runs.hit("refund_order")
        return "refunded"

    search = make_search(runs)
    tools = guard_toolkit([search, refund_small, refund_order],
                          {"search": "readonly", "refund_*": "destructive"}, client=client)
    assert [type(t) for t in tools] == [TbayTool, type(tools[1]), TbayTool]
    assert tools[0].name == "search" and tools[2].name == "refund_order"
    assert tools[0].tbay_policy == "readonly" and tools[2].tbay_policy == "destructive"
    assert tools[1].__name__ == "refund_small" and callable(tools[1])
    assert tools[1].__tbay_tool__.policy_name == "destructive"
    assert tools[0].invoke({"query": "a"}) == tools[0].invoke({"query": "a"})
    assert runs["search"] == 1
    assert LangChainAdapter().handles(search) and not LangChainAdapter().handles(refund_small)


def test_guard_toolkit_fails_closed_listing_unmatched_tools(client: TbayClient) -> None:
    runs = Runs()

    def delete_account(user: str) -> None:
        runs.hit("delete_account")

    with pytest.raises(PolicyError) as raised:
        guard_toolkit([make_search(runs), make_refund(runs), delete_account], {"search": "readonly"},
                      client=client)
    assert "refund_order" in str(raised.value) and "delete_account" in str(raised.value)
    assert "search," not in str(raised.value)


def test_guarding_twice_or_two_tools_under_one_name_is_refused(client: TbayClient) -> None:
    runs = Runs()

    @guarded(client, policy="readonly")
    def lookup(order_id: str) -> str:
        """Look up an order."""
        return order_id

    with pytest.raises(PolicyError, match="already guarded"):
        guard_tool(tool(lookup), "readonly", client=client)
    search = guard_tool(make_search(runs), "readonly", client=client)
    assert guard_tool(search, "mutating", client=client).wrapped is search.wrapped  # re-guarded

    @tool
    def search(query: str) -> str:  # noqa: F811 - another function under the same tool name
        """Another search."""
        return query

    with pytest.raises(ToolNameClash):
        guard_tool(search, "readonly", client=client)


def test_import_tbay_core_never_imports_langchain() -> None:
    code = (
        "import sys, tbay_core\n"
        "from tbay_core import guard_toolkit\n"
        "guard_toolkit([lambda x: x], {'*': 'volatile'})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'langgraph', 'tbay_langchain'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------
# create_agent: the real agent loop, guarded by the middleware
# ---------------------------------------------------------------------------


def run_agent(agent: Any, text: str, *, use_async: bool, config: dict[str, Any] | None = None) -> Any:
    inputs = {"messages": [("user", text)]}
    if use_async:
        return asyncio.run(agent.ainvoke(inputs, config=config))
    return agent.invoke(inputs, config=config)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_agent_loop_replays_a_repeated_call(client: TbayClient, use_async: bool) -> None:
    runs = Runs()
    model = ScriptedChatModel([
        calls(call("search", {"query": "tbay"}, "c1")),
        calls(call("search", {"query": "tbay", "limit": 3}, "c2")),
        answer("found it twice"),
    ])
    agent = create_agent(model, [make_search(runs)],
                         middleware=[TbayMiddleware({"search": "readonly"}, client)])
    result = run_agent(agent, "find tbay", use_async=use_async)
    assert runs["search"] == 1
    seen = model.tool_results()  # what the model had in front of it at its last call
    assert [m.tool_call_id for m in seen] == ["c1", "c2"]
    assert seen[0].content == seen[1].content and "tbay #2" in seen[1].content
    assert result["messages"][-1].content == "found it twice"
    [execution] = client.executions(tool="search")
    assert execution.status == "SUCCEEDED" and execution.args == {"query": "tbay", "limit": 3}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_agent_parallel_identical_calls_run_once(client: TbayClient, use_async: bool) -> None:
    runs = Runs()

    @tool
    def slow_lookup(order_id: str) -> str:
        """A slow lookup."""
        runs.hit("slow_lookup")
        time.sleep(0.2)
        return f"order {order_id} is paid"

    model = ScriptedChatModel([
        calls(call("slow_lookup", {"order_id": "A"}, "p1"), call("slow_lookup", {"order_id": "A"}, "p2")),
        answer("paid"),
    ])
    agent = create_agent(model, [slow_lookup], middleware=[TbayMiddleware({"*": "mutating"}, client)])
    run_agent(agent, "is A paid?", use_async=use_async)
    assert runs["slow_lookup"] == 1
    seen = model.tool_results()
    assert sorted(m.tool_call_id for m in seen) == ["p1", "p2"]
    assert {m.content for m in seen} == {"order A is paid"}


def test_agent_with_guarded_tools_and_no_middleware(client: TbayClient) -> None:
    runs = Runs()
    model = ScriptedChatModel([
        calls(call("search", {"query": "x"}, "c1")),
        calls(call("search", {"query": "x"}, "c2")),
        answer("done"),
    ])
    tools = guard_toolkit([make_search(runs)], {"*": "readonly"}, client=client)
    agent = create_agent(model, tools)
    run_agent(agent, "search", use_async=False)
    assert runs["search"] == 1
    assert [m.tool_call_id for m in model.tool_results()] == ["c1", "c2"]


def test_middleware_passes_already_guarded_tools_through(client: TbayClient) -> None:
    runs = Runs()
    guarded_search = guard_tool(make_search(runs), "readonly", client=client)
    model = ScriptedChatModel([
        calls(call("search", {"query": "x"}, "c1")),
        calls(call("search", {"query": "x"}, "c2")),
        answer("done"),
    ])
    # the map does not cover "search": a guarded tool keeps its own policy and needs no entry
    agent = create_agent(model, [guarded_search],
                         middleware=[TbayMiddleware({"refund_*": "destructive"}, client)])
    run_agent(agent, "search", use_async=False)
    assert runs["search"] == 1
    assert len(client.executions(tool="search")) == 1  # one guard, not two nested ones


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_rejected_destructive_call_never_runs_and_the_model_is_told(client: TbayClient, use_async: bool) -> None:
    runs = Runs()
    policy = defer_policy(client)
    model = ScriptedChatModel([
        calls(call("refund_order", {"order_id": "A1", "amount": 500}, "r1")),
        answer("asked a human"),
        calls(call("refund_order", {"order_id": "A1", "amount": 500}, "r2")),
        answer("it was rejected"),
    ])
    agent = create_agent(model, [make_refund(runs)],
                         middleware=[TbayMiddleware({"refund_*": policy}, client)])
    run_agent(agent, "refund A1", use_async=use_async)
    [pending_message] = model.tool_results()
    assert pending_message.status == "error" and pending_message.tool_call_id == "r1"
    assert pending_message.content.startswith("[tbay: ApprovalPending]")
    [pending] = client.pending()
    assert pending.id in pending_message.content and pending.args == {"order_id": "A1", "amount": 500}
    client.reject(pending.id, by="ops", reason="amount too large")
    run_agent(agent, "refund A1 again", use_async=use_async)
    [rejected_message] = model.tool_results()
    assert rejected_message.status == "error" and rejected_message.tool_call_id == "r2"
    assert rejected_message.content.startswith("[tbay: ApprovalRejected]")
    assert "amount too large" in rejected_message.content and "ops" in rejected_message.content
    assert runs["refund_order"] == 0
    assert client.get(pending.id).status == "REJECTED"


def test_blocking_approval_rejected_while_the_agent_waits(client: TbayClient) -> None:
    runs = Runs()
    refund = guard_tool(make_refund(runs), "destructive", client=client)  # block mode
    model = ScriptedChatModel([calls(call("refund_order", {"order_id": "B", "amount": 9}, "b1")),
                               answer("rejected")])
    agent = create_agent(model, [refund])
    rejecter = threading.Thread(
        target=lambda: client.reject(wait_for_pending(client, "refund_order"), by="ops", reason="no"),
    )
    rejecter.start()
    try:
        run_agent(agent, "refund B", use_async=False)
    finally:
        rejecter.join(WAIT)
    [message] = model.tool_results()
    assert message.status == "error" and message.content.startswith("[tbay: ApprovalRejected]")
    assert runs["refund_order"] == 0


def test_approved_call_runs_once_when_asked_again(client: TbayClient) -> None:
    runs = Runs()
    policy = defer_policy(client)
    model = ScriptedChatModel([
        calls(call("refund_order", {"order_id": "A2", "amount": 20}, "r1")),
        answer("waiting"),
        calls(call("refund_order", {"order_id": "A2", "amount": 20}, "r2")),
        calls(call("refund_order", {"order_id": "A2", "amount": 20}, "r3")),
        answer("refunded"),
    ])
    agent = create_agent(model, [make_refund(runs)],
                         middleware=[TbayMiddleware({"refund_*": policy}, client)])
    run_agent(agent, "refund A2", use_async=False)
    [pending] = client.pending()
    client.approve(pending.id, by="ops")
    run_agent(agent, "refund A2 now", use_async=False)
    second_run = model.tool_results()
    assert [m.tool_call_id for m in second_run] == ["r2", "r3"]
    assert [m.content for m in second_run] == ["refunded 20.00 on A2"] * 2
    assert all(m.status == "success" for m in second_run)
    assert runs["refund_order"] == 1
    assert client.get(pending.id).status == "SUCCEEDED"


@pytest.mark.parametrize("refusal", ["paused", "rate_limited", "over_budget"])
def test_guardrail_refusals_reach_the_model(client: TbayClient, refusal: str) -> None:
    runs = Runs()
    client.policies["guarded"] = client.policies["mutating"].copy(
        name="guarded", rate_limit="1/1h", budget={"arg": "amount", "max": 100, "per": "1d"}
    )
    model = ScriptedChatModel([
        calls(call("refund_order", {"order_id": "first", "amount": 10}, "ok")),
        calls(call("refund_order", {"order_id": "second", "amount": 500 if refusal == "over_budget" else 10}, "no")),
        answer("done"),
    ])
    if refusal == "over_budget":  # no rate limit in the way
        client.policies["guarded"].rate_limit = None
    agent = create_agent(model, [make_refund(runs)], middleware=[TbayMiddleware({"*": "guarded"}, client)])
    if refusal == "paused":
        client.pause("refund_order", reason="incident 42", by="ops")
    run_agent(agent, "refund", use_async=False)
    first, second = model.tool_results()
    expected = {"paused": "ToolPaused", "rate_limited": "RateLimitExceeded", "over_budget": "BudgetExceeded"}
    assert second.status == "error" and second.tool_call_id == "no"
    assert second.content.startswith(f"[tbay: {expected[refusal]}]")
    assert runs["refund_order"] == (0 if refusal == "paused" else 1)


def test_middleware_fails_closed_on_an_unmatched_tool(client: TbayClient) -> None:
    runs = Runs()
    model = ScriptedChatModel([calls(call("refund_order", {"order_id": "X", "amount": 1}, "c1")),
                               answer("never")])
    agent = create_agent(model, [make_search(runs), make_refund(runs)],
                         middleware=[TbayMiddleware({"search": "readonly"}, client)])
    with pytest.raises(PolicyError) as raised:
        run_agent(agent, "refund X", use_async=False)
    assert "refund_order" in str(raised.value) and "search" not in str(raised.value).split("tool(s)")[1]
    assert runs["refund_order"] == 0
    with pytest.raises(PolicyError, match="unknown policy 'readonyl'"):
        TbayMiddleware({"search": "readonyl"}, client)
    middleware = TbayMiddleware({"search": "readonly"}, client)
    with pytest.raises(PolicyError, match="refund_order"):
        middleware.check_tools([make_search(runs), make_refund(runs)])


def test_middleware_refuses_two_different_tools_under_one_name(client: TbayClient) -> None:
    runs = Runs()
    guarded_middleware = TbayMiddleware({"*": "readonly"}, client)
    first = ScriptedChatModel([calls(call("search", {"query": "q"}, "a")), answer("ok")])
    run_agent(create_agent(first, [make_search(runs)], middleware=[guarded_middleware]), "s",
              use_async=False)

    @tool
    def search(query: str) -> str:
        """A different tool that happens to be called search."""
        runs.hit("other_search")
        return "other"

    second = ScriptedChatModel([calls(call("search", {"query": "q"}, "b")), answer("ok")])
    with pytest.raises(ToolNameClash):
        run_agent(create_agent(second, [search], middleware=[guarded_middleware]), "s", use_async=False)
    assert runs["other_search"] == 0 and runs["search"] == 1


def test_middleware_answers_an_invented_tool_without_running_anything(client: TbayClient) -> None:
    runs = Runs()
    model = ScriptedChatModel([calls(call("drop_tables", {}, "c1")), answer("ok")])
    agent = create_agent(model, [make_search(runs)],
                         middleware=[TbayMiddleware({"search": "readonly"}, client)])
    run_agent(agent, "do it", use_async=False)
    [message] = model.tool_results()
    assert message.status == "error" and "drop_tables" in message.content
    assert client.executions() == []


def test_middleware_keys_ignore_injected_and_forged_arguments(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def note(text: str, runtime: ToolRuntime, state: Annotated[dict, InjectedState]) -> str:
        """Write a note."""
        runs.hit("note", tool_call_id=runtime.tool_call_id)
        return f"noted {text}"

    model = ScriptedChatModel([
        calls(call("note", {"text": "hi"}, "n1")),
        calls(call("note", {"text": "hi", "runtime": "forged", "state": {"x": 1}}, "n2")),
        answer("done"),
    ])
    agent = create_agent(model, [note], middleware=[TbayMiddleware({"note": "mutating"}, client)])
    run_agent(agent, "note hi", use_async=False)
    assert runs["note"] == 1
    assert [m.content for m in model.tool_results()] == ["noted hi", "noted hi"]
    [execution] = client.executions(tool="note")
    assert execution.args == {"text": "hi"}


def test_middleware_records_tool_errors_as_failures(client: TbayClient) -> None:
    runs = Runs()

    @tool
    def charge(order_id: str) -> str:
        """Charge an order."""
        runs.hit("charge")
        raise ToolException("card declined")

    charge.handle_tool_error = True
    model = ScriptedChatModel([calls(call("charge", {"order_id": "A"}, "c1")),
                               calls(call("charge", {"order_id": "A"}, "c2")), answer("sorry")])
    agent = create_agent(model, [charge], middleware=[TbayMiddleware({"*": "mutating"}, client)])
    run_agent(agent, "charge A", use_async=False)
    first, second = model.tool_results()
    assert first.content == "card declined" and first.status == "error"
    assert second.content.startswith("[tbay: ExecutionFailed]") and "card declined" in second.content
    assert runs["charge"] == 1
    assert client.executions(tool="charge")[0].status == "FAILED"


# ---------------------------------------------------------------------------
# the callback handler links executions to LangChain runs
# ---------------------------------------------------------------------------


def assert_links(links: dict[str, Any], recorder: Recorder, query: str, tool_call_id: str | None) -> None:
    assert links.get("langchain_tool_call_id") == tool_call_id
    assert links["langchain_run_id"] == str(recorder.tool_runs[query])
    assert links["langchain_parent_run_id"] == str(recorder.tool_parents[query])
    assert links["langchain_root_run_id"] == str(recorder.roots[-1])  # the agent run


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("how", ["middleware", "wrapper", "guarded_function"])
def test_callback_handler_links_executions_to_the_agent_run(client: TbayClient, use_async: bool,
                                                            how: str) -> None:
    runs = Runs()
    model = ScriptedChatModel([calls(call("search", {"query": "q"}, "link-1")),
                               calls(call("search", {"query": "other"}, "link-2")), answer("done")])
    if how == "middleware":
        agent = create_agent(model, [make_search(runs)],
                             middleware=[TbayMiddleware({"search": "readonly"}, client)])
    elif how == "wrapper":
        agent = create_agent(model, [guard_tool(make_search(runs), "readonly", client=client)])
    else:
        @tool
        @guarded(client, policy="readonly")
        def search(query: str) -> str:
            """Search with a guarded function under @tool."""
            runs.hit("search")
            return query

        agent = create_agent(model, [search])
    recorder, handler = Recorder(), TbayCallbackHandler()
    run_agent(agent, "search", use_async=use_async, config={"callbacks": [handler, recorder]})
    by_query = {e.args["query"]: e.links for e in client.executions(tool="search")}
    assert set(by_query) == {"q", "other"}
    # a @guarded function under @tool learns the tool call id only from LangChain's callbacks
    knows_ids = how != "guarded_function" or reports_tool_call_ids()
    for query, tool_call_id in (("q", "link-1"), ("other", "link-2")):
        assert_links(by_query[query], recorder, query, tool_call_id if knows_ids else None)
    assert handler._scopes == {} and handler._parents == {}  # nothing left behind


@pytest.mark.parametrize("how", ["middleware", "wrapper"])
def test_links_name_the_langgraph_thread(client: TbayClient, how: str) -> None:
    runs = Runs()
    model = ScriptedChatModel([calls(call("search", {"query": "q"}, "t1")), answer("done")])
    if how == "middleware":
        agent = create_agent(model, [make_search(runs)], checkpointer=InMemorySaver(),
                             middleware=[TbayMiddleware({"search": "readonly"}, client)])
    else:
        agent = create_agent(model, [guard_tool(make_search(runs), "readonly", client=client)],
                             checkpointer=InMemorySaver())
    run_agent(agent, "search", use_async=False,
              config={"callbacks": [TbayCallbackHandler()], "configurable": {"thread_id": "thread-7"}})
    [execution] = client.executions(tool="search")
    assert execution.links["langgraph_thread_id"] == "thread-7"
    assert execution.links["langchain_tool_call_id"] == "t1"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_scope_tenant_flows_into_the_agent_tool_calls(client: TbayClient, use_async: bool) -> None:
    runs = Runs()
    middleware = TbayMiddleware({"search": "readonly"}, client)
    for tenant in ("acme", "globex", "acme"):
        model = ScriptedChatModel([calls(call("search", {"query": "q"}, f"{tenant}-1")), answer("ok")])
        agent = create_agent(model, [make_search(runs)], middleware=[middleware])
        with scope(tenant=tenant, agent="support-bot"):
            run_agent(agent, "search", use_async=use_async)
    assert runs["search"] == 2  # one per tenant: tenants never share results
    executions = client.executions(tool="search")
    assert sorted(e.tenant for e in executions) == ["acme", "globex"]
    assert {e.agent for e in executions} == {"support-bot"}


def test_links_of_a_direct_tool_call_and_none_without_the_handler(client: TbayClient) -> None:
    runs = Runs()
    search = guard_tool(make_search(runs), "readonly", client=client)
    search.invoke(call("search", {"query": "no handler"}, "n1"))
    recorder = Recorder()
    search.invoke(call("search", {"query": "handler"}, "h1"),
                  config={"callbacks": [TbayCallbackHandler(), recorder]})
    links = {e.args["query"]: e.links for e in client.executions(tool="search")}
    assert links["no handler"] == {}
    assert links["handler"]["langchain_run_id"] == str(recorder.tool_runs["handler"])
    assert links["handler"]["langchain_root_run_id"] == str(recorder.tool_runs["handler"])  # the root
    assert links["handler"]["langchain_tool_call_id"] == "h1"


def test_pending_approval_raises_for_plain_callers(client: TbayClient) -> None:
    runs = Runs()
    refund = guard_tool(make_refund(runs), defer_policy(client), client=client)
    with pytest.raises(ApprovalPending) as raised:
        refund.invoke({"order_id": "Z", "amount": 1})
    message = refund.invoke(call("refund_order", {"order_id": "Z", "amount": 1}, "z1"))
    assert message.status == "error" and raised.value.execution_id in message.content
    assert runs["refund_order"] == 0
