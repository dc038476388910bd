"""Guard every CrewAI tool call through CrewAI's global before/after tool-call hooks.

``register_tbay_hooks(policy_map, client)`` guards the tools of every crew and
agent in the process without wrapping each tool; ``unregister_tbay_hooks``
removes them (the returned :class:`TbayHooks` is also a context manager).

What CrewAI's hooks can do (crewai 1.15, ``crewai/hooks/tool_hooks.py`` and the
two call sites, ``utilities/tool_utils.py`` for the ReAct text path and
``AgentExecutor._execute_single_native_tool_call`` for native function
calling): a before-hook may mutate the input in place or block the call by
returning ``False``; it cannot supply a result. A blocked call still runs the
after-hooks, with ``tool_result`` set to CrewAI's text "Tool execution blocked
by hook. Tool: ...", and an after-hook that returns a ``str`` replaces the
result the model sees. Both contexts of one call share the same
``tool_input`` dict.

So tbay's pair works like this. For a tool matched by ``policy_map``, the
before-hook validates the arguments against the tool's ``args_schema``, and
runs the call itself through :func:`tbay_core.guard.guard_call`: a cache hit
is replayed without running, a refusal raises, and a call tbay lets through
runs the tool right there (``CrewStructuredTool.invoke``: usage counted, async
tools awaited) as the owner of its execution. Either way it then blocks
CrewAI's own execution (so CrewAI's cache and the tool body are never
reached a second time) and keeps the text for the model: the tool's result
formatted as CrewAI would (``format_output_for_agent``), the refusal as
:func:`tbay_core.refusals.as_tool_result`, or "Error executing tool: ..." when
the tool raised (tbay records that failure). The after-hook, put first in
CrewAI's after-hook queue, returns that text in place of the "blocked" text,
so later after-hooks see the real result.

Consequences worth knowing:

* tbay's before-hook is added at the end of the queue; a before-hook
  registered later does not run for guarded tools (CrewAI stops at the first
  hook that blocks). Register your own before-hooks first.
* The hook never fails open: if tbay cannot decide (a store error, an
  argument with no stable key, an argument that fails validation), the call is
  blocked and the model is told why. A tool no ``policy_map`` entry matches is
  blocked too, unless ``unmatched="allow"``.
* Tools already wrapped by :func:`tbay_crewai.guard_tool` are left to their
  wrapper.
* In the ReAct path a blocked call is never ``result_as_answer``, and CrewAI's
  "I tried reusing the same input" check does not apply (tbay replays instead).
* Hooks are synchronous. CrewAI 1.15 calls them from its worker threads,
  also under ``Crew.akickoff``; if one is ever called on a thread whose event
  loop is running, tbay runs the call on a helper thread and waits, which
  holds that loop meanwhile (a ``block``-mode approval wait included).
* The agent's role and the CrewAI task and crew ids are written to the audit
  log (``agent``, ``links``) unless an enclosing ``tbay_core.scope`` sets them.
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal

from crewai.hooks import (
    register_after_tool_call_hook,
    register_before_tool_call_hook,
    unregister_after_tool_call_hook,
    unregister_before_tool_call_hook,
)
from crewai.hooks.tool_hooks import ToolCallHookContext
from crewai.tools.structured_tool import CrewStructuredTool

from tbay_core import (
    Policy,
    PolicyError,
    TbayClient,
    TbayError,
    default_client,
    guarded,
    scope,
)
from tbay_core.context import current_scope
from tbay_core.guard import guard_call
from tbay_core.policy import builtin_policies
from tbay_core.refusals import AGENT_VISIBLE_ERRORS

from .adapter import TbayCrewTool, TbayRefusal, _inner_target

__all__ = ["TbayHooks", "register_tbay_hooks", "unregister_tbay_hooks"]

_MAX_PENDING = 4096
"""Results waiting for their after-hook; bounded in case CrewAI aborts between the two hooks."""

_installed: list[TbayHooks] = []
_installed_lock = threading.Lock()


class TbayHooks:
    """One installed pair of tbay tool-call hooks (see the module docstring).

    Returned by :func:`register_tbay_hooks`; usable as a context manager that
    unregisters on exit.
    """

    def __init__(self, policy_map: Mapping[str, str | Policy], client: TbayClient | None = None, *,
                 tenant: str | None = None, unmatched: Literal["block", "allow"] = "block"):
        if unmatched not in ("block", "allow"):
            raise ValueError(f"unmatched must be 'block' or 'allow', not {unmatched!r}")
        if not policy_map:
            raise PolicyError("register_tbay_hooks: policy_map is empty; map tool names or patterns "
                              "(e.g. '*') to policies")
        self.policy_map = dict(policy_map)
        self.client = client
        self.tenant = tenant
        self.unmatched = unmatched
        self._check_policies()
        self._pending: OrderedDict[int, tuple[dict[str, Any], str]] = OrderedDict()
        self._registered: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self.installed = False

    # ------------------------------------------------------------------ registration

    def install(self) -> TbayHooks:
        """Add the hooks to CrewAI's global queues (before: last; after: first)."""
        with _installed_lock:
            if self.installed:
                return self
            register_before_tool_call_hook(self.before_tool_call)
            _register_after_first(self.after_tool_call)
            self.installed = True
            _installed.append(self)
        return self

    def uninstall(self) -> bool:
        """Remove the hooks; False when they were not installed."""
        with _installed_lock:
            if not self.installed:
                return False
            unregister_before_tool_call_hook(self.before_tool_call)
            unregister_after_tool_call_hook(self.after_tool_call)
            self.installed = False
            if self in _installed:
                _installed.remove(self)
        with self._lock:
            self._pending.clear()
        return True

    def __enter__(self) -> TbayHooks:
        return self.install()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()

    # ------------------------------------------------------------------ the hooks

    def before_tool_call(self, context: ToolCallHookContext) -> bool | None:
        """Run a guarded tool through tbay and block CrewAI's own execution of it."""
        try:
            text = self._guarded_text(context)
        except Exception as exc:  # never fail open: CrewAI would run the tool unguarded
            name = getattr(context, "tool_name", "?")
            text = (f"[tbay] the call to tool '{name}' was blocked because tbay could not guard it: "
                    f"{type(exc).__name__}: {exc}")
        if text is None:
            return None
        self._keep(context.tool_input, text)
        return False

    def after_tool_call(self, context: ToolCallHookContext) -> str | None:
        """Put the text kept by :meth:`before_tool_call` in place of CrewAI's "blocked" text."""
        tool_input = context.tool_input
        with self._lock:
            entry = self._pending.get(id(tool_input))
            if entry is None or entry[0] is not tool_input:
                return None
            del self._pending[id(tool_input)]
        return entry[1]

    # ------------------------------------------------------------------ internals

    def _guarded_text(self, context: ToolCallHookContext) -> str | None:
        """The text the model gets for this call, or None to let CrewAI run it (unguarded tools)."""
        tool = context.tool
        if _is_tbay_wrapped(tool):
            return None
        names = _names(context)
        policy = self._policy_for(names)
        if policy is None:
            if self.unmatched == "allow":
                return None
            return (f"[tbay] tool '{names[0]}' is not covered by the tbay policy map, so it was not run. "
                    "Do not retry it; tell the user it is not available.")
        if not isinstance(tool, CrewStructuredTool):
            return (f"[tbay] tool '{names[0]}' could not be run under tbay (CrewAI passed no tool "
                    "object to the hook), so it was not run.")
        if tool.has_reached_max_usage_count():
            return (f"Tool '{context.tool_name}' has reached its usage limit of "
                    f"{tool.max_usage_count} times and cannot be used anymore.")
        try:
            arguments = _validated(tool, context.tool_input)
        except Exception as exc:
            return f"Error executing tool: {exc}"
        tool_name = names[0]
        self._register(tool, tool_name, policy)

        def run() -> Any:
            return tool.invoke(dict(arguments))

        def guarded_run() -> str:
            with scope(**_crew_scope(context)):
                try:
                    value = guard_call(self.client, tool_name, policy, arguments, run,
                                       tenant=self.tenant)
                except AGENT_VISIBLE_ERRORS as exc:
                    return str(TbayRefusal(exc))
                except TbayError:
                    raise  # tbay itself failed: blocked with the reason (see before_tool_call)
                except Exception as exc:  # the tool's own failure, recorded by tbay
                    return f"Error executing tool: {exc}"
            return tool.format_output_for_agent(value)

        return _off_event_loop(guarded_run)

    def _policy_for(self, names: list[str]) -> str | Policy | None:
        """As ``guard_toolkit``: an exact name wins over a pattern; among patterns the first listed."""
        for name in names:
            if name in self.policy_map:
                return self.policy_map[name]
        for pattern, policy in self.policy_map.items():
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return policy
        return None

    def _register(self, tool: CrewStructuredTool, tool_name: str, policy: str | Policy) -> None:
        """Claim ``tool_name`` for this tool's code on the client, as ``@guarded`` does.

        Two different tools under one name would share keys, so one could be
        answered with the other's results; the client raises ``ToolNameClash``
        instead (and the hook blocks the call with that message).
        """
        original = getattr(tool, "_original_tool", None)
        target = _inner_target(original) if original is not None else tool.func
        identity = (tool_name, str(getattr(target, "__module__", "")),
                    str(getattr(target, "__qualname__", repr(target))))
        with self._lock:
            if identity in self._registered:
                return
        client = self.client or default_client()
        guarded(client, policy=policy, tool_name=tool_name)(target)  # registers the name; raises on a clash
        with self._lock:
            self._registered.add(identity)

    def _keep(self, tool_input: dict[str, Any], text: str) -> None:
        with self._lock:
            self._pending[id(tool_input)] = (tool_input, text)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)

    def _check_policies(self) -> None:
        """Unknown policy names fail at registration, not at the first tool call."""
        for pattern, policy in self.policy_map.items():
            if self.client is not None:
                self.client.policy(policy, tool_name=pattern)
            elif isinstance(policy, Policy):
                policy.validate()
            elif policy not in builtin_policies():
                default_client().policy(policy, tool_name=pattern)

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"TbayHooks({self.policy_map!r}, {state})"


def register_tbay_hooks(policy_map: Mapping[str, str | Policy], client: TbayClient | None = None, *,
                        tenant: str | None = None,
                        unmatched: Literal["block", "allow"] = "block") -> TbayHooks:
    """Guard every CrewAI tool call in this process through global tool-call hooks.

    ``policy_map`` maps tool names (``tool.name`` or CrewAI's sanitised name)
    or glob patterns to policy names or :class:`~tbay_core.Policy` objects, as
    for ``guard_toolkit``; an unknown policy fails here. ``client`` defaults to
    tbay's process-wide client. A tool nothing matches is blocked with a
    message to the model (``unmatched="allow"`` lets CrewAI run it unguarded).
    Returns the installed :class:`TbayHooks` (a context manager).
    """
    return TbayHooks(policy_map, client, tenant=tenant, unmatched=unmatched).install()


def unregister_tbay_hooks(hooks: TbayHooks | None = None) -> int:
    """Remove ``hooks`` (or, with no argument, every pair tbay installed); returns how many."""
    if hooks is not None:
        return int(hooks.uninstall())
    with _installed_lock:
        every = list(_installed)
    return sum(int(each.uninstall()) for each in every)


def _register_after_first(hook: Callable[[ToolCallHookContext], str | None]) -> None:
    """Put the after-hook at the front, so other after-hooks see the real result, not "blocked"."""
    try:
        from crewai.hooks.dispatch import InterceptionPoint, get_global_hook_list

        get_global_hook_list(InterceptionPoint.POST_TOOL_CALL).insert(0, hook)
    except (ImportError, AttributeError):  # an older layout: the public call appends
        register_after_tool_call_hook(hook)


def _is_tbay_wrapped(tool: Any) -> bool:
    return isinstance(getattr(tool, "_original_tool", None), TbayCrewTool)


def _names(context: ToolCallHookContext) -> list[str]:
    """The names to match in the policy map: the tool's own name first, then CrewAI's sanitised one."""
    names = []
    own = getattr(context.tool, "name", None)
    if own:
        names.append(str(own))
    if context.tool_name and context.tool_name not in names:
        names.append(str(context.tool_name))
    return names


def _validated(tool: CrewStructuredTool, tool_input: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the tool will get them (schema applied, defaults filled in): tbay keys on these."""
    schema = tool.args_schema
    if schema is None or not schema.model_fields:
        return dict(tool_input)
    try:
        return dict(schema.model_validate(dict(tool_input)).model_dump())
    except Exception as exc:
        raise ValueError(f"Arguments validation failed: {exc}") from exc


def _crew_scope(context: ToolCallHookContext) -> dict[str, Any]:
    """Agent role and CrewAI task/crew ids for the audit log, unless an outer scope set them."""
    outer = current_scope()
    role = getattr(context.agent, "role", None)
    links = {
        key: str(value)
        for key, value in (("crewai_task_id", getattr(context.task, "id", None)),
                           ("crewai_crew_id", getattr(context.crew, "id", None)))
        if value is not None and key not in outer.links
    }
    return {
        "agent": str(role) if role and outer.agent is None else None,
        "links": links or None,
    }


def _off_event_loop(fn: Callable[[], str]) -> str:
    """Run ``fn`` here, or in a helper thread when this thread runs an event loop.

    Hooks are called synchronously, also from CrewAI's async paths; tbay's sync
    call and ``CrewStructuredTool.invoke`` (``asyncio.run`` for async tools)
    must not run on a thread whose loop is running.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tbay-crewai-hook") as pool:
        return pool.submit(context.run, fn).result()
