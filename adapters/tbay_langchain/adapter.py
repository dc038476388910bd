"""LangChain tools guarded by tbay: a drop-in ``BaseTool`` wrapper and the adapter entry point.

:class:`TbayTool` wraps any LangChain ``BaseTool`` (``@tool`` functions,
``StructuredTool``, ``BaseTool`` subclasses). It keeps the wrapped tool's
``name``, ``description``, ``args_schema`` (so ``tool_call_schema`` and the
schema the model sees are the same), ``return_direct``, ``response_format``,
tags, metadata, callbacks and error handling, and runs the same way through
``invoke``, ``ainvoke``, ``run``, ``arun``, ``ToolNode`` and ``create_agent``.

Where the guard sits. LangChain's ``BaseTool.run`` validates the input,
fires ``on_tool_start``, calls ``_run`` and turns its return value into a
``ToolMessage`` carrying the *current* call's ``tool_call_id``. The wrapper
guards inside ``_run``, around the wrapped tool's own ``_run``/``_arun``:

* a replay goes through the same formatting, so a replayed ``ToolMessage``
  carries the new caller's ``tool_call_id`` (a tool that builds its own
  ``ToolMessage`` is stored without its id and rebuilt with the new one);
* callbacks and tracing see every call, replays included, and a
  :class:`~tbay_langchain.TbayCallbackHandler` has opened its audit links
  (run id, parent run id, tool call id) before the execution is claimed;
* the key is derived from the *validated* arguments (schema defaults applied,
  ``"5"`` and ``5`` for an ``int`` field are one call) minus everything
  LangChain injects: ``runtime``/``ToolRuntime``, ``InjectedToolCallId``,
  ``InjectedState``, ``InjectedStore``, other ``InjectedToolArg`` fields,
  ``callbacks``, ``run_manager`` and the ``RunnableConfig`` parameter.

Refusals. Called with a tool call (``{"type": "tool_call", "id": ...}``, as
``ToolNode`` and agents do), a refused or deferred call (rejected, paused,
rate-limited, over budget, approval pending, a replayed failure) returns a
``ToolMessage`` with ``status="error"`` whose content is
:func:`tbay_core.refusals.as_tool_result`, so the agent loop continues and the
model reads what happened. Called with plain arguments (``tool.invoke({...})``,
``tool.run(...)``) it raises the tbay exception, like any guarded function.

Failures the tool *reports* rather than raises (a ``ToolMessage`` with
``status="error"``) are recorded as failed executions (:class:`ToolErrorResult`),
so they are retried or replayed as failures by the policy, never cached as
successes. A result that is a LangGraph ``Command`` (or another non-message
tool output) is recorded as succeeded-but-not-replayable: replaying a state
update under another tool call id would be wrong, so later identical calls
are told the action already ran.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolMessage
from langchain_core.messages.tool import ToolOutputMixin
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.pydantic import get_fields, is_basemodel_subclass

from tbay_core import Policy, PolicyError, TbayClient, guarded
from tbay_core.refusals import AGENT_VISIBLE_ERRORS, as_tool_result

__all__ = [
    "LangChainAdapter",
    "StoredToolMessage",
    "TbayTool",
    "ToolErrorResult",
    "guard_tool",
    "guard_tools",
    "is_guarded",
    "refusal_message",
]

RUN_ARG = "__tbay_run__"
"""The guarded body's first parameter: the callable that really runs the tool (never in the key)."""

ALWAYS_INJECTED = frozenset({"callbacks", "run_manager"})
"""Names LangChain fills in for every tool (``langchain_core.tools.base.FILTERED_ARGS``)."""

# The tool_call_id of the LangChain call in progress: set by TbayTool.run/arun,
# read inside _run/_arun (LangChain runs them in a copy of the caller's context).
_TOOL_CALL_ID: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "tbay_langchain_tool_call_id", default=None
)


def current_tool_call_id(tool_name: str | None = None) -> str | None:
    """The tool call id of the :class:`TbayTool` call running in this context (of that tool), if any."""
    current = _TOOL_CALL_ID.get()
    if current is None or (tool_name is not None and current[0] != tool_name):
        return None
    return current[1]


# ---------------------------------------------------------------------------
# results and refusals as LangChain messages
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoredToolMessage:
    """How a ``ToolMessage`` a tool returned is stored: everything but its ids.

    The message id is dropped (LangGraph's ``add_messages`` would replace an
    earlier message with the same id) and the tool call id is replaced by the
    replaying caller's own.
    """

    content: Any
    artifact: Any = None
    status: str = "success"
    name: str | None = None
    tool_call_id: str | None = None
    additional_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    response_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


class ToolErrorResult(Exception):
    """A tool answered with an error ``ToolMessage``; tbay records it as the execution's failure.

    The caller that ran the tool still gets the original message; identical
    later calls get the policy's answer to a failure (a replayed
    ``ExecutionFailed`` or a retry).
    """

    def __init__(self, message: ToolMessage):
        super().__init__(message_text(message))
        self.message = message


class UnreplayableToolOutput:
    """Stands for a tool output tbay must not replay (a LangGraph ``Command``, a list of messages).

    It has no value the codec can store, so the engine records the execution
    as succeeded-but-not-replayable and tells later identical calls so.
    """

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind} tool output: not replayable under another tool call id>"


def message_text(message: ToolMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    try:
        return json.dumps(content, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(content)


def to_storable(value: Any) -> Any:
    """What the engine stores for a tool's return value (see the module docstring)."""
    if isinstance(value, ToolMessage):
        if value.status == "error":
            raise ToolErrorResult(value)
        return StoredToolMessage(
            content=value.content,
            artifact=value.artifact,
            status=value.status,
            name=value.name,
            tool_call_id=value.tool_call_id,
            additional_kwargs=dict(value.additional_kwargs),
            response_metadata=dict(value.response_metadata),
        )
    if isinstance(value, ToolOutputMixin):
        return UnreplayableToolOutput(type(value).__name__)
    if isinstance(value, list) and value and any(isinstance(v, ToolOutputMixin) for v in value):
        return UnreplayableToolOutput("list of tool outputs")
    return value


def from_storable(value: Any, *, tool_call_id: str | None, name: str) -> Any:
    """A replayed value as the current caller must see it (messages get its tool_call_id)."""
    if isinstance(value, StoredToolMessage):
        return ToolMessage(
            content=value.content,
            artifact=value.artifact,
            status=value.status,  # type: ignore[arg-type]
            name=value.name or name,
            tool_call_id=tool_call_id or value.tool_call_id or "",
            additional_kwargs=dict(value.additional_kwargs),
            response_metadata=dict(value.response_metadata),
        )
    return value


def refusal_message(error: BaseException, *, tool_call_id: str | None, name: str) -> ToolMessage:
    """The ``ToolMessage`` a model reads when tbay refused or deferred a call (``status="error"``)."""
    text = as_tool_result(error) if isinstance(error, AGENT_VISIBLE_ERRORS) else str(error)
    return ToolMessage(content=text, tool_call_id=tool_call_id or "", name=name, status="error")


# ---------------------------------------------------------------------------
# which arguments make the key
# ---------------------------------------------------------------------------


def injected_names(tool: BaseTool) -> frozenset[str]:
    """Argument names LangChain fills in at call time for ``tool``: never part of a key.

    These are the fields of the tool's full input schema that its
    ``tool_call_schema`` (what the model sees) leaves out — ``InjectedToolArg``
    annotations (``InjectedToolCallId``, ``InjectedState``, ``InjectedStore``)
    and ``ToolRuntime`` — plus parameters LangChain detects on the function's
    signature, plus ``callbacks`` and ``run_manager``.
    """
    names = set(ALWAYS_INJECTED)
    names.update(getattr(tool, "_injected_args_keys", ()) or ())
    try:
        full = tool.get_input_schema()
        visible = tool.tool_call_schema
    except Exception:  # an unusual schema: keep what the signature told us
        return frozenset(names)
    if is_basemodel_subclass(full) and isinstance(visible, type) and is_basemodel_subclass(visible):
        names.update(set(get_fields(full)) - set(get_fields(visible)))
    return frozenset(names)


def visible_field_names(tool: BaseTool) -> list[str]:
    """The argument names the model supplies, in schema order (empty when unknown)."""
    try:
        schema = tool.tool_call_schema
    except Exception:
        return []
    if isinstance(schema, dict):
        return list(schema.get("properties", {}))
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        return list(get_fields(schema))
    return []


def key_arguments(
    tool: BaseTool, args: tuple[Any, ...], kwargs: Mapping[str, Any], injected: frozenset[str]
) -> dict[str, Any]:
    """The arguments a call is keyed on: the validated ones without the injected ones.

    A legacy single string input (``tool.invoke("query")``) is named after the
    schema's first field, so it is the same call as ``tool.invoke({"q": "query"})``.
    """
    out = {k: v for k, v in kwargs.items() if k not in injected}
    if args:
        names = [n for n in visible_field_names(tool) if n not in out]
        if 0 < len(args) <= len(names):
            out.update(zip(names, args))  # noqa: B905 - args may be shorter than names
            return model_arguments(tool, out)  # LangChain passed the string unparsed: apply defaults
        out["args"] = list(args)
        return out
    return _with_defaults(tool, out)


def _with_defaults(tool: BaseTool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Add the schema defaults of arguments the caller left out (older LangChain versions do not).

    So ``{"query": "q"}`` and ``{"query": "q", "limit": 3}`` (the default) are one call
    on every LangChain version.
    """
    try:
        schema = tool.tool_call_schema
    except Exception:
        return arguments
    if not (isinstance(schema, type) and is_basemodel_subclass(schema)):
        return arguments
    for name, info in get_fields(schema).items():
        if name in arguments or name in ("args", "kwargs"):
            continue
        is_required = getattr(info, "is_required", None)
        if is_required is None or is_required():
            continue  # pydantic v1 field info or a required field: nothing to add
        try:
            arguments[name] = info.get_default(call_default_factory=True)
        except Exception:  # a default factory that needs validated data: leave it out
            continue
    return arguments


def model_arguments(tool: BaseTool | None, args: Mapping[str, Any]) -> dict[str, Any]:
    """Key arguments of a raw model tool call (the middleware sees calls before LangChain parses them).

    Injected names are dropped (a model cannot forge them: ``ToolNode`` strips
    them too), then the arguments are validated with the tool's
    ``tool_call_schema`` so defaults and coercions apply exactly as when the
    tool parses its input. When that validation fails the raw arguments are
    used: the key is then still exact, only less forgiving.
    """
    if tool is None:
        return dict(args)
    injected = injected_names(tool)
    raw = {k: v for k, v in args.items() if k not in injected}
    try:
        schema = tool.tool_call_schema
    except Exception:
        return raw
    if not (isinstance(schema, type) and is_basemodel_subclass(schema)) or not hasattr(
        schema, "model_validate"
    ):
        return raw
    try:
        model = schema.model_validate(raw)
    except Exception:  # the tool will report the invalid input itself
        return raw
    out: dict[str, Any] = {}
    for name, info in get_fields(schema).items():
        given = name in raw or name in model.model_fields_set
        defaulted = name not in ("args", "kwargs") and not info.is_required()
        if given or defaulted:
            out[name] = getattr(model, name)
    for name, value in raw.items():
        out.setdefault(name, value)
    return out


# ---------------------------------------------------------------------------
# the wrapper
# ---------------------------------------------------------------------------


def is_guarded(tool: Any) -> bool:
    """True when calls of ``tool`` already go through tbay (a :class:`TbayTool`, or an ``@guarded`` function)."""
    if isinstance(tool, TbayTool):
        return True
    for attr in ("func", "coroutine"):
        fn = getattr(tool, attr, None)
        if fn is not None and getattr(fn, "__tbay_tool__", None) is not None:
            return True
    return getattr(tool, "__tbay_tool__", None) is not None


def identity_of(tool: BaseTool) -> Any:
    """What tells two tools of one name apart (for ``ToolNameClash``): the function a
    ``StructuredTool`` runs, else the tool's class."""
    target: Any = getattr(tool, "func", None) or getattr(tool, "coroutine", None)
    if not callable(target) or getattr(target, "__qualname__", None) is None:
        target = type(tool)
    return target


def _identity(tool: BaseTool) -> tuple[str, str]:
    """Module and qualified name of :func:`identity_of`."""
    target = identity_of(tool)
    return str(getattr(target, "__module__", "?")), str(target.__qualname__)


def _bodies(tool: BaseTool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The functions tbay guards for one tool: they only run what the wrapper hands them."""

    def body(__tbay_run__, /, **arguments):  # type: ignore[no-untyped-def]
        return __tbay_run__()

    async def abody(__tbay_run__, /, **arguments):  # type: ignore[no-untyped-def]
        return await __tbay_run__()

    module, qualname = _identity(tool)
    for fn in (body, abody):
        fn.__module__ = module
        fn.__qualname__ = qualname
        fn.__name__ = tool.name
        fn.__doc__ = tool.description
    return body, abody


@functools.lru_cache(maxsize=1024)
def _takes_run_manager(fn: Callable[..., Any]) -> bool:
    try:
        return "run_manager" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=1024)
def _config_param(fn: Callable[..., Any]) -> str | None:
    """The parameter annotated ``RunnableConfig``, which LangChain fills with the call's config."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    for name, hint in hints.items():
        if hint is RunnableConfig:
            return name
    return None


def _call_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], config: RunnableConfig,
                 run_manager: Any) -> dict[str, Any]:
    """Hand the wrapped method what ``BaseTool.run`` would have handed it."""
    func = getattr(fn, "__func__", fn)  # cache on the function, not on each bound method
    call = dict(kwargs)
    if run_manager is not None and _takes_run_manager(func):
        call["run_manager"] = run_manager
    param = _config_param(func)
    if param is not None:
        call[param] = config
    return call


class TbayTool(BaseTool):
    """A LangChain tool whose every call goes through tbay; a drop-in for the tool it wraps.

    Build one with :func:`guard_tool` (or ``tbay_core.guard_toolkit``). The
    wrapped tool is :attr:`wrapped`; the tbay tool name (part of the key) is
    the LangChain tool name.
    """

    _tbay_wrapped: Any = None
    _tbay_policy: Any = None
    _tbay_sync: Any = None
    _tbay_async: Any = None
    _tbay_injected: Any = None
    _tbay_direct: Any = None

    def __init__(self, tool: BaseTool, policy: str | Policy = "mutating", *,
                 client: TbayClient | None = None, tenant: str | None = None):
        if not isinstance(tool, BaseTool):
            raise TypeError(f"TbayTool wraps a LangChain BaseTool, not {tool!r}")
        if is_guarded(tool):
            raise PolicyError(
                f"tool '{tool.name}' is already guarded by tbay (its function is @guarded); "
                "guarding it again would nest two executions of one call. Guard it once: either "
                "the function or the LangChain tool."
            )
        fields = {name: getattr(tool, name) for name in BaseTool.model_fields if hasattr(tool, name)}
        super().__init__(**fields)
        body, abody = _bodies(tool)
        options: dict[str, Any] = {"policy": policy, "tenant": tenant, "tool_name": tool.name,
                                   "exclude_args": (RUN_ARG,)}
        self._tbay_wrapped = tool
        self._tbay_policy = policy
        self._tbay_sync = guarded(client, **options)(body)
        self._tbay_async = guarded(client, **options)(abody)

    # -- what it wraps -------------------------------------------------------

    @property
    def wrapped(self) -> BaseTool:
        """The original LangChain tool (calling it directly bypasses tbay)."""
        return self._tbay_wrapped  # type: ignore[no-any-return]

    @property
    def tbay_policy(self) -> str | Policy:
        """The policy (name or object) this tool is guarded with."""
        return self._tbay_policy  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"TbayTool(name={self.name!r}, policy={self._tbay_policy!r}, wrapped={type(self._tbay_wrapped).__name__})"

    # -- parsing and schemas: exactly the wrapped tool's -----------------------

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self._tbay_wrapped.get_input_schema(config)

    @functools.cached_property
    def _injected_args_keys(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(getattr(self._tbay_wrapped, "_injected_args_keys", ()) or ())

    def _parse_input(self, *args: Any, **kwargs: Any) -> Any:
        return self._tbay_wrapped._parse_input(*args, **kwargs)

    def _to_args_and_kwargs(self, *args: Any, **kwargs: Any) -> Any:
        return self._tbay_wrapped._to_args_and_kwargs(*args, **kwargs)

    def _key_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        injected = self._tbay_injected
        if injected is None:
            injected = self._tbay_injected = injected_names(self._tbay_wrapped)
        return key_arguments(self._tbay_wrapped, args, kwargs, injected)

    # -- running ---------------------------------------------------------------

    def run(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        token = _TOOL_CALL_ID.set((self.name, tool_call_id))
        try:
            return super().run(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        except AGENT_VISIBLE_ERRORS as exc:
            if tool_call_id is None:
                raise
            return refusal_message(exc, tool_call_id=tool_call_id, name=self.name)
        finally:
            _TOOL_CALL_ID.reset(token)

    async def arun(self, tool_input: Any, *args: Any, tool_call_id: str | None = None,
                   **kwargs: Any) -> Any:
        token = _TOOL_CALL_ID.set((self.name, tool_call_id))
        try:
            return await super().arun(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        except AGENT_VISIBLE_ERRORS as exc:
            if tool_call_id is None:
                raise
            return refusal_message(exc, tool_call_id=tool_call_id, name=self.name)
        finally:
            _TOOL_CALL_ID.reset(token)

    def _run(self, *args: Any, config: RunnableConfig,
             run_manager: CallbackManagerForToolRun | None = None, **kwargs: Any) -> Any:
        inner = self._tbay_wrapped
        if isinstance(inner, StructuredTool) and inner.func is None:
            # Refuse before claiming: an async-only tool called synchronously must not record a failure.
            raise NotImplementedError("StructuredTool does not support sync invocation.")
        call = _call_kwargs(inner._run, kwargs, config, run_manager)
        return self._guard_sync(lambda: inner._run(*args, **call), self._key_arguments(args, kwargs))

    async def _arun(self, *args: Any, config: RunnableConfig,
                    run_manager: AsyncCallbackManagerForToolRun | None = None, **kwargs: Any) -> Any:
        inner = self._tbay_wrapped
        # What BaseTool.arun checks on the wrapped tool: its own _arun, or _run run in a thread.
        target = inner._run if type(inner)._arun is BaseTool._arun else inner._arun
        call = _call_kwargs(target, kwargs, config, run_manager)
        return await self._guard_async(lambda: inner._arun(*args, **call),
                                       self._key_arguments(args, kwargs))

    def _guard_sync(self, execute: Callable[[], Any], arguments: dict[str, Any]) -> Any:
        """Run ``execute()`` as the guarded call with ``arguments``; the owner gets its real result."""
        fresh: list[Any] = []

        def run() -> Any:
            value = execute()
            fresh.append(value)
            return to_storable(value)

        try:
            stored = self._tbay_sync(run, **arguments)
        except ToolErrorResult as exc:
            if fresh:
                return exc.message
            raise
        if fresh:
            return fresh[0]
        return from_storable(stored, tool_call_id=current_tool_call_id(self.name), name=self.name)

    async def _guard_async(self, execute: Callable[[], Any], arguments: dict[str, Any]) -> Any:
        fresh: list[Any] = []

        async def run() -> Any:
            value = await execute()
            fresh.append(value)
            return to_storable(value)

        try:
            stored = await self._tbay_async(run, **arguments)
        except ToolErrorResult as exc:
            if fresh:
                return exc.message
            raise
        if fresh:
            return fresh[0]
        return from_storable(stored, tool_call_id=current_tool_call_id(self.name), name=self.name)

    # -- the wrapped function, guarded ----------------------------------------------

    @property
    def func(self) -> Callable[..., Any] | None:
        """The wrapped tool's ``func``, guarded (same signature and annotations), or None.

        LangGraph's ``ToolNode`` reads a tool's ``func`` annotations to find
        ``ToolRuntime``/``InjectedState`` parameters, so the wrapper exposes
        them; calling it goes through tbay like ``invoke`` does.
        """
        return self._direct("func")

    @property
    def coroutine(self) -> Callable[..., Any] | None:
        """The wrapped tool's ``coroutine``, guarded (same signature and annotations), or None."""
        return self._direct("coroutine")

    def _direct(self, attr: str) -> Callable[..., Any] | None:
        cache = self._tbay_direct
        if cache is None:
            cache = self._tbay_direct = {}
        if attr not in cache:
            fn = getattr(self._tbay_wrapped, attr, None)
            cache[attr] = None if fn is None else self._guard_function(fn, is_async=attr == "coroutine")
        return cache[attr]  # type: ignore[no-any-return]

    def _guard_function(self, fn: Callable[..., Any], *, is_async: bool) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        injected = set(injected_names(self._tbay_wrapped))
        config_param = _config_param(fn)
        if config_param is not None:
            injected.add(config_param)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            if signature is None:
                return {"args": list(args), **{k: v for k, v in kwargs.items() if k not in injected}}
            bound = signature.bind(*args, **kwargs)  # a bad call raises here, before any claim
            bound.apply_defaults()
            out: dict[str, Any] = {}
            for name, value in bound.arguments.items():
                kind = signature.parameters[name].kind
                if name in injected:
                    continue
                if kind is inspect.Parameter.VAR_KEYWORD:
                    out.update({k: v for k, v in value.items() if k not in injected})
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    out[name] = list(value)
                else:
                    out[name] = value
            return out

        if is_async:
            @functools.wraps(fn)
            async def guarded_coroutine(*args: Any, **kwargs: Any) -> Any:
                return await self._guard_async(lambda: fn(*args, **kwargs), arguments(args, kwargs))

            return guarded_coroutine

        @functools.wraps(fn)
        def guarded_function(*args: Any, **kwargs: Any) -> Any:
            return self._guard_sync(lambda: fn(*args, **kwargs), arguments(args, kwargs))

        return guarded_function


def guard_tool(tool: BaseTool, policy: str | Policy = "mutating", *, client: TbayClient | None = None,
               tenant: str | None = None) -> TbayTool:
    """Guard one LangChain tool. A :class:`TbayTool` given again is re-guarded from its original."""
    if isinstance(tool, TbayTool):
        tool = tool.wrapped
    return TbayTool(tool, policy, client=client, tenant=tenant)


def guard_tools(tools: Iterable[BaseTool], policy: str | Policy = "mutating", *,
                client: TbayClient | None = None, tenant: str | None = None) -> list[TbayTool]:
    """Guard several LangChain tools with one policy (``guard_toolkit`` maps names to policies)."""
    return [guard_tool(tool, policy, client=client, tenant=tenant) for tool in tools]


class LangChainAdapter:
    """The ``tbay.adapters`` entry point for LangChain (``langchain_core``) tools.

    ``tbay_core.guard_toolkit`` picks it for any ``BaseTool`` and gets back a
    :class:`TbayTool`, so a mixed list of LangChain tools and plain functions
    comes back as LangChain tools and guarded functions, in order.
    """

    def handles(self, tool: Any) -> bool:
        return isinstance(tool, BaseTool)

    def tool_name(self, tool: Any) -> str:
        return str(tool.name)

    def guard(self, tool: Any, policy: str | Policy, *, client: TbayClient | None,
              tenant: str | None) -> TbayTool:
        return guard_tool(tool, policy, client=client, tenant=tenant)
