"""``TbayMiddleware``: guard every tool of a ``create_agent`` agent without touching the tool list.

.. code-block:: python

    from langchain.agents import create_agent
    from tbay_langchain import TbayMiddleware

    agent = create_agent(model, tools, middleware=[
        TbayMiddleware({"search_*": "readonly", "refund_*": "destructive"}, client),
    ])

Every tool call the agent makes is run through :func:`tbay_core.guard.guard_call`
(``aguard_call`` on the async path), keyed on the tool name and the model's
arguments, validated against the tool's ``tool_call_schema`` (defaults
applied; injected arguments such as ``runtime``, ``state`` or the tool call id
are never part of the key). A replay returns the stored ``ToolMessage`` with the
current call's ``tool_call_id``; a refusal (rejected, paused, rate-limited,
over budget, approval pending, a replayed failure) returns a ``ToolMessage``
with ``status="error"`` whose content is :func:`tbay_core.refusals.as_tool_result`,
so the agent loop goes on and the model can tell the user.

Fail closed: a registered tool that no ``policy_map`` entry matches makes the
call raise :class:`tbay_core.PolicyError` listing every unmatched tool of the
agent, and it never runs. A tool name the agent does not know (a model's
invention) that no entry matches is answered with an error message and nothing
runs. Tools that are already guarded (a :class:`~tbay_langchain.TbayTool`, or
an ``@tool`` over an ``@guarded`` function) keep their own guard and policy: the
middleware passes them through instead of nesting a second execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool

from tbay_core import Policy, PolicyError, TbayClient, scope
from tbay_core.guard import aguard_call, check_policy, guard_call, match_policy
from tbay_core.refusals import AGENT_VISIBLE_ERRORS

from .adapter import (
    ToolErrorResult,
    from_storable,
    identity_of,
    is_guarded,
    model_arguments,
    refusal_message,
    to_storable,
)
from .callbacks import find_handler

if TYPE_CHECKING:
    from langgraph.prebuilt.tool_node import ToolCallRequest

try:  # the run ids LangChain itself makes (time-ordered), when this version has them
    from langchain_core.utils.uuid import uuid7 as _new_run_id
except ImportError:  # pragma: no cover - older langchain_core
    _new_run_id = uuid.uuid4

__all__ = ["TbayMiddleware"]


def _unmatched_error(names: list[str]) -> PolicyError:
    return PolicyError(
        f"TbayMiddleware: no policy_map entry matches tool(s) {', '.join(names)}; add them (or a "
        "pattern such as '*') so no tool runs unguarded"
    )


class _Plan:
    """How one tool call is guarded: tool name, policy, key arguments, audit links."""

    __slots__ = ("name", "policy", "arguments", "links", "config", "run_id", "options")

    def __init__(self, name: str, policy: str | Policy, arguments: dict[str, Any],
                 links: dict[str, str], config: dict[str, Any] | None, run_id: Any,
                 options: dict[str, Any]):
        self.options = options
        self.name = name
        self.policy = policy
        self.arguments = arguments
        self.links = links
        self.config = config
        self.run_id = run_id

    def release(self) -> None:
        """Take back the run id lent to the tool run, so a retried handler call gets a fresh one."""
        if self.config is not None and self.config.get("run_id") == self.run_id:
            self.config.pop("run_id", None)


class TbayMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Agent middleware that guards every tool call of a ``create_agent`` agent with tbay.

    ``policy_map`` maps tool names or glob patterns (``"refund_*"``, ``"*"``) to
    policy names or :class:`~tbay_core.Policy` objects, as for
    :func:`tbay_core.guard_toolkit`: an exact name wins, then the first matching
    pattern. Unknown policy names fail here, not at the first call.
    ``client`` defaults to the process-wide client; ``tenant`` is part of every
    key (else the :func:`tbay_core.scope` tenant applies).
    """

    def __init__(self, policy_map: Mapping[str, str | Policy], client: TbayClient | None = None, *,
                 tenant: str | None = None):
        super().__init__()
        if not policy_map:
            raise PolicyError(
                "TbayMiddleware: policy_map is empty, so no tool could run; map tool names or "
                "patterns to policies, e.g. {'search_*': 'readonly', '*': 'mutating'}"
            )
        for pattern, policy in policy_map.items():
            check_policy(client, policy, pattern)
        self.policy_map: dict[str, str | Policy] = dict(policy_map)
        self.client = client
        self.tenant = tenant

    # -- policies ------------------------------------------------------------------

    def policy_for(self, tool_name: str) -> str | Policy | None:
        """The policy a tool name gets, or None when no entry matches."""
        return match_policy(tool_name, self.policy_map)

    def unmatched(self, tools: Iterable[BaseTool | str]) -> list[str]:
        """Names of the tools that no entry matches (already guarded tools need none)."""
        names: list[str] = []
        for tool in tools:
            if not isinstance(tool, str) and is_guarded(tool):
                continue
            name = tool if isinstance(tool, str) else tool.name
            if self.policy_for(name) is None and name not in names:
                names.append(name)
        return names

    def check_tools(self, tools: Iterable[BaseTool | str]) -> None:
        """Raise :class:`~tbay_core.PolicyError` listing the tools no entry matches (fail closed).

        The middleware checks an agent's tools when the first of them is called;
        call this with the tool list you give ``create_agent`` to fail at start-up.
        """
        unmatched = self.unmatched(tools)
        if unmatched:
            raise _unmatched_error(unmatched)

    # -- one call ----------------------------------------------------------------

    def _plan(self, request: ToolCallRequest) -> _Plan | ToolMessage | None:
        """None: pass through (already guarded); a ToolMessage: refuse; else how to guard."""
        call = request.tool_call
        name = call["name"]
        tool = request.tool
        if tool is not None and is_guarded(tool):
            return None
        policy = self.policy_for(name)
        runtime = getattr(request, "runtime", None)
        if policy is None:
            if tool is None:
                known = [t.name for t in (getattr(runtime, "tools", None) or []) if hasattr(t, "name")]
                return ToolMessage(
                    content=f"Error: {name} is not a valid tool and no tbay policy covers it, so "
                            f"nothing ran; try one of [{', '.join(known)}].",
                    tool_call_id=call.get("id") or "", name=name, status="error",
                )
            raise _unmatched_error(self.unmatched([tool, *(getattr(runtime, "tools", None) or [])]))
        config = getattr(runtime, "config", None)
        links: dict[str, str] = {}
        run_id = None
        handler, parent_run_id = find_handler(config.get("callbacks") if config else None)
        if handler is not None and config is not None:
            if config.get("run_id") is None:
                # Lend the tool run its id now: the execution is claimed before LangChain
                # starts the tool run, and its links must name that run.
                run_id = config["run_id"] = _new_run_id()
            thread_id = (config.get("configurable") or {}).get("thread_id")
            links = handler.tool_links(run_id=config.get("run_id"), parent_run_id=parent_run_id,
                                       tool_call_id=call.get("id"), thread_id=thread_id)
        options: dict[str, Any] = {"tenant": self.tenant}
        if tool is not None:  # two different tools of one name raise ToolNameClash, never share results
            options["identity"] = identity_of(tool)
        return _Plan(name, policy, model_arguments(tool, call.get("args") or {}), links,
                     config if run_id is not None else None, run_id, options)

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Any],
    ) -> Any:
        plan = self._plan(request)
        if plan is None:
            return handler(request)
        if isinstance(plan, ToolMessage):
            return plan
        fresh: list[Any] = []

        def run() -> Any:
            result = handler(request)
            fresh.append(result)
            return to_storable(result)

        try:
            with scope(links=plan.links):
                stored = guard_call(self.client, plan.name, plan.policy, plan.arguments, run,
                                    **plan.options)
        except ToolErrorResult as exc:
            if fresh:
                return exc.message
            raise
        except AGENT_VISIBLE_ERRORS as exc:
            return refusal_message(exc, tool_call_id=request.tool_call.get("id"), name=plan.name)
        finally:
            plan.release()
        return self._answer(request, plan, fresh, stored)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[Any]],
    ) -> Any:
        plan = self._plan(request)
        if plan is None:
            return await handler(request)
        if isinstance(plan, ToolMessage):
            return plan
        fresh: list[Any] = []

        async def run() -> Any:
            result = await handler(request)
            fresh.append(result)
            return to_storable(result)

        try:
            with scope(links=plan.links):
                stored = await aguard_call(self.client, plan.name, plan.policy, plan.arguments,
                                           run, **plan.options)
        except ToolErrorResult as exc:
            if fresh:
                return exc.message
            raise
        except AGENT_VISIBLE_ERRORS as exc:
            return refusal_message(exc, tool_call_id=request.tool_call.get("id"), name=plan.name)
        finally:
            plan.release()
        return self._answer(request, plan, fresh, stored)

    @staticmethod
    def _answer(request: ToolCallRequest, plan: _Plan, fresh: list[Any], stored: Any) -> Any:
        if fresh:  # this call ran the tool: its own result, untouched
            return fresh[0]
        tool_call_id = request.tool_call.get("id")
        replayed = from_storable(stored, tool_call_id=tool_call_id, name=plan.name)
        if isinstance(replayed, ToolMessage):
            return replayed
        # Stored by another kind of guard under this name (a plain value): show it as the result.
        return ToolMessage(content=replayed if isinstance(replayed, str) else str(replayed),
                           tool_call_id=tool_call_id or "", name=plan.name)
