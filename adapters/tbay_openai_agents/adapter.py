"""Guarded ``FunctionTool``s for the OpenAI Agents SDK, and the ``tbay.adapters`` entry point.

A guarded ``FunctionTool`` is a copy of the tool whose ``on_invoke_tool`` runs
the tool body through tbay: same ``name``, ``description``,
``params_json_schema``, ``strict_json_schema`` and every other field, so the
model sees exactly the same tool.

What a call does:

- **Key.** The idempotency key is derived from the *parsed JSON arguments* the
  model sent (plus the tool name and the tenant). The tool call id, the run
  context and the ``ToolContext`` never enter it, so two calls with equal
  arguments are one call, in one run or across runs and processes. Arguments
  that are not a JSON object are refused with the SDK's own
  ``ModelBehaviorError`` before anything runs, exactly like an unguarded
  ``@function_tool``.
- **Refusals are tool results.** Raising out of a tool aborts an Agents SDK run,
  so every refusal or deferral in :data:`tbay_core.refusals.AGENT_VISIBLE_ERRORS`
  (rejected, approval pending, paused, rate-limited, over budget, a replayed
  failure, ...) is returned to the model as text
  (:func:`tbay_core.refusals.as_tool_result`): what happened and what to do.
- **Failures of the body** reach the SDK unchanged: the owner of an execution
  sees its own function's exception, tbay records it as ``FAILED``, and the
  tool's ``failure_error_function`` formats it for the model as usual. (For
  tools made by ``@function_tool`` the guard sits *inside* the SDK's failure
  handling, so a failure is recorded as a failure, never as a successful
  "An error occurred" string that would then be replayed.)
- **Tenant.** In order of precedence: the ``tenant=`` given when guarding; else
  ``tenant_from_context(ctx)`` when such a callable is given (it receives the
  ``ToolContext``, a ``RunContextWrapper``); else the run context
  (``Runner.run(..., context=...)``): its ``tenant`` attribute, or its
  ``"tenant"`` key when it is a mapping; else the surrounding
  ``tbay_core.scope(tenant=...)``. A tenant must be a string (an ``int`` is
  converted); anything else is refused rather than keyed by ``repr()``.
- **Audit links.** :class:`tbay_openai_agents.TbayRunHooks` record the agent
  name, the tool call id and the run's trace / group ids on each execution.

Already-guarded tools are never guarded twice: guarding a guarded
``FunctionTool`` again re-guards its original with the new policy, and a
``FunctionTool`` built by ``@function_tool`` from an ``@guarded`` function keeps
its own guard (a different policy for it is a :class:`~tbay_core.PolicyError`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import FunctionTool
from agents.exceptions import ModelBehaviorError
from agents.tool_context import ToolContext

from tbay_core import KeyDerivationError, Policy, PolicyError, TbayClient, default_client, scope
from tbay_core.engine import GuardedTool
from tbay_core.guard import aguard_call, check_policy
from tbay_core.refusals import AGENT_VISIBLE_ERRORS, as_tool_result

__all__ = [
    "AgentsAdapter",
    "TenantFromContext",
    "context_tenant",
    "guard_function_tool",
    "is_guarded",
    "original_tool",
    "record_call",
    "tool_name_of",
]

TenantFromContext = Callable[[Any], "str | None"]
"""Picks the tenant of one tool call from its ``ToolContext`` (a ``RunContextWrapper``)."""

_GUARD_ATTR = "_tbay_guard"
"""Attribute of a guarded FunctionTool: the :class:`_Guard` describing how it is guarded."""

CALL_INFO_ATTR = "_tbay_call"
"""Attribute of a ``ToolContext`` where :class:`TbayRunHooks` leave the call's agent and links."""

Invoke = Callable[[ToolContext[Any], str], Awaitable[Any]]


@dataclass(frozen=True)
class _Guard:
    """How a guarded FunctionTool is guarded (kept on the tool, for re-guarding and introspection)."""

    original: FunctionTool
    tool_name: str
    policy: str | Policy
    policy_name: str
    tenant: str | None
    tenant_from_context: TenantFromContext | None


@dataclass
class CallInfo:
    """What run hooks know about one tool call: the agent and links for its audit record."""

    agent: str | None = None
    links: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- public helpers


def is_guarded(tool: Any) -> bool:
    """True for a ``FunctionTool`` returned by :func:`guard_function_tool` (or ``guard_agent``)."""
    return isinstance(getattr(tool, "__dict__", {}).get(_GUARD_ATTR), _Guard)


def original_tool(tool: FunctionTool) -> FunctionTool:
    """The unguarded ``FunctionTool`` a guarded one was made from (``tool`` itself otherwise)."""
    guard = getattr(tool, "__dict__", {}).get(_GUARD_ATTR)
    return guard.original if isinstance(guard, _Guard) else tool


def tool_name_of(tool: FunctionTool) -> str:
    """The name the model calls the tool by (namespaced as ``namespace.name`` when it has one)."""
    qualified = getattr(tool, "qualified_name", None)
    return str(qualified or tool.name)


def context_tenant(ctx: Any, tenant_from_context: TenantFromContext | None = None) -> str | None:
    """The tenant a tool call's run context names, or None.

    With ``tenant_from_context`` that callable decides (it gets the
    ``ToolContext``). Otherwise the run context (``ctx.context``, what was
    passed as ``Runner.run(..., context=...)``) is asked for a ``tenant``
    attribute, or a ``"tenant"`` key when it is a mapping.
    """
    if tenant_from_context is not None:
        value = tenant_from_context(ctx)
    else:
        user_context = getattr(ctx, "context", None)
        if isinstance(user_context, Mapping):
            value = user_context.get("tenant")
        else:
            value = getattr(user_context, "tenant", None)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise KeyDerivationError(
        f"the run context gave tenant {value!r} of type {type(value).__name__}; a tenant is part of "
        "the idempotency key and must be a string. Put a string in context.tenant, or pass "
        "tenant_from_context=lambda ctx: ... to guard_agent / guard_function_tool"
    )


def record_call(ctx: Any, *, agent: str | None = None, links: Mapping[str, Any] | None = None) -> None:
    """Attach an agent name and audit links to one tool call's ``ToolContext`` (used by run hooks).

    The guarded tool reads them when it creates the execution, so they land on
    ``Execution.agent`` and ``Execution.links``. Several hooks may add to one call.
    """
    if ctx is None or not hasattr(ctx, "__dict__"):
        return
    info = ctx.__dict__.get(CALL_INFO_ATTR)
    if not isinstance(info, CallInfo):
        info = CallInfo()
        ctx.__dict__[CALL_INFO_ATTR] = info
    if agent is not None:
        info.agent = agent
    if links:
        info.links.update(links)


# ---------------------------------------------------------------------------- guarding one tool


def guard_function_tool(
    tool: FunctionTool,
    policy: str | Policy = "mutating",
    *,
    client: TbayClient | None = None,
    tenant: str | None = None,
    tenant_from_context: TenantFromContext | None = None,
    tool_name: str | None = None,
) -> FunctionTool:
    """A guarded copy of ``tool`` (the original is not modified).

    ``client`` defaults to the process-wide client (``$TBAY_DB_URL``), bound at
    the first call. An unknown policy name fails here, not at the first call.
    ``tool_name`` (default: the tool's name) is the tbay tool name: part of
    the key, and what ``tbay log --tool`` shows.
    """
    if not isinstance(tool, FunctionTool):
        raise TypeError(
            f"guard_function_tool: {tool!r} is not an agents.FunctionTool; guard plain functions "
            "with tbay_core.guarded, or make a FunctionTool with @function_tool first"
        )
    original = original_tool(tool)
    name = tool_name or tool_name_of(original)
    policy_name = check_policy(client, policy, name)

    inner_guard = _inner_guard(original)
    if inner_guard is not None:
        if inner_guard.policy_name != policy_name:
            raise PolicyError(
                f"tool '{name}': its function is already @guarded with policy "
                f"'{inner_guard.policy_name}' (tbay tool '{inner_guard.tool_name}'), so it is "
                f"guarded once already; asking for policy '{policy_name}' as well would nest two "
                "executions per call. Map it to its own policy, or drop one of the two guards."
            )
        return tool

    guard = _Guard(original, name, policy, policy_name, tenant, tenant_from_context)
    binder = _ClientBinder(client, name, policy_name, _identity_function(original))
    invoker = original.on_invoke_tool
    guarded_tool = copy.copy(original)
    if _is_sdk_invoker(invoker):
        # @function_tool: the SDK wraps the body in a failure-handling invoker. Guard the body
        # *inside* it, so a failure is recorded as a failure and still formatted for the model by
        # the tool's failure_error_function, exactly as without tbay.
        inner: Invoke = invoker._invoke_tool_impl
        guarded_impl = _guarded_invoke(guard, binder, inner)
        prepare = getattr(inner, "__agents_prepare_arguments__", None)
        if prepare is not None:  # keeps needs_approval callables seeing prepared arguments
            guarded_impl.__agents_prepare_arguments__ = prepare  # type: ignore[attr-defined]
        new_invoker = copy.copy(invoker)
        new_invoker._invoke_tool_impl = guarded_impl
        new_invoker._function_tool = None
        guarded_tool.on_invoke_tool = new_invoker.__agents_bind_function_tool__(guarded_tool)
    else:  # a hand-built FunctionTool: its on_invoke_tool is the body
        guarded_tool.on_invoke_tool = _guarded_invoke(guard, binder, invoker)
    guarded_tool.__dict__[_GUARD_ATTR] = guard
    if client is not None:
        binder.bind()  # a name clash on this client shows now, not at the first call
    return guarded_tool


def _guarded_invoke(guard: _Guard, binder: _ClientBinder, inner: Invoke) -> Invoke:
    async def invoke_guarded(ctx: ToolContext[Any], input: str) -> Any:
        arguments = _parse_arguments(guard.tool_name, input)
        tenant = context_tenant(ctx, guard.tenant_from_context)
        info = getattr(ctx, "__dict__", {}).get(CALL_INFO_ATTR)
        agent = info.agent if isinstance(info, CallInfo) else None
        links = dict(info.links) if isinstance(info, CallInfo) else None
        client = binder.bind()
        try:
            with scope(tenant=tenant, agent=agent, links=links):
                return await aguard_call(
                    client, guard.tool_name, guard.policy, arguments, lambda: inner(ctx, input),
                    tenant=guard.tenant,
                )
        except AGENT_VISIBLE_ERRORS as refusal:
            return as_tool_result(refusal)

    invoke_guarded.__qualname__ = f"tbay_guarded[{guard.tool_name}]"
    return invoke_guarded


def _parse_arguments(tool_name: str, input: str) -> dict[str, Any]:
    """The model's arguments as the key material: the JSON object it sent."""
    try:
        parsed = json.loads(input) if input else {}
    except ValueError:
        raise ModelBehaviorError(
            f"Invalid JSON input for tool {tool_name} (tbay did not run it)"
        ) from None
    if not isinstance(parsed, dict):
        raise ModelBehaviorError(
            f"Invalid JSON input for tool {tool_name}: expected a JSON object (tbay did not run it)"
        )
    return parsed


def _is_sdk_invoker(invoker: Any) -> bool:
    """The SDK's failure-handling invoker around a @function_tool body (0.20 and 0.24 alike)."""
    return (
        callable(getattr(invoker, "_invoke_tool_impl", None))
        and callable(getattr(invoker, "__agents_bind_function_tool__", None))
        and hasattr(invoker, "_function_tool")
    )


def _wrapped_callable(tool: FunctionTool) -> Any:
    try:
        return tool.__wrapped__  # the function given to @function_tool
    except AttributeError:
        return None


def _inner_guard(tool: FunctionTool) -> GuardedTool | None:
    """The GuardedTool of an @guarded function a FunctionTool was built from, if any."""
    inner = getattr(_wrapped_callable(tool), "__tbay_tool__", None)
    return inner if isinstance(inner, GuardedTool) else None


def _identity_function(tool: FunctionTool) -> Callable[..., Any]:
    """The function whose module and qualified name identify the tool (for ToolNameClash)."""
    candidate = _wrapped_callable(tool)
    if candidate is None:
        invoker = tool.on_invoke_tool
        candidate = invoker._invoke_tool_impl if _is_sdk_invoker(invoker) else invoker

    def stand_in(**arguments: Any) -> Any:  # never called: only its identity is compared
        raise AssertionError("tbay identity stand-in called")

    stand_in.__module__ = str(getattr(candidate, "__module__", None) or type(candidate).__module__)
    stand_in.__qualname__ = str(
        getattr(candidate, "__qualname__", None) or type(candidate).__qualname__
    )
    return stand_in


class _ClientBinder:
    """Resolves the client (the default one lazily) and registers the tool name on it once."""

    def __init__(self, client: TbayClient | None, tool_name: str, policy_name: str,
                 identity: Callable[..., Any]):
        self._client = client
        self._tool_name = tool_name
        self._policy_name = policy_name
        self._identity = identity
        self._bound: TbayClient | None = None

    def bind(self) -> TbayClient:
        bound = self._bound
        if bound is None:
            bound = self._client or default_client()
            bound.claim_tool_name(self._tool_name, self._identity)
            self._bound = bound
        return bound


# ---------------------------------------------------------------------------- entry point


class AgentsAdapter:
    """The ``tbay.adapters`` entry point for the Agents SDK: guards ``FunctionTool``s.

    Used by :func:`tbay_core.guard_toolkit`; the tenant also comes from the run
    context as described in this module's docstring.
    """

    def handles(self, tool: Any) -> bool:
        return isinstance(tool, FunctionTool)

    def tool_name(self, tool: Any) -> str:
        return tool_name_of(original_tool(tool))

    def guard(self, tool: Any, policy: str | Policy, *, client: TbayClient | None,
              tenant: str | None) -> Any:
        return guard_function_tool(tool, policy, client=client, tenant=tenant)
