"""The life of a guarded call, shared by the sync and the async path.

The decisions of a call (claim, follow, wait for approval, back off from a
full concurrency cap) are written once as a generator, :meth:`Engine._plan`,
that yields what it wants to wait for. A sync driver and an async driver run
that generator: the sync one blocks its thread, the async one awaits without
blocking the event loop. Only running the user's function and recording its
outcome differ between the two, so the paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before 3.11
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .codec import NotReplayable, Unstorable, decode_result, describe_error, encode_result
from .context import current_scope
from .decide import (
    ENDED_STATUSES,
    FAILED,
    RUNNING,
    SUCCEEDED,
    WAITING_APPROVAL,
    Action,
    Refusal,
    approval_reason,
    as_number,
    decide,
    lookup_path,
)
from .errors import (
    ApprovalPending,
    ApprovalRejected,
    ApprovalTimeout,
    BudgetExceeded,
    ConcurrencyLimitExceeded,
    ExecutionFailed,
    ExecutionTimeout,
    IdempotencyConflict,
    PolicyError,
    RateLimitExceeded,
    ReentrantCall,
    ResultNotReplayable,
    TbayError,
    ToolPaused,
)
from .heartbeat import Heartbeat
from .keys import CallIdentity, KeyDeriver
from .localcache import LocalCache
from .policy import Policy
from .redact import Redactor
from .store.base import ClaimOutcome, ClaimRequest, HeadRecord, Store
from .wakeup import AsyncWaiter, Wakeups

if TYPE_CHECKING:
    from .client import TbayClient

log = logging.getLogger("tbay")

EARLY_WAIT = 2.0
"""Seconds during which a waiter polls at the store's early (faster) cap."""

MAX_BACKOFF = 0.02
"""Cap of the back-off of a caller waiting for a concurrency slot (seconds)."""

_RUNNING_HERE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "tbay_running_here", default=frozenset()
)
"""Executions whose body is running in the current context (to refuse re-entrant waits)."""

_REPLAY_ACTIONS = frozenset(
    {Action.REPLAY, Action.REPLAY_FAILURE, Action.REPLAY_REJECTION, Action.NOT_REPLAYABLE}
)


@dataclass(frozen=True, slots=True)
class _Wait:
    """Block until ``future`` fires or ``timeout`` seconds pass (``future`` may be None: a sleep)."""

    future: Future[str | None] | None
    timeout: float


@dataclass(frozen=True, slots=True)
class _Own:
    """The plan's end when this caller must run the function as ``execution_id``."""

    execution_id: str


class _Result:
    """The plan's end when the call is answered without running: a replayed value."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


_Plan = Generator[_Wait, None, "_Own | _Result"]


class GuardedTool:
    """Everything fixed at decoration time about one guarded function."""

    def __init__(self, fn: Callable[..., Any], *, tool_name: str, policy_name: str,
                 key_fn: Callable[..., Any] | None, tenant: str | None,
                 exclude_args: tuple[str, ...] = ()):
        self.fn = fn
        self.tool_name = tool_name
        self.policy_name = policy_name
        self.key_fn = key_fn
        self.tenant = tenant
        self.deriver = KeyDeriver(fn, tool_name=tool_name, key_fn=key_fn, exclude_args=exclude_args)
        self.return_annotation = _return_annotation(fn)
        self.is_async = asyncio.iscoroutinefunction(fn)


def _return_annotation(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation, used to rebuild dataclasses and models on replay."""
    try:
        import typing

        return typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable forward references: fall back to the raw annotation
        return getattr(fn, "__annotations__", {}).get("return")


@dataclass(slots=True)
class _Call:
    """One call in flight: the tool, its arguments and what was derived from them."""

    tool: GuardedTool
    policy: Policy
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    identity: CallIdentity
    tenant: str | None
    agent: str | None
    links: dict[str, Any]


class Engine:
    """Runs guarded calls against one store with one client's policies."""

    def __init__(self, client: TbayClient, store: Store):
        self.client = client
        self.store = store
        self.wakeups = Wakeups()
        self.local_cache = LocalCache()
        self.heartbeat = Heartbeat(store)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        store.watch(self.wakeups.fire)
        self._redactors: dict[tuple[tuple[str, ...], tuple[str, ...]], Redactor] = {}
        self._redactors_lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """Reset what a forked child must not share: locks a parent thread may hold, leases, waiters."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._redactors_lock = threading.Lock()
        self.wakeups.after_fork_in_child()
        self.heartbeat.after_fork_in_child()
        self.local_cache.after_fork_in_child()
        self.store.after_fork_in_child()

    # ------------------------------------------------------------------ entry points

    def call_sync(self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one guarded call on the caller's thread."""
        call = self._prepare(tool, args, kwargs)
        if call.identity.key is not None:
            replay = self._fast_replay(call)
            if replay is not None:
                return replay.value
        plan = self._plan(call)
        try:
            step = next(plan)
            while True:
                if step.future is not None:
                    with contextlib.suppress(FutureTimeout):
                        step.future.result(step.timeout)
                else:
                    time.sleep(step.timeout)
                step = plan.send(None)
        except StopIteration as stop:
            end = stop.value
        if isinstance(end, _Result):
            return end.value
        return self._run_sync(call, end.execution_id)

    async def call_async(self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one guarded call as a coroutine; every wait yields to the event loop."""
        call = self._prepare(tool, args, kwargs)
        if call.identity.key is not None:
            replay = self._fast_replay(call)
            if replay is not None:
                return replay.value
        plan = self._plan(call)
        waiter = AsyncWaiter()
        try:
            step = next(plan)
            while True:
                if step.future is not None:
                    await waiter.wait(step.future, step.timeout)
                else:
                    await asyncio.sleep(step.timeout)
                step = plan.send(None)
        except StopIteration as stop:
            end = stop.value
        if isinstance(end, _Result):
            return end.value
        return await self._run_async(call, end.execution_id)

    # ------------------------------------------------------------------ preparation

    def _prepare(self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        policy = self.client.policies.get(tool.policy_name)
        if policy is None:
            raise PolicyError(
                f"tool '{tool.tool_name}': policy '{tool.policy_name}' was removed from client.policies; "
                f"known policies: {', '.join(sorted(self.client.policies))}"
            )
        scope = current_scope()
        tenant = tool.tenant if tool.tenant is not None else scope.tenant
        identity = tool.deriver.derive(args, kwargs, tenant=tenant, keyed=policy.idempotent)
        return _Call(tool, policy, args, kwargs, identity, tenant, scope.agent, scope.links)

    def _fast_replay(self, call: _Call) -> _Result | None:
        """The lock-free cache-hit path: one indexed read, no write (unless audit_replays).

        With ``local_cache`` a hit in this process's LRU skips even the read.
        """
        key, fingerprint, policy = call.identity.key, call.identity.fingerprint, call.policy
        assert key is not None
        if policy.local_cache:
            cached = self.local_cache.get(key, fingerprint)
            if cached is not None:
                execution_id, result = cached
                if policy.audit_replays:
                    self.store.record_replay(execution_id, call.tool.tool_name, call.tenant, call.agent)
                return _Result(decode_result(result, call.tool.return_annotation))
        record, now = self.store.read_head(key)
        if record is None:
            return None
        decision = decide(record.head, policy, now, fingerprint)
        if decision.action not in _REPLAY_ACTIONS:
            return None
        if (policy.local_cache and decision.action is Action.REPLAY and record.result is not None
                and policy.cache_ttl is not None and record.head.finished_at is not None):
            ttl_left = record.head.finished_at + policy.cache_ttl - now
            self.local_cache.put(key, record.head.execution_id, fingerprint, record.result, ttl_left)
        return self._replay(call, decision.action, record, retry_after=decision.retry_after)

    def _request(self, call: _Call, waiting_for: str | None) -> ClaimRequest:
        policy, identity, tool = call.policy, call.identity, call.tool
        budget_amount = None
        if policy.budget is not None:
            budget_amount = as_number(lookup_path(identity.arguments, policy.budget.arg))
            if budget_amount is None or budget_amount < 0:
                raise BudgetExceeded(
                    f"tool '{tool.tool_name}': policy '{policy.name}' budgets argument "
                    f"'{policy.budget.arg}', but this call has no non-negative number for it; pass "
                    "one so the spend can be counted"
                )
        return ClaimRequest(
            key=identity.key,
            tool_name=tool.tool_name,
            tenant=call.tenant,
            agent=call.agent,
            policy=policy,
            fingerprint=identity.fingerprint,
            canonical_args=(
                tool.deriver.argument_digests_json(identity.arguments) if tool.key_fn else None
            ),
            args_json=json.dumps(self._redactor(policy).redact(identity.arguments), sort_keys=True),
            owner=self.owner,
            approval_reason=approval_reason(policy, identity.arguments),
            budget_amount=budget_amount,
            waiting_for=waiting_for,
            links_json=json.dumps(call.links, sort_keys=True, default=str) if call.links else None,
        )

    def _redactor(self, policy: Policy) -> Redactor:
        signature = (tuple(policy.redact_args), tuple(policy.redact_patterns))
        redactor = self._redactors.get(signature)
        if redactor is None:
            with self._redactors_lock:
                redactor = self._redactors.setdefault(signature, Redactor(*signature))
        return redactor

    # ------------------------------------------------------------------ the plan

    def _plan(self, call: _Call) -> _Plan:
        """Claim, then follow / wait / back off until this call is answered or owns an execution."""
        tool, policy = call.tool, call.policy
        waiting_for: str | None = None
        concurrency_deadline: float | None = None
        follow_deadline: float | None = None
        backoff = 0.001
        request = self._request(call, None)
        while True:
            if waiting_for != request.waiting_for:
                request = replace(request, waiting_for=waiting_for)
            outcome = self.store.claim(request)
            action = outcome.action
            if action is Action.START:
                if outcome.refusal is Refusal.CONCURRENCY:
                    now = time.monotonic()
                    if concurrency_deadline is None:
                        concurrency_deadline = now + policy.concurrency_wait_timeout
                    if now >= concurrency_deadline:
                        raise ConcurrencyLimitExceeded(
                            f"tool '{tool.tool_name}': {policy.max_concurrent} executions already "
                            f"running (max_concurrent of policy '{policy.name}') and no slot freed "
                            f"within {policy.concurrency_wait_timeout:g}s; try again later or raise "
                            "concurrency_wait_timeout"
                        )
                    yield _Wait(None, min(backoff, concurrency_deadline - now))
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                if outcome.refusal is not None:
                    raise self._refusal_error(call, outcome)
                assert outcome.execution_id is not None
                if outcome.status == RUNNING:
                    return _Own(outcome.execution_id)
                self.client._approval_requested(outcome.execution_id, call.policy)
                if policy.approval_mode == "defer":
                    raise self._pending_error(call, outcome.execution_id, outcome.approval_reason)
                waiting_for = outcome.execution_id
                yield from self._follow(outcome.execution_id)
                continue
            if action is Action.RUN_APPROVED:
                assert outcome.execution_id is not None
                return _Own(outcome.execution_id)
            if action is Action.FOLLOW:
                assert outcome.execution_id is not None
                if outcome.execution_id in _RUNNING_HERE.get():
                    raise ReentrantCall(
                        f"tool '{tool.tool_name}' was called with the same arguments from inside its "
                        f"own execution {outcome.execution_id}; waiting for it would never end. Guard "
                        "the outer function or the inner one, not both, or call the inner one with "
                        "different arguments."
                    )
                deadline = None
                if outcome.record is not None and outcome.record.head.status == WAITING_APPROVAL:
                    waiting_for = outcome.execution_id
                elif policy.execution_timeout is not None:  # a follower waits no longer than an owner
                    if follow_deadline is None:
                        follow_deadline = time.monotonic() + policy.execution_timeout
                    if time.monotonic() >= follow_deadline:
                        raise self._timeout_error(call, outcome.execution_id, policy.execution_timeout)
                    deadline = follow_deadline
                handed_over = yield from self._follow(outcome.execution_id, deadline)
                if handed_over is not None:  # the owner ran here and gave us its stored result
                    if policy.audit_replays:
                        self.store.record_replay(outcome.execution_id, tool.tool_name, call.tenant, call.agent)
                    return _Result(decode_result(handed_over, tool.return_annotation))
                if call.identity.key is not None:  # the usual end: replay without a write transaction
                    replay = self._fast_replay(call)
                    if replay is not None:
                        return replay
                continue
            if action is Action.PENDING:
                assert outcome.execution_id is not None
                raise self._pending_error(call, outcome.execution_id, None)
            if action is Action.APPROVAL_TIMED_OUT:
                raise ApprovalTimeout(
                    f"tool '{tool.tool_name}': nobody approved or rejected execution "
                    f"{outcome.execution_id} within {policy.approval_timeout:g}s (policy "
                    f"'{policy.name}'); it is now EXPIRED and the call did not run. Call again to "
                    "ask for approval again.",
                    execution_id=outcome.execution_id or "",
                )
            if action is Action.CONFLICT:
                raise self._conflict_error(call, outcome)
            assert outcome.record is not None
            return self._replay(call, action, outcome.record, retry_after=outcome.retry_after)

    def _follow(self, execution_id: str, deadline: float | None = None) -> Generator[_Wait, None, str | None]:
        """Wait until an execution of another caller ends, loses its lease or gets a decision.

        ``deadline`` (``time.monotonic()``) ends the wait early, for callers bound
        by ``execution_timeout``. Returns the stored result JSON when an owner in
        this process handed it over on success, else None (re-decide from the store).
        """
        try:
            return (yield from self._wait_for_change(execution_id, deadline))
        finally:
            if not self.heartbeat.renews(execution_id):
                # nobody here will fire a foreign execution's future: drop it (co-waiters re-check)
                self.wakeups.fire(execution_id)

    def _wait_for_change(self, execution_id: str, deadline: float | None) -> Generator[_Wait, None, str | None]:
        backoff = 0.001
        early_until = time.monotonic() + EARLY_WAIT
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            future = self.wakeups.subscribe(execution_id)
            state = self.store.poll(execution_id)
            if state is None or state.status in ENDED_STATUSES:
                return None
            timeout = backoff
            if state.status == RUNNING:
                if state.lease_expires_at is None or state.now >= state.lease_expires_at:
                    return None
                if self.heartbeat.renews(execution_id):  # its owner is here and will wake us: no polling
                    timeout = 1.0
                timeout = min(timeout, state.lease_expires_at - state.now + 0.001)
            elif state.status == WAITING_APPROVAL:
                if state.approved:
                    return None
                if state.approval_deadline is not None:
                    if state.now >= state.approval_deadline:
                        return None
                    timeout = min(timeout, state.approval_deadline - state.now + 0.001)
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            yield _Wait(future, timeout)
            if future.done() and future.result() is not None:  # an owner here handed over its result
                return future.result()
            cap = self.store.early_poll_interval_cap if time.monotonic() < early_until else self.store.poll_interval_cap
            backoff = min(backoff * 2, cap)

    # ------------------------------------------------------------------ answers without running

    def _replay(self, call: _Call, action: Action, record: HeadRecord,
                retry_after: float | None = None) -> _Result:
        tool, policy = call.tool, call.policy
        execution_id = record.head.execution_id
        if policy.audit_replays:
            self.store.record_replay(execution_id, tool.tool_name, call.tenant, call.agent)
        if action is Action.REPLAY:
            try:
                return _Result(decode_result(record.result or "null", tool.return_annotation))
            except NotReplayable as exc:
                raise ResultNotReplayable(
                    f"tool '{tool.tool_name}': the stored result of execution {execution_id} cannot "
                    f"be rebuilt here ({exc}). Import the module that defines it, or run "
                    f"`tbay forget {execution_id}` to run the call fresh.",
                    tool_name=tool.tool_name, execution_id=execution_id,
                ) from None
        if action is Action.NOT_REPLAYABLE:
            raise ResultNotReplayable(
                f"tool '{tool.tool_name}': execution {execution_id} succeeded, but its result could "
                "not be stored, so it cannot be replayed and the call was not run again. Return "
                "JSON-friendly values (dicts, lists, dataclasses, pydantic models), use the "
                f"'volatile' policy, or run `tbay forget {execution_id}` to allow a fresh run.",
                tool_name=tool.tool_name, execution_id=execution_id,
            )
        if action is Action.REPLAY_REJECTION:
            by = record.decided_by or "an operator"
            reason = record.decision_reason or "no reason given"
            raise ApprovalRejected(
                f"tool '{tool.tool_name}': {by} rejected execution {execution_id}: {reason}. The "
                "call did not run and will not run with these arguments; ask a human or change "
                "the request.",
                reason=record.decision_reason, by=record.decided_by, execution_id=execution_id,
            )
        if retry_after is not None:
            advice = f"a retry is allowed in {retry_after:.3g}s (retry_backoff of policy '{policy.name}')"
        else:
            advice = (
                f"policy '{policy.name}' allows no more retries (max_retries {policy.max_retries}); "
                f"run `tbay forget {execution_id}` to allow a fresh run"
            )
        raise ExecutionFailed(
            f"tool '{tool.tool_name}': execution {execution_id} failed earlier with "
            f"{record.error_type}: {record.error_message}. This call replays that failure instead of "
            f"running again; {advice}.",
            tool_name=tool.tool_name, error_type=record.error_type or "",
            error_message=record.error_message or "", execution_id=execution_id,
        )

    def _refusal_error(self, call: _Call, outcome: ClaimOutcome) -> TbayError:
        tool, policy = call.tool, call.policy
        if outcome.refusal is Refusal.PAUSED:
            return ToolPaused(
                f"tool '{tool.tool_name}' is paused by {outcome.paused_by or 'an operator'}: "
                f"{outcome.paused_reason or 'no reason given'}. Stored results are still replayed; new "
                f"calls run again after `tbay resume --tool {tool.tool_name}` (or `tbay resume` when "
                "every tool was paused).",
                reason=outcome.paused_reason, by=outcome.paused_by,
            )
        if outcome.refusal is Refusal.RATE_LIMITED:
            assert policy.rate_limit is not None
            retry_after = outcome.retry_after or 0.0
            return RateLimitExceeded(
                f"tool '{tool.tool_name}': rate limit of policy '{policy.name}' reached "
                f"({policy.rate_limit.count} executions per {policy.rate_limit.per:g}s); "
                f"retry in {retry_after:.3g}s",
                retry_after=retry_after,
            )
        assert policy.budget is not None
        return BudgetExceeded(
            f"tool '{tool.tool_name}': this call's {policy.budget.arg} would exceed the budget of "
            f"policy '{policy.name}' ({policy.budget.max:g} per {policy.budget.per:g}s); wait for "
            "the window to pass, or lower the amount"
        )

    def _pending_error(self, call: _Call, execution_id: str, reason: str | None) -> ApprovalPending:
        why = f" ({reason})" if reason else ""
        return ApprovalPending(
            f"tool '{call.tool.tool_name}': execution {execution_id} waits for a human{why}. "
            f"Approve it with `tbay approve {execution_id}` (or reject it), then make the same "
            "call again to run it.",
            execution_id=execution_id,
        )

    def _conflict_error(self, call: _Call, outcome: ClaimOutcome) -> IdempotencyConflict:
        tool = call.tool
        assert outcome.execution_id is not None
        stored = self.store.canonical_args(outcome.execution_id)
        fields = (
            tool.deriver.differing_fields(stored, call.identity.arguments) if stored is not None else ()
        )
        named = f" (arguments that differ: {', '.join(fields)})" if fields else ""
        return IdempotencyConflict(
            f"tool '{tool.tool_name}': idempotency key already used by execution "
            f"{outcome.execution_id} with different arguments{named}. The key comes from key_fn, so "
            "two different requests mapped to one key; make key_fn include what distinguishes them, "
            f"or run `tbay forget {outcome.execution_id}` once that execution is settled.",
            tool_name=tool.tool_name, differing_fields=tuple(fields),
        )

    # ------------------------------------------------------------------ running as owner

    def _run_sync(self, call: _Call, execution_id: str) -> Any:
        self.heartbeat.add(execution_id, call.policy.lease_timeout)
        timeout = call.policy.execution_timeout
        if timeout is None:
            return self._execute_and_record(call, execution_id)
        done: Future[Any] = Future()

        def worker() -> None:
            try:
                done.set_result(self._execute_and_record(call, execution_id))
            except BaseException as exc:  # the worker reports everything to the waiting caller
                done.set_exception(exc)

        context = contextvars.copy_context()  # the body sees the caller's scope and context
        threading.Thread(target=context.run, args=(worker,), name=f"tbay-{call.tool.tool_name}",
                         daemon=True).start()
        try:
            return done.result(timeout)
        except FutureTimeout:
            raise self._timeout_error(call, execution_id, timeout) from None

    def _execute_and_record(self, call: _Call, execution_id: str) -> Any:
        token = _RUNNING_HERE.set(_RUNNING_HERE.get() | {execution_id})
        try:
            value = call.tool.fn(*call.args, **call.kwargs)
        except BaseException as exc:
            self._record_failure(call, execution_id, exc)
            raise
        finally:
            _RUNNING_HERE.reset(token)
        self._record_success(call, execution_id, value)
        return value

    async def _run_async(self, call: _Call, execution_id: str) -> Any:
        self.heartbeat.add(execution_id, call.policy.lease_timeout)
        timeout = call.policy.execution_timeout
        if timeout is None:
            return await self._execute_and_record_async(call, execution_id)
        task = asyncio.ensure_future(self._execute_and_record_async(call, execution_id))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error(call, execution_id, timeout) from None

    async def _execute_and_record_async(self, call: _Call, execution_id: str) -> Any:
        token = _RUNNING_HERE.set(_RUNNING_HERE.get() | {execution_id})
        try:
            value = await call.tool.fn(*call.args, **call.kwargs)
        except BaseException as exc:  # CancelledError included: nothing stays RUNNING
            self._record_failure(call, execution_id, exc)
            raise
        finally:
            _RUNNING_HERE.reset(token)
        self._record_success(call, execution_id, value)
        return value

    def _timeout_error(self, call: _Call, execution_id: str, timeout: float) -> ExecutionTimeout:
        return ExecutionTimeout(
            f"tool '{call.tool.tool_name}': execution {execution_id} ran longer than "
            f"{timeout:g}s (execution_timeout of policy '{call.policy.name}'). It keeps running in "
            f"the background and records what really happened; see `tbay show {execution_id}`.",
            execution_id=execution_id,
        )

    def _settle(self, execution_id: str, result: str | None = None) -> None:
        """Release the lease and wake this process's followers, handing them the stored result
        (so they replay it without a database read of their own)."""
        self.heartbeat.remove(execution_id)
        self.wakeups.fire(execution_id, result)

    def _record_success(self, call: _Call, execution_id: str, value: Any) -> None:
        try:
            encoded: str | None = encode_result(value)
            replayable = True
            note = None
        except Unstorable as exc:
            encoded, replayable, note = None, False, str(exc)
            log.warning("tbay: tool '%s' execution %s succeeded but its result cannot be stored: %s",
                        call.tool.tool_name, execution_id, exc)
        self._finish(call, execution_id, status=SUCCEEDED, result=encoded, replayable=replayable,
                     error_type="Unstorable" if note else None, error_message=note,
                     error_traceback=None)

    def _record_failure(self, call: _Call, execution_id: str, exc: BaseException) -> None:
        error_type, message, trace = describe_error(exc)
        self._finish(call, execution_id, status=FAILED, result=None, replayable=True,
                     error_type=error_type, error_message=message, error_traceback=trace)

    def _finish(self, call: _Call, execution_id: str, **outcome: Any) -> None:
        """Record an outcome, then release the lease and wake followers; never raises.

        The owner always gets its own function's real value or exception at once.
        When the database cannot take the outcome right now (restarting, locked),
        a background thread keeps trying, with the lease still renewed, for one
        lease period; only then does the lease lapse and ``after_crash`` decide.
        """
        try:
            recorded = self.store.finish(execution_id, cache_ttl=call.policy.cache_ttl, **outcome)
        except TbayError as exc:
            log.warning("tbay: tool '%s' execution %s finished but its outcome could not be recorded "
                        "yet (%s); retrying in the background", call.tool.tool_name, execution_id, exc)
            threading.Thread(target=self._finish_later, args=(call, execution_id, outcome),
                             name="tbay-record", daemon=True).start()
            return
        self._report_fenced(call, execution_id, recorded)
        replayable_result = (
            outcome["result"] if recorded and outcome["status"] == SUCCEEDED and outcome["replayable"] else None
        )
        self._settle(execution_id, replayable_result)

    def _finish_later(self, call: _Call, execution_id: str, outcome: dict[str, Any]) -> None:
        deadline = time.monotonic() + max(call.policy.lease_timeout, 5.0)
        delay = 0.05
        try:
            while True:
                time.sleep(delay)
                try:
                    recorded = self.store.finish(execution_id, cache_ttl=call.policy.cache_ttl, **outcome)
                except TbayError as exc:
                    if time.monotonic() >= deadline:
                        log.error("tbay: tool '%s' execution %s: outcome not recorded (%s); its lease "
                                  "lapses and after_crash decides", call.tool.tool_name, execution_id, exc)
                        return
                    delay = min(delay * 2, 1.0)
                    continue
                self._report_fenced(call, execution_id, recorded)
                return
        finally:
            self._settle(execution_id)

    def _report_fenced(self, call: _Call, execution_id: str, recorded: bool) -> None:
        if not recorded:
            log.warning(
                "tbay: tool '%s' execution %s finished after its lease was taken over; its outcome "
                "was not recorded (the newer attempt's outcome stands)", call.tool.tool_name, execution_id,
            )

