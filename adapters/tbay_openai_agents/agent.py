"""``guard_agent``: a copy of an agent (and of every agent it can hand off to) with its tools guarded."""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from agents import Agent, FunctionTool, Handoff

from tbay_core import Policy, PolicyError, TbayClient
from tbay_core.guard import match_policy  # the core's rule: guard_agent and guard_toolkit agree

from .adapter import TenantFromContext, guard_function_tool, original_tool, tool_name_of

__all__ = ["guard_agent", "match_policy"]

log = logging.getLogger("tbay")


def guard_agent(
    agent: Agent[Any],
    policy_map: Mapping[str, str | Policy],
    *,
    client: TbayClient | None = None,
    tenant: str | None = None,
    tenant_from_context: TenantFromContext | None = None,
) -> Agent[Any]:
    """A copy of ``agent`` whose every ``FunctionTool`` is guarded, handoff targets included.

    ``policy_map`` maps tool names or glob patterns (``"refund_*"``, ``"*"``) to
    policy names or :class:`~tbay_core.Policy` objects, as for
    :func:`tbay_core.guard_toolkit`. Every agent reachable through
    ``handoffs`` (``Agent`` objects or ``Handoff`` objects made by
    ``handoff()``) is copied with ``agent.clone(...)`` and guarded too; cycles
    (A hands off to B, B back to A) are followed once and the copies point at
    each other. The originals are not modified.

    Fails closed: when any ``FunctionTool`` of any reachable agent matches no
    entry, :class:`~tbay_core.PolicyError` lists every unmatched tool (with
    its agent) and nothing is guarded.

    ``tenant`` fixes the tenant of every call; otherwise it comes from
    ``tenant_from_context(tool_context)``, else from the run context's
    ``tenant`` attribute or key, else from ``tbay_core.scope``.

    Not guarded (they are not ``FunctionTool`` objects when the agent is
    copied): hosted tools (web / file search, code interpreter, ...), local
    computer / shell / apply-patch tools, and tools an agent loads from MCP
    servers at run time; a warning names those that run locally. An agent used
    as a tool (``other.as_tool(...)``) is a ``FunctionTool``: the whole nested
    run is guarded as one call, keyed by its input; to guard the nested agent's
    own tools, guard that agent before calling ``as_tool``. A custom
    ``Handoff`` whose target agent cannot be known in advance is guarded when
    the handoff happens (an unmatched tool then fails that handoff).
    """
    if not isinstance(agent, Agent):
        raise TypeError(f"guard_agent: {agent!r} is not an agents.Agent")
    agents = _reachable_agents(agent)
    unmatched = [
        f"{tool_name_of(original_tool(tool))} (agent '{owner.name}')"
        for owner in agents
        for tool in owner.tools
        if isinstance(tool, FunctionTool) and match_policy(tool_name_of(original_tool(tool)), policy_map) is None
    ]
    if unmatched:
        raise PolicyError(
            f"guard_agent: no policy_map entry matches tool(s) {', '.join(unmatched)}; add them "
            "(or a pattern such as '*') so no tool runs unguarded"
        )
    for owner in agents:
        _warn_unguardable(owner)
    return _AgentGuard(policy_map, client, tenant, tenant_from_context).agent(agent)


class _AgentGuard:
    """One guard_agent call: memoised copies of agents and tools (shared objects stay shared)."""

    def __init__(self, policy_map: Mapping[str, str | Policy], client: TbayClient | None,
                 tenant: str | None, tenant_from_context: TenantFromContext | None):
        self.policy_map = policy_map
        self.client = client
        self.tenant = tenant
        self.tenant_from_context = tenant_from_context
        self.agents: dict[int, tuple[Agent[Any], Agent[Any]]] = {}  # id(original) -> (original, copy)
        self.copies: set[int] = set()  # ids of the copies made here
        self.tools: dict[int, tuple[FunctionTool, FunctionTool]] = {}

    def agent(self, original: Agent[Any]) -> Agent[Any]:
        known = self.agents.get(id(original))
        if known is not None:
            return known[1]
        if id(original) in self.copies:
            return original  # already one of our copies (a handoff resolved at run time)
        guarded = original.clone(tools=[self.tool(tool) for tool in original.tools], handoffs=[])
        self.agents[id(original)] = (original, guarded)  # before the handoffs: cycles end here
        self.copies.add(id(guarded))
        guarded.handoffs = [self.handoff(item) for item in original.handoffs]
        return guarded

    def tool(self, tool: Any) -> Any:
        if not isinstance(tool, FunctionTool):
            return tool
        known = self.tools.get(id(tool))
        if known is not None:
            return known[1]
        name = tool_name_of(original_tool(tool))
        policy = match_policy(name, self.policy_map)
        if policy is None:
            raise PolicyError(
                f"guard_agent: no policy_map entry matches tool {name}; add it (or a pattern such "
                "as '*') so no tool runs unguarded"
            )
        guarded = guard_function_tool(tool, policy, client=self.client, tenant=self.tenant,
                                      tenant_from_context=self.tenant_from_context)
        self.tools[id(tool)] = (tool, guarded)
        return guarded

    def handoff(self, item: Any) -> Any:
        if isinstance(item, Agent):
            return self.agent(item)
        if not isinstance(item, Handoff):
            return item
        guarded = copy.copy(item)
        invoke = item.on_invoke_handoff

        async def on_invoke_handoff(context: Any, input_json: str) -> Any:
            target = await invoke(context, input_json)
            return self.agent(target) if isinstance(target, Agent) else target

        guarded.on_invoke_handoff = on_invoke_handoff
        target = _handoff_target(item)
        if target is not None:
            # The SDK reads _agent_ref to prepare the target's tools before the handoff runs.
            guarded._agent_ref = weakref.ref(self.agent(target))
        return guarded


def _handoff_target(item: Handoff[Any, Any]) -> Agent[Any] | None:
    """The agent a ``Handoff`` made by ``handoff()`` leads to (the SDK keeps a weak reference)."""
    ref = getattr(item, "_agent_ref", None)
    target = ref() if callable(ref) else None
    return target if isinstance(target, Agent) else None


def _reachable_agents(root: Agent[Any]) -> list[Agent[Any]]:
    """``root`` and every agent reachable through handoffs, each once (cycles allowed)."""
    seen: dict[int, Agent[Any]] = {}
    stack = [root]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen[id(current)] = current
        for item in reversed(current.handoffs):
            target = item if isinstance(item, Agent) else (
                _handoff_target(item) if isinstance(item, Handoff) else None
            )
            if target is not None and id(target) not in seen:
                stack.append(target)
    return list(seen.values())


_LOCAL_TOOL_TYPES = ("ComputerTool", "LocalShellTool", "ShellTool", "ApplyPatchTool", "CustomTool")


def _warn_unguardable(agent: Agent[Any]) -> None:
    local = [type(tool).__name__ for tool in agent.tools if type(tool).__name__ in _LOCAL_TOOL_TYPES]
    if local:
        log.warning("tbay: agent '%s' has tools tbay cannot guard (%s); they run unguarded",
                    agent.name, ", ".join(local))
    if getattr(agent, "mcp_servers", None):
        log.warning("tbay: agent '%s' loads tools from MCP servers at run time; tbay does not guard "
                    "them", agent.name)
