"""``@guarded`` and ``guard_toolkit``: how functions and framework tools get guarded.

Framework adapters register through the ``tbay.adapters`` entry point group.
An entry point's *name* is the top-level module of the framework whose tool
types it handles (``langchain_core``, ``agents``, ``crewai``), so the core loads
an adapter only for a tool whose type already comes from that framework, and
never imports a framework the user does not use.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar, cast, overload

from .client import TbayClient, default_client
from .engine import GuardedTool
from .errors import PolicyError
from .policy import Policy, builtin_policies

F = TypeVar("F", bound=Callable[..., Any])

ADAPTER_GROUP = "tbay.adapters"


class ToolAdapter(Protocol):
    """What an adapter entry point provides for one framework's tool types."""

    def handles(self, tool: Any) -> bool:
        """True when ``tool`` is one of this framework's tool objects."""

    def tool_name(self, tool: Any) -> str:
        """The name the framework (and the model) knows the tool by."""

    def guard(self, tool: Any, policy: str | Policy, *, client: TbayClient | None,
              tenant: str | None) -> Any:
        """A guarded drop-in replacement of ``tool`` (same kind, name, schema)."""


@overload
def guarded(client: F) -> F: ...


@overload
def guarded(
    client: TbayClient | None = None,
    *,
    policy: str | Policy = "mutating",
    key_fn: Callable[..., Any] | None = None,
    tenant: str | None = None,
    tool_name: str | None = None,
    exclude_args: Sequence[str] = (),
) -> Callable[[F], F]: ...


def guarded(
    client: Any = None,
    *,
    policy: str | Policy = "mutating",
    key_fn: Callable[..., Any] | None = None,
    tenant: str | None = None,
    tool_name: str | None = None,
    exclude_args: Sequence[str] = (),
) -> Any:
    """Guard a sync or async function: idempotency, caching, singleflight, guardrails, approval.

    The wrapper keeps the function's name, docstring, signature and
    annotations, so frameworks build the same tool schema from it.
    ``client`` defaults to the process-wide client (``TBAY_DB_URL``).
    An unknown policy name fails here, at decoration time.
    ``exclude_args`` names arguments that are never part of the key (adapters
    use it for framework-injected arguments).
    """
    if callable(client) and not isinstance(client, TbayClient):  # bare ``@guarded``
        return guarded()(client)

    def decorate(fn: F) -> F:
        name = tool_name or getattr(fn, "__name__", None)
        if not name:
            raise PolicyError(f"cannot guard {fn!r}: it has no __name__; pass tool_name=...")
        policy_name = check_policy(client, policy, name)
        tool = GuardedTool(fn, tool_name=name, policy_name=policy_name, key_fn=key_fn,
                           tenant=tenant, exclude_args=tuple(exclude_args))
        bound: list[TbayClient] = []
        if client is not None:
            client.register_tool(tool)
            bound.append(client)

        def engine_of() -> Any:
            if not bound:
                resolved = default_client()
                resolved.policy(policy, tool_name=name)
                resolved.register_tool(tool)
                bound.append(resolved)
            return bound[0].engine

        if tool.is_async:
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                engine = bound[0].engine if bound else engine_of()
                return await engine.call_async(tool, args, kwargs)

            wrapper: Any = async_wrapper
        else:
            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                engine = bound[0].engine if bound else engine_of()
                return engine.call_sync(tool, args, kwargs)

            wrapper = sync_wrapper
        wrapper.__tbay_tool__ = tool
        return wrapper  # type: ignore[no-any-return]

    return decorate


def check_policy(client: TbayClient | None, policy: str | Policy, tool_name: str) -> str:
    """The policy's name, resolved now so that a typo fails at decoration time, not at the first call.

    Public for adapters that build their own decorators.
    """
    if client is not None:
        return client.policy(policy, tool_name=tool_name).name
    if isinstance(policy, Policy):
        policy.validate()
        return policy.name
    if policy in builtin_policies():
        return policy
    return default_client().policy(policy, tool_name=tool_name).name


def guard_toolkit(
    tools: Sequence[Any],
    policy_map: Mapping[str, str | Policy],
    *,
    client: TbayClient | None = None,
    tenant: str | None = None,
) -> list[Any]:
    """Guard every tool of a toolkit at once, returning the same kinds in the same order.

    ``policy_map`` maps tool names or glob patterns (``"refund_*"``, ``"*"``) to
    policy names or :class:`Policy` objects. An exact name wins over a
    pattern; among patterns the first listed wins. A tool that nothing matches
    is an error listing every unmatched name: the toolkit fails closed.
    """
    named = [(_adapter_for(tool), tool) for tool in tools]
    names = [adapter.tool_name(tool) if adapter else _callable_name(tool) for adapter, tool in named]
    unmatched = [name for name in names if match_policy(name, policy_map) is None]
    if unmatched:
        raise PolicyError(
            f"guard_toolkit: no policy_map entry matches tool(s) {', '.join(unmatched)}; add them "
            "(or a pattern such as '*') so no tool runs unguarded"
        )
    guarded_tools = []
    for (adapter, tool), name in zip(named, names, strict=True):
        policy = match_policy(name, policy_map)
        assert policy is not None
        if adapter is not None:
            guarded_tools.append(adapter.guard(tool, policy, client=client, tenant=tenant))
        else:
            guarded_tools.append(guarded(client, policy=policy, tenant=tenant, tool_name=name)(tool))
    return guarded_tools


def match_policy(name: str, policy_map: Mapping[str, str | Policy]) -> str | Policy | None:
    """The policy ``policy_map`` gives a tool name: an exact entry first, then the first matching glob."""
    if name in policy_map:
        return policy_map[name]
    for pattern, policy in policy_map.items():
        if fnmatch.fnmatchcase(name, pattern):
            return policy
    return None


def _callable_name(tool: Any) -> str:
    if not callable(tool):
        raise TypeError(
            f"guard_toolkit: {tool!r} is neither a callable nor a tool of a framework with an "
            "installed tbay adapter (install tbay[langchain], tbay[openai-agents] or tbay[crewai])"
        )
    name = getattr(tool, "__name__", None)
    if not name:
        raise TypeError(f"guard_toolkit: {tool!r} has no __name__; wrap it with guarded(tool_name=...)")
    return str(name)


@functools.cache
def _adapters_for_root(root: str) -> tuple[ToolAdapter, ...]:
    found: list[ToolAdapter] = []
    for entry in entry_points(group=ADAPTER_GROUP):
        if entry.name == root:
            adapter = entry.load()
            found.append(cast(ToolAdapter, adapter() if inspect.isclass(adapter) else adapter))
    return tuple(found)


def _adapter_for(tool: Any) -> ToolAdapter | None:
    """The adapter for a framework tool, chosen by the modules of the tool's type and its bases."""
    if inspect.isfunction(tool) or inspect.ismethod(tool):
        return None
    for cls in type(tool).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root == "builtins":
            continue
        for adapter in _adapters_for_root(root):
            if adapter.handles(tool):
                return adapter
    return None


_RUN_ARG = "__tbay_run__"


def _run_body(__tbay_run__: Callable[[], Any], /, **arguments: Any) -> Any:
    return __tbay_run__()


async def _run_body_async(__tbay_run__: Callable[[], Any], /, **arguments: Any) -> Any:
    return await __tbay_run__()


def _call_tool(client: TbayClient, tool_name: str, policy: str | Policy, is_async: bool,
               tenant: str | None, returns: Any, identity: Callable[..., Any] | None) -> GuardedTool:
    """The GuardedTool standing for a framework tool guarded per call (cached per client and name)."""
    if identity is not None:
        client.claim_tool_name(tool_name, identity)
    cache = client.call_tools
    policy_name = client.policy(policy, tool_name=tool_name).name
    cache_key = (tool_name, policy_name, is_async, tenant, repr(returns))
    tool = cache.get(cache_key)
    if tool is None:
        body = _run_body_async if is_async else _run_body
        tool = GuardedTool(body, tool_name=tool_name, policy_name=policy_name, key_fn=None,
                           tenant=tenant, exclude_args=(_RUN_ARG,))
        tool.return_annotation = returns
        tool = cache.setdefault(cache_key, tool)
    return tool


def guard_call(client: TbayClient | None, tool_name: str, policy: str | Policy,
               arguments: Mapping[str, Any], run: Callable[[], Any], *,
               tenant: str | None = None, returns: Any = None,
               identity: Callable[..., Any] | None = None) -> Any:
    """Run ``run()`` as the guarded execution of tool ``tool_name`` called with ``arguments``.

    For adapters whose framework hands them a per-call callback (a LangChain
    middleware's ``handler``, a CrewAI hook) rather than a function to wrap:
    the key, cache, singleflight, guardrails and approval all apply to
    ``arguments`` exactly as for ``@guarded``. ``returns`` is the result's type
    (rebuilds dataclasses and models on replay); ``identity`` is the tool's own
    function, claimed under ``tool_name`` so that two different tools sharing a
    name raise :class:`~tbay_core.errors.ToolNameClash` instead of sharing results.
    """
    resolved = client or default_client()
    tool = _call_tool(resolved, tool_name, policy, False, tenant, returns, identity)
    return resolved.engine.call_sync(tool, (run,), dict(arguments))


async def aguard_call(client: TbayClient | None, tool_name: str, policy: str | Policy,
                      arguments: Mapping[str, Any], run: Callable[[], Any], *,
                      tenant: str | None = None, returns: Any = None,
                      identity: Callable[..., Any] | None = None) -> Any:
    """The async form of :func:`guard_call`: ``run()`` returns an awaitable."""
    resolved = client or default_client()
    tool = _call_tool(resolved, tool_name, policy, True, tenant, returns, identity)
    return await resolved.engine.call_async(tool, (run,), dict(arguments))

