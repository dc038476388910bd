"""The pure decision layer: what should this call do, given the stored row, the policy and the time.

Nothing here does I/O. The stores call :func:`decide` inside their atomic claim
step (and the engine calls it on the lock-free fast path of a cache hit), so
the whole state machine is tested without a database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .policy import Policy

WAITING_APPROVAL = "WAITING_APPROVAL"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
LOST = "LOST"

STATUSES = (WAITING_APPROVAL, RUNNING, SUCCEEDED, FAILED, REJECTED, EXPIRED, LOST)
ENDED_STATUSES = frozenset({SUCCEEDED, FAILED, REJECTED, EXPIRED, LOST})
ACTIVE_STATUSES = frozenset({WAITING_APPROVAL, RUNNING})


@dataclass(frozen=True, slots=True)
class Head:
    """The execution that currently holds an idempotency key, as the decision needs it."""

    execution_id: str
    status: str
    attempt: int
    retry_number: int
    fingerprint: str
    finished_at: float | None
    lease_expires_at: float | None
    replayable: bool
    approved: bool
    approval_deadline: float | None


class Action(Enum):
    """What the caller does next."""

    START = "start"  # create a new execution (possibly superseding the head) and own it
    REPLAY = "replay"  # return the stored result
    REPLAY_FAILURE = "replay_failure"  # raise ExecutionFailed for the stored failure
    REPLAY_REJECTION = "replay_rejection"  # raise ApprovalRejected for the stored rejection
    NOT_REPLAYABLE = "not_replayable"  # succeeded, but the result could not be stored
    FOLLOW = "follow"  # wait until the head changes, then decide again
    RUN_APPROVED = "run_approved"  # the head was approved: take it over and run it
    PENDING = "pending"  # defer mode: the head still waits for a human
    MARK_LOST = "mark_lost"  # the owner died and after_crash is "fail": end the head LOST
    APPROVAL_TIMED_OUT = "approval_timed_out"  # the approval this caller waited on expired
    CONFLICT = "conflict"  # same key, different arguments


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`decide`.

    ``supersede`` names the status the current head ends with when a new
    execution replaces it (``LOST`` after a crash, ``EXPIRED`` after an
    approval timeout); ``force_approval`` is the reason a human must look at
    the new execution even if the policy would not ask (a crash under
    ``after_crash: approve``).
    """

    action: Action
    attempt: int = 1
    retry_number: int = 0
    supersede: str | None = None
    force_approval: str | None = None
    retry_after: float | None = None


def _is_expired(policy: Policy, finished_at: float | None, now: float) -> bool:
    """A finished outcome stops being replayed once the policy's TTL has passed (None = forever)."""
    ttl = policy.cache_ttl
    return ttl is not None and finished_at is not None and now >= finished_at + ttl


def decide(
    head: Head | None,
    policy: Policy,
    now: float,
    fingerprint: str,
    *,
    waiting_for: str | None = None,
) -> Decision:
    """Decide what a call with ``fingerprint`` does when ``head`` holds its key.

    ``waiting_for`` is the execution this caller was already waiting on, so that
    an approval timeout is reported to the caller that asked for approval while
    a newcomer simply asks again.
    """
    if head is None:
        return Decision(Action.START)
    next_attempt = head.attempt + 1
    status = head.status
    if status == EXPIRED:
        if waiting_for == head.execution_id:
            return Decision(Action.APPROVAL_TIMED_OUT)
        return Decision(Action.START, attempt=next_attempt)
    if status in (SUCCEEDED, FAILED, LOST) and _is_expired(policy, head.finished_at, now):
        return Decision(Action.START, attempt=next_attempt)
    if _approval_timed_out(head, now):
        if waiting_for == head.execution_id:
            return Decision(Action.APPROVAL_TIMED_OUT, supersede=EXPIRED)
        return Decision(Action.START, attempt=next_attempt, supersede=EXPIRED)
    if head.fingerprint != fingerprint:
        return Decision(Action.CONFLICT)
    if status == SUCCEEDED:
        return Decision(Action.REPLAY if head.replayable else Action.NOT_REPLAYABLE)
    if status in (FAILED, LOST):
        return _after_failure(head, policy, now)
    if status == REJECTED:
        return Decision(Action.REPLAY_REJECTION)
    if status == RUNNING:
        return _while_running(head, policy, now)
    if status == WAITING_APPROVAL:
        return _while_waiting_approval(head, policy)
    raise ValueError(f"unknown execution status {status!r}")


def _approval_timed_out(head: Head, now: float) -> bool:
    """A request nobody decided before its deadline frees the key, whatever the new arguments."""
    return (
        head.status == WAITING_APPROVAL
        and not head.approved
        and head.approval_deadline is not None
        and now >= head.approval_deadline
    )


def _after_failure(head: Head, policy: Policy, now: float) -> Decision:
    if head.retry_number >= policy.max_retries:
        return Decision(Action.REPLAY_FAILURE)
    finished = head.finished_at if head.finished_at is not None else now
    retry_at = finished + policy.retry_backoff
    if now < retry_at:
        return Decision(Action.REPLAY_FAILURE, retry_after=retry_at - now)
    return Decision(Action.START, attempt=head.attempt + 1, retry_number=head.retry_number + 1)


def _while_running(head: Head, policy: Policy, now: float) -> Decision:
    lease_alive = head.lease_expires_at is not None and now < head.lease_expires_at
    if lease_alive:
        if not policy.singleflight:
            return Decision(Action.START, attempt=head.attempt + 1)
        return Decision(Action.FOLLOW)
    if policy.after_crash == "rerun":
        return Decision(Action.START, attempt=head.attempt + 1, supersede=LOST)
    if policy.after_crash == "approve":
        return Decision(
            Action.START,
            attempt=head.attempt + 1,
            supersede=LOST,
            force_approval=(
                f"the owner of execution {head.execution_id} stopped heartbeating mid-call "
                "(process crashed or lost its database); it may or may not have completed, "
                "so a human decides whether to run it again"
            ),
        )
    return Decision(Action.MARK_LOST)


def _while_waiting_approval(head: Head, policy: Policy) -> Decision:
    if head.approved:
        return Decision(Action.RUN_APPROVED)
    if policy.approval_mode == "defer":
        return Decision(Action.PENDING)
    return Decision(Action.FOLLOW)


# --------------------------------------------------------------------------- approval


def lookup_path(arguments: dict[str, Any], dotted: str) -> Any:
    """Return the value at a dotted path (``"order.amount"``) or ``None`` when absent."""
    value: Any = arguments
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        if value is None:
            return None
    return value


def as_number(value: Any) -> float | None:
    """A real, finite number for thresholds and budgets; ``None`` for anything else (bools included)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def approval_reason(policy: Policy, arguments: dict[str, Any]) -> str | None:
    """Why this call needs a human, or ``None`` when it may run without one.

    A bypass argument that is missing, not a number or negative (a negative
    refund is not a small one) never bypasses: the gate fails closed.
    """
    if not policy.approval_required:
        return None
    if policy.approval_bypass_arg and policy.approval_bypass_max is not None:
        value = as_number(lookup_path(arguments, policy.approval_bypass_arg))
        if value is not None and 0 <= value <= policy.approval_bypass_max:
            return None
        return (
            f"policy '{policy.name}' requires approval when {policy.approval_bypass_arg} "
            f"is above {policy.approval_bypass_max:g} or missing"
        )
    return f"policy '{policy.name}' requires approval"


# --------------------------------------------------------------------------- guardrails


@dataclass(frozen=True, slots=True)
class GuardState:
    """What the store read about the tool's recent activity, for :func:`admit`."""

    paused: bool = False
    paused_reason: str | None = None
    paused_by: str | None = None
    started_in_window: int = 0
    oldest_start_in_window: float | None = None
    running: int = 0
    budget_spent: float = 0.0


class Refusal(Enum):
    """Why a new execution may not start now."""

    PAUSED = "paused"
    RATE_LIMITED = "rate_limited"
    CONCURRENCY = "concurrency"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict of :func:`admit`: ``refusal`` is ``None`` when the call may start."""

    refusal: Refusal | None = None
    retry_after: float | None = None
    needs_approval: str | None = None


def admit_approved(policy: Policy, state: GuardState) -> Admission:
    """Rules for an approved execution about to run: the kill switch and the concurrency cap.

    Its rate and budget were counted when it was requested, so they are not
    counted twice.
    """
    if state.paused:
        return Admission(Refusal.PAUSED)
    if policy.max_concurrent is not None and state.running >= policy.max_concurrent:
        return Admission(Refusal.CONCURRENCY)
    return Admission()


def admit(policy: Policy, state: GuardState, now: float, budget_amount: float | None) -> Admission:
    """Apply pause, rate, concurrency and budget rules to a call about to start a new execution."""
    if state.paused:
        return Admission(Refusal.PAUSED)
    rate = policy.rate_limit
    if rate is not None and state.started_in_window >= rate.count:
        oldest = state.oldest_start_in_window if state.oldest_start_in_window is not None else now
        return Admission(Refusal.RATE_LIMITED, retry_after=max(0.0, oldest + rate.per - now))
    if policy.max_concurrent is not None and state.running >= policy.max_concurrent:
        return Admission(Refusal.CONCURRENCY)
    budget = policy.budget
    if budget is not None:
        amount = budget_amount or 0.0
        if state.budget_spent + amount > budget.max:
            if budget.on_exceed == "approve":
                return Admission(
                    needs_approval=(
                        f"budget of policy '{policy.name}' would be exceeded: "
                        f"{state.budget_spent:g} spent + {amount:g} > {budget.max:g} per window"
                    )
                )
            return Admission(Refusal.BUDGET)
    return Admission()
