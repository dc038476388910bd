"""TbayClient: one database, one set of policies, and the operator's controls over them."""

from __future__ import annotations

import os
import statistics
import threading
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

from .engine import Engine, GuardedTool
from .errors import PolicyError, ToolNameClash, UnknownExecution
from .execution import Execution
from .policy import Policy, load_policies, parse_duration
from .store import open_store
from .store.base import ALL_TOOLS, Control

DEFAULT_DB_URL = "sqlite:///~/.tbay/db.sqlite"
"""Where state lives when neither an URL nor ``TBAY_DB_URL`` is given."""

F = TypeVar("F", bound=Callable[..., Any])


class TbayClient:
    """The handle on one tbay database.

    ``db_url`` defaults to ``$TBAY_DB_URL``, else ``sqlite:///~/.tbay/db.sqlite``;
    ``policy_file`` defaults to ``$TBAY_POLICY_FILE``, else the built-in policies.
    ``client.policies`` is a plain dict of :class:`Policy` objects: changes to it
    apply to the next call.
    """

    def __init__(self, db_url: str | None = None, *, policy_file: str | os.PathLike[str] | None = None):
        self.db_url = db_url or os.environ.get("TBAY_DB_URL") or DEFAULT_DB_URL
        policy_file = policy_file or os.environ.get("TBAY_POLICY_FILE") or None
        self.policies: dict[str, Policy] = load_policies(policy_file)
        self.store = open_store(self.db_url)
        self.engine = Engine(self, self.store)
        _reset_in_forked_children(self)
        self._tools: dict[str, Callable[..., Any]] = {}
        self.call_tools: dict[tuple[Any, ...], GuardedTool] = {}
        """Per-call guards of adapters (``guard_call``), one per tool name, policy and kind."""
        self._tools_lock = threading.Lock()

    # ------------------------------------------------------------------ guarding

    def guard(self, fn: F, **options: Any) -> F:
        """Guard ``fn`` with this client; ``options`` are those of :func:`tbay_core.guarded`."""
        from .guard import guarded

        return guarded(self, **options)(fn)

    def policy(self, name_or_policy: str | Policy, *, tool_name: str = "?") -> Policy:
        """Resolve a policy name (or register a :class:`Policy` object) for a tool."""
        if isinstance(name_or_policy, Policy):
            existing = self.policies.get(name_or_policy.name)
            if existing is None:
                name_or_policy.validate()
                self.policies[name_or_policy.name] = name_or_policy
                return name_or_policy
            if existing is not name_or_policy and existing != name_or_policy:
                raise PolicyError(
                    f"tool '{tool_name}': a different policy named '{name_or_policy.name}' is already "
                    "registered on this client; give the new Policy another name"
                )
            return existing
        policy = self.policies.get(name_or_policy)
        if policy is None:
            import difflib

            close = difflib.get_close_matches(name_or_policy, list(self.policies), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PolicyError(
                f"tool '{tool_name}': unknown policy '{name_or_policy}'{hint} Known policies: "
                f"{', '.join(sorted(self.policies))}. Define it in the policy file or pick a known one."
            )
        return policy

    def register_tool(self, tool: GuardedTool) -> None:
        """Remember which function owns a tool name, so results never cross between tools."""
        self.claim_tool_name(tool.tool_name, tool.fn)

    def claim_tool_name(self, tool_name: str, fn: Callable[..., Any]) -> None:
        """Reserve ``tool_name`` for ``fn`` on this client; a different function raises ToolNameClash.

        Adapters that guard per call (:func:`tbay_core.guard.guard_call`) claim
        the name with the framework tool's own function, so two different tools
        sharing a name can never replay each other's results.
        """
        with self._tools_lock:
            existing = self._tools.get(tool_name)
            if existing is None or _same_function(existing, fn):
                self._tools[tool_name] = fn
                return
        raise ToolNameClash(
            f"tool name '{tool_name}' is already used on this client by {_describe(existing)}; "
            f"guarding {_describe(fn)} under the same name would let their results cross. Pass "
            "tool_name=... to tell them apart."
        )

    # ------------------------------------------------------------------ reading the log

    def get(self, execution_id: str) -> Execution:
        """One execution by id; :class:`UnknownExecution` when there is none."""
        execution = self.store.get(execution_id)
        if execution is None:
            raise UnknownExecution(
                f"no execution has id {execution_id!r}; list executions with `tbay log` or "
                "client.executions()"
            )
        return execution

    def executions(self, *, tool: str | None = None, status: str | None = None,
                   tenant: str | None = None, limit: int | None = 100) -> list[Execution]:
        """Executions, newest first, filtered by tool, status and tenant."""
        return self.store.query(tool=tool, status=status, tenant=tenant, limit=limit)

    def pending(self) -> list[Execution]:
        """Executions waiting for a human decision (not yet decided, not past their approval timeout)."""
        now = datetime.now(timezone.utc)
        return [
            execution for execution in self.store.query(status="WAITING_APPROVAL", limit=None)
            if not execution.approved
            and (execution.approval_deadline is None or execution.approval_deadline > now)
        ]

    # ------------------------------------------------------------------ operator controls

    def approve(self, execution_id: str, *, by: str | None = None, reason: str | None = None) -> Execution:
        """Approve a waiting execution; an unknown or ended one raises and changes nothing."""
        execution = self.store.decide_approval(execution_id, approve=True, by=by, reason=reason)
        self.engine.wakeups.fire(execution_id)
        return execution

    def reject(self, execution_id: str, *, by: str | None = None, reason: str | None = None) -> Execution:
        """Reject a waiting execution: it ends REJECTED and its callers get ApprovalRejected."""
        execution = self.store.decide_approval(execution_id, approve=False, by=by, reason=reason)
        self.engine.wakeups.fire(execution_id)
        return execution

    def forget(self, execution_id: str) -> bool:
        """Release the execution's key: the next call with those arguments runs fresh.

        Returns False when the execution no longer held its key (already forgotten,
        expired or superseded).
        """
        self.engine.local_cache.discard_execution(execution_id)
        return self.store.forget(execution_id)

    def pause(self, tool: str | None = None, *, reason: str | None = None, by: str | None = None) -> None:
        """Kill switch: refuse new executions of ``tool`` (every tool when None); replays still work."""
        self.store.set_pause(tool or ALL_TOOLS, paused=True, reason=reason, by=by)

    def resume(self, tool: str | None = None) -> None:
        """Lift a pause set by :meth:`pause` (the global one when ``tool`` is None)."""
        self.store.set_pause(tool or ALL_TOOLS, paused=False, reason=None, by=None)

    def paused(self) -> list[Control]:
        """The pauses in force."""
        return self.store.controls()

    def purge(self, older_than: str | float, *, dry_run: bool = False) -> int:
        """Delete ended executions older than ``older_than`` (``"30d"``, seconds) and expired cache rows.

        The stored outcome a live key still replays (a mutating result, kept
        forever) is never purged; forget it first if it should go.
        """
        return self.store.purge(parse_duration(older_than, where="purge older_than"), dry_run=dry_run)

    def stats(self) -> list[dict[str, Any]]:
        """Per tool: executions, outcomes, replays (if audited), pending approvals, p50/p95 duration, paused."""
        paused = {control.tool for control in self.store.controls()}
        rows = []
        recorded = self.store.stats()
        seen = {row["tool"] for row in recorded}
        for tool in sorted(paused - seen):  # a tool paused before it ever ran still shows
            recorded.append({"tool": tool, "executions": 0, "succeeded": 0, "failed": 0, "running": 0,
                             "pending": 0, "rejected": 0, "replays": 0, "durations": []})
        for row in recorded:
            durations = sorted(row.pop("durations"))
            row["p50_seconds"] = statistics.median(durations) if durations else None
            row["p95_seconds"] = durations[min(len(durations) - 1, int(len(durations) * 0.95))] if durations else None
            row["paused"] = row["tool"] in paused or ALL_TOOLS in paused
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ lifecycle

    def _approval_requested(self, execution_id: str, policy: Policy) -> None:
        """Hook run when an execution starts waiting for a human: fire the webhook, if any."""
        if policy.approval_webhook:
            from .approvals import send_approval_webhook

            send_approval_webhook(self, execution_id, policy)

    def close(self) -> None:
        """Stop the heartbeat and close the database connections."""
        self.engine.heartbeat.stop()
        self.store.close()

    def __enter__(self) -> TbayClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        from .store import mask_url

        return f"TbayClient({mask_url(self.db_url)!r})"


def _reset_in_forked_children(client: TbayClient) -> None:
    """Make a client usable in a child made by ``fork()`` (multiprocessing, gunicorn --preload).

    Locks held by the parent's threads at the fork would deadlock the child and
    the parent's connections must not be shared, so the child resets them.
    """
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(client)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive._tools_lock = threading.Lock()
            alive.engine.after_fork_in_child()

    os.register_at_fork(after_in_child=reset)


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Re-guarding the same function (a module reloaded, a test redefining it) is not a clash.

    Functions are the same tool when module and qualified name match. So closures
    made by one factory are one tool: re-creating a tool per request (capturing
    that request's session or client) keeps replaying across requests, as it
    should. A factory whose closures do *different* things (``make_search("web")``
    vs ``make_search("docs")``) must give them different ``tool_name``s.
    """
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


_default: TbayClient | None = None
_default_lock = threading.Lock()


def default_client() -> TbayClient:
    """The process-wide client used when ``@guarded`` is given none (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = TbayClient()
    return _default
