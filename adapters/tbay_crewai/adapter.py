"""CrewAI tools under tbay: a guarded ``BaseTool`` wrapper and the ``tbay.adapters`` entry point.

``guard_tool(tool, policy)`` (or ``guard_toolkit([...], {...})``, which finds
:class:`CrewAIAdapter` through the ``tbay.adapters`` entry point named
``crewai``) returns a :class:`TbayCrewTool`: a CrewAI ``BaseTool`` with the
same name, description, argument schema and result schema as the original,
whose every execution goes through tbay (key, cache, singleflight,
guardrails, approval, audit log).

How it plugs into CrewAI 1.x (verified against crewai 1.15):

* Both agent paths end in the wrapper's ``_run``: the ReAct text path calls
  the ``CrewStructuredTool`` built by :meth:`TbayCrewTool.to_structured_tool`
  (``invoke``, whose ``func`` is ``_run``); the native function-calling path
  calls ``BaseTool.run``, which validates the arguments and calls ``_run``.
  ``Crew.akickoff`` runs those same sync steps in worker threads with the
  caller's context copied, so ``tbay_core.scope`` applies there too. The
  structured tool's ``ainvoke`` (CrewAI's async ``ToolUsage.ause``) is routed
  to ``_arun``, so it stays on the event loop with the caller's contextvars;
  CrewAI's own ``ainvoke`` would run a sync ``_run`` in an executor thread
  without them.
* CrewAI's result cache (``Crew(cache=True)`` / ``Agent(cache=True)``) keys on
  the tool name and the JSON of the arguments and answers repeated calls
  without running the tool, so a cached call would bypass tbay (no policy,
  no TTL, no pause, no approval, no audit). The wrapper's ``cache_function``
  always answers False, so CrewAI never stores a guarded tool's result and
  never has one to replay; tbay's policy alone decides what is replayed.
* The key is the validated arguments (``args_schema`` applied, defaults
  filled in), so the ReAct and native paths, and ``run(q="x")`` versus
  ``run(q="x", limit=10)`` with ``limit`` defaulting to 10, share one key.

Refusals. Inside an agent loop a refusal (rejected, pending approval, paused,
rate-limited, over budget, a replayed failure...: ``AGENT_VISIBLE_ERRORS``)
comes back from ``run``/``arun``/``_run``/``_arun`` as a :class:`TbayRefusal`,
a ``str`` holding :func:`tbay_core.refusals.as_tool_result`, which the model
reads as the tool's result; raising would make CrewAI retry the call and
report a generic tool error, or abort the run under
``tool_failure_policy="raise"``. Plain Python code that wants the exceptions
calls :meth:`TbayCrewTool.call` / :meth:`TbayCrewTool.acall`. The tool's own
exceptions are never swallowed: the caller that ran it gets the real
exception (CrewAI then reports it to the model as a tool error).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from crewai.tools import BaseTool
from crewai.tools.base_tool import Tool
from crewai.tools.structured_tool import CrewStructuredTool, ToolUsageLimitExceededError
from crewai.utilities.string_utils import sanitize_tool_name
from pydantic import Field, PrivateAttr

from tbay_core import Policy, TbayClient, TbayError, guarded
from tbay_core.refusals import AGENT_VISIBLE_ERRORS, as_tool_result

__all__ = [
    "CrewAIAdapter",
    "TbayCrewTool",
    "TbayRefusal",
    "guard_tool",
    "never_cache",
]


def never_cache(_args: Any = None, _result: Any = None) -> bool:
    """CrewAI ``cache_function`` of every guarded tool: never store its result in CrewAI's cache.

    A module-level function (not a lambda) so CrewAI can serialise the tool
    (checkpoints store ``cache_function`` as a dotted path).
    """
    return False


class TbayRefusal(str):
    """What a guarded CrewAI tool returns when tbay refused or deferred the call.

    A ``str`` (so CrewAI hands it to the model unchanged) whose text is
    :func:`tbay_core.refusals.as_tool_result` of :attr:`error`, the exception a
    plain Python caller would have got.
    """

    error: TbayError

    def __new__(cls, error: TbayError, text: str | None = None) -> TbayRefusal:
        refusal = super().__new__(cls, as_tool_result(error) if text is None else text)
        refusal.error = error
        return refusal

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy/pickle rebuild the same text and error
        return (self.error, str(self))


def _run_coroutine(awaitable: Any) -> Any:
    """Finish an awaitable from sync code, as ``BaseTool.run`` does, even under a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    # Called from a thread that runs an event loop: asyncio.run() would refuse,
    # so finish it on a fresh loop in a helper thread (keeping the caller's context).
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def worker() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, _await(awaitable))
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="tbay-crewai-await", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _inner_target(inner: BaseTool) -> Callable[..., Any]:
    """The user code behind a CrewAI tool: ``Tool.func`` for ``@tool`` tools, else ``_run``."""
    if isinstance(inner, Tool) and callable(getattr(inner, "func", None)):
        return inner.func  # type: ignore[no-any-return]
    return type(inner)._run


def _return_annotation(inner: BaseTool) -> Any:
    """The inner tool's declared return type, so tbay rebuilds models/dataclasses on replay."""
    try:
        return typing.get_type_hints(_inner_target(inner)).get("return")
    except Exception:  # unresolvable annotations: replay falls back to already-imported classes
        return None


def _has_async_body(inner: BaseTool) -> bool:
    if isinstance(inner, Tool):
        return asyncio.iscoroutinefunction(inner.func)
    return type(inner)._arun is not BaseTool._arun


def _make_bodies(inner: BaseTool) -> tuple[Callable[..., Any], Callable[..., Coroutine[Any, Any, Any]]]:
    """The sync and async functions tbay guards: each runs the inner tool once with the arguments.

    They carry the identity of the inner tool's code (module and qualified
    name), so guarding two different tools under one name on one client
    raises ``ToolNameClash``, while guarding the same tool again is allowed.
    """
    run_is_async = asyncio.iscoroutinefunction(type(inner)._run)

    def body(**arguments: Any) -> Any:
        result = inner._run(**arguments)
        if inspect.isawaitable(result):  # async _run / async @tool function, as BaseTool.run does
            result = _run_coroutine(result)
        return result

    async def abody(**arguments: Any) -> Any:
        if _has_async_body(inner):
            return await inner._arun(**arguments)
        if run_is_async:
            return await inner._run(**arguments)
        # A sync tool: run it off the event loop (asyncio.to_thread keeps contextvars).
        result = await asyncio.to_thread(inner._run, **arguments)
        if inspect.isawaitable(result):
            result = await result
        return result

    target = _inner_target(inner)
    module = getattr(target, "__module__", None) or type(inner).__module__
    qualname = getattr(target, "__qualname__", None) or type(inner).__qualname__
    annotation = _return_annotation(inner)
    for fn in (body, abody):
        fn.__module__ = module
        fn.__qualname__ = qualname
        fn.__name__ = qualname.rsplit(".", 1)[-1]
        fn.__doc__ = inner.description
        fn.__annotations__ = {"return": annotation} if annotation is not None else {}
    return body, abody


class _GuardedStructuredTool(CrewStructuredTool):
    """The ``CrewStructuredTool`` CrewAI's ReAct path calls; ``ainvoke`` stays on the event loop."""

    async def ainvoke(self, input: str | dict[str, Any], config: dict[str, Any] | None = None,
                      **kwargs: Any) -> Any:
        parsed_args = self._parse_args(input)
        if self.has_reached_max_usage_count():
            name = sanitize_tool_name(self.name)
            raise ToolUsageLimitExceededError(
                f"Tool '{name}' has reached its maximum usage limit of {self.max_usage_count}. "
                f"You should not use the {name} tool again."
            )
        self._increment_usage_count()
        original = self._original_tool
        assert isinstance(original, TbayCrewTool)
        return await original._arun(**parsed_args, **kwargs)


class TbayCrewTool(BaseTool):
    """A CrewAI tool whose executions go through tbay; a drop-in for the tool it wraps.

    Build it with :func:`guard_tool` or ``tbay_core.guard_toolkit``. Same
    ``name``, ``description``, ``args_schema``, ``result_schema``,
    ``result_as_answer``, ``max_usage_count`` and ``tool_failure_policy`` as the
    original; ``cache_function`` is :func:`never_cache` (CrewAI's cache would
    bypass tbay). ``run``/``arun`` return refusals as :class:`TbayRefusal` text
    for the model; :meth:`call`/:meth:`acall` raise them.
    """

    tbay_policy: str = Field(default="mutating", description="The tbay policy guarding this tool.")

    _tbay_inner: BaseTool | None = PrivateAttr(default=None)
    _tbay_sync: Callable[..., Any] | None = PrivateAttr(default=None)
    _tbay_async: Callable[..., Any] | None = PrivateAttr(default=None)

    @property
    def wrapped_tool(self) -> BaseTool:
        """The original CrewAI tool."""
        return self._bound()[0]

    # ------------------------------------------------------------------ CrewAI entry points

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """What CrewAI runs (ReAct and native paths): refusals come back as text for the model."""
        try:
            return self.call(*args, **kwargs)
        except AGENT_VISIBLE_ERRORS as exc:
            return TbayRefusal(exc)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        """The async form of :meth:`_run` (``arun``, and the ReAct path under ``akickoff``)."""
        try:
            return await self.acall(*args, **kwargs)
        except AGENT_VISIBLE_ERRORS as exc:
            return TbayRefusal(exc)

    def to_structured_tool(self) -> CrewStructuredTool:
        """CrewAI's structured form of this tool, whose async path awaits :meth:`_arun`."""
        base = super().to_structured_tool()
        structured = _GuardedStructuredTool(
            **{field: getattr(base, field) for field in CrewStructuredTool.model_fields}
        )
        structured._original_tool = self
        return structured

    def format_output_for_agent(self, raw_result: Any) -> str:
        """Refusal text verbatim; anything else formatted as the original tool formats it."""
        if isinstance(raw_result, TbayRefusal):
            return str(raw_result)
        inner = self._tbay_inner
        if inner is not None:
            return inner.format_output_for_agent(raw_result)
        return super().format_output_for_agent(raw_result)

    # ------------------------------------------------------------------ plain Python

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Run the tool through tbay from plain Python: tbay's refusals raise (``ApprovalPending``...)."""
        _, sync_fn, _ = self._bound()
        return sync_fn(**self._arguments(args, kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """The async form of :meth:`call`."""
        _, _, async_fn = self._bound()
        return await async_fn(**self._arguments(args, kwargs))

    # ------------------------------------------------------------------ internals

    def _bound(self) -> tuple[BaseTool, Callable[..., Any], Callable[..., Any]]:
        if self._tbay_inner is None or self._tbay_sync is None or self._tbay_async is None:
            raise TbayError(
                f"CrewAI tool '{self.name}': this TbayCrewTool is not bound to a tool (was it "
                "restored from a checkpoint?); build it with tbay_crewai.guard_tool(tool, policy)"
            )
        return self._tbay_inner, self._tbay_sync, self._tbay_async

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments validated by ``args_schema``: what the tool runs with and tbay keys on."""
        fields = list(self.args_schema.model_fields) if self.args_schema is not None else []
        if len(args) > len(fields):
            raise TypeError(
                f"CrewAI tool '{self.name}' takes {len(fields)} argument(s) ({', '.join(fields)}) "
                f"but {len(args)} positional value(s) were given"
            )
        merged = dict(zip(fields, args, strict=False))
        doubled = sorted(set(merged) & set(kwargs))
        if doubled:
            raise TypeError(f"CrewAI tool '{self.name}' got multiple values for {', '.join(doubled)}")
        merged.update(kwargs)
        return self._validate_kwargs(merged)


def guard_tool(
    tool: BaseTool,
    policy: str | Policy = "mutating",
    *,
    client: TbayClient | None = None,
    tenant: str | None = None,
    key_fn: Callable[..., Any] | None = None,
    tool_name: str | None = None,
) -> TbayCrewTool:
    """Guard one CrewAI tool: a :class:`TbayCrewTool` drop-in with the same name and schema.

    ``tool_name`` (the tbay name, part of the key) defaults to ``tool.name``;
    ``key_fn`` receives the validated arguments as keywords. ``client``
    defaults to tbay's process-wide client. An unknown policy fails here.
    """
    if not isinstance(tool, BaseTool):
        raise TypeError(f"guard_tool: {tool!r} is not a CrewAI BaseTool")
    if isinstance(tool, TbayCrewTool):
        raise TypeError(
            f"CrewAI tool '{tool.name}' is already guarded by tbay (policy '{tool.tbay_policy}'); "
            "guard the original tool once"
        )
    if getattr(_inner_target(tool), "__tbay_tool__", None) is not None:
        raise TypeError(
            f"CrewAI tool '{tool.name}' wraps a function already decorated with @guarded; guard "
            "either the function or the tool, not both (the call would wait on itself)"
        )
    name = tool_name or tool.name
    body, abody = _make_bodies(tool)
    options: dict[str, Any] = {"policy": policy, "tenant": tenant, "tool_name": name, "key_fn": key_fn}
    sync_fn = guarded(client, **options)(body)
    async_fn = guarded(client, **options)(abody)
    policy_name = policy.name if isinstance(policy, Policy) else policy
    wrapper = TbayCrewTool(
        name=tool.name,
        description=tool.description,
        env_vars=list(tool.env_vars),
        args_schema=tool.args_schema,
        result_schema=tool.result_schema,
        result_as_answer=tool.result_as_answer,
        max_usage_count=tool.max_usage_count,
        tool_failure_policy=tool.tool_failure_policy,
        cache_function=never_cache,
        tbay_policy=policy_name,
    )
    wrapper._tbay_inner = tool
    wrapper._tbay_sync = sync_fn
    wrapper._tbay_async = async_fn
    return wrapper


class CrewAIAdapter:
    """The ``tbay.adapters`` entry point for CrewAI tools (any ``crewai.tools.BaseTool``)."""

    def handles(self, tool: Any) -> bool:
        return isinstance(tool, BaseTool)

    def tool_name(self, tool: Any) -> str:
        return str(tool.name)

    def guard(self, tool: Any, policy: str | Policy, *, client: TbayClient | None,
              tenant: str | None) -> TbayCrewTool:
        return guard_tool(tool, policy, client=client, tenant=tenant)
