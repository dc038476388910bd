"""``TbayRunHooks``: link an Agents SDK run into tbay's audit log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents import RunHooks, get_current_trace

from .adapter import record_call

__all__ = ["TbayRunHooks"]

_NO_TRACE = "no-op"  # the trace id of the SDK's NoOpTrace (tracing disabled)


class TbayRunHooks(RunHooks[Any]):
    """Run hooks that put each guarded call's agent and run links on its tbay execution.

    Pass them to the run: ``Runner.run(agent, input, hooks=TbayRunHooks())``.
    For every function-tool call, before the tool runs, they record on the
    call's ``ToolContext``:

    - the agent that called the tool (``Execution.agent``; it wins over
      ``scope(agent=...)``), which follows handoffs;
    - ``Execution.links``: ``tool_call_id`` (the model's call id),
      ``trace_id`` (the SDK trace of the run, when tracing is on, or
      ``RunConfig.trace_id``), ``group_id`` (``RunConfig.group_id``: your
      conversation / thread id), ``framework`` and the ``links`` given here
      (e.g. ``{"ticket": "T-42"}``), merged over the links of the surrounding
      ``tbay_core.scope``.

    The guarded tool reads them when it creates the execution. A replay or a
    follower creates no execution, so the links are those of the call that
    ran. Without these hooks executions carry only what ``scope()`` says.

    The SDK passes the ``ToolContext`` to ``on_tool_start`` (0.20 and 0.24
    verified); where it passes a plain ``RunContextWrapper`` nothing is
    recorded. To combine with hooks of your own, subclass and call
    ``super().on_tool_start(...)``.
    """

    def __init__(self, *, links: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.links: dict[str, Any] = dict(links or {})

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        if getattr(context, "tool_call_id", None) is None:
            return  # not a function-tool call: no ToolContext to carry the links
        record_call(context, agent=getattr(agent, "name", None), links=self.call_links(context))

    def call_links(self, context: Any) -> dict[str, Any]:
        """The links recorded for one tool call (override to add your own)."""
        links: dict[str, Any] = {"framework": "openai-agents", "tool_call_id": context.tool_call_id}
        run_config = getattr(context, "run_config", None)
        trace = get_current_trace()
        trace_id = getattr(trace, "trace_id", None)
        if not trace_id or trace_id == _NO_TRACE:
            trace_id = getattr(run_config, "trace_id", None)
        if trace_id:
            links["trace_id"] = trace_id
        group_id = getattr(run_config, "group_id", None) or getattr(trace, "group_id", None)
        if group_id:
            links["group_id"] = group_id
        links.update(self.links)
        return links
