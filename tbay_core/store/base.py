"""The store interface and the claim algorithm every store shares.

A store offers a few atomic operations (claim, renew, finish, decide an
approval, poll, query, controls, purge). The claim itself is written once,
here, over a small set of primitives that each store implements inside its own
transaction (:class:`ClaimTransaction`), so SQLite and PostgreSQL cannot drift
apart in what they decide: they only differ in how they lock and write.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..decide import (
    EXPIRED,
    LOST,
    RUNNING,
    WAITING_APPROVAL,
    Action,
    GuardState,
    Head,
    Refusal,
    admit,
    admit_approved,
    decide,
)
from ..execution import Execution
from ..policy import Policy


@dataclass(frozen=True, slots=True)
class HeadRecord:
    """The execution holding a key, with what a replay needs (result or error)."""

    head: Head
    tool_name: str
    result: str | None
    error_type: str | None
    error_message: str | None
    decided_by: str | None
    decision_reason: str | None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Everything a store needs to decide and record a call in one atomic step."""

    key: str | None
    tool_name: str
    tenant: str | None
    agent: str | None
    policy: Policy
    fingerprint: str
    canonical_args: str | None
    args_json: str
    owner: str
    approval_reason: str | None = None
    budget_amount: float | None = None
    waiting_for: str | None = None
    links_json: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """What the claim decided; ``execution_id`` is the new or the followed/replayed execution."""

    action: Action
    execution_id: str | None = None
    record: HeadRecord | None = None
    status: str | None = None
    refusal: Refusal | None = None
    retry_after: float | None = None
    paused_reason: str | None = None
    paused_by: str | None = None
    approval_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PollState:
    """What a waiting caller re-reads about the execution it waits on."""

    status: str
    lease_expires_at: float | None
    approved: bool
    approval_deadline: float | None
    now: float


@dataclass(frozen=True, slots=True)
class Control:
    """A kill-switch entry: ``tool`` is a tool name or ``"*"`` for every tool."""

    tool: str
    reason: str | None
    by: str | None
    since: float


ALL_TOOLS = "*"


def new_execution_id() -> str:
    """Execution ids are 128 random bits in hex (like a UUID4's): unguessable, cheap to make."""
    return os.urandom(16).hex()


class ClaimTransaction(ABC):
    """The primitives :func:`run_claim` needs, all inside one open transaction."""

    now: float

    @abstractmethod
    def load_head(self, key: str) -> HeadRecord | None:
        """The execution the key points at, locked for this transaction."""

    @abstractmethod
    def load_execution(self, execution_id: str) -> HeadRecord | None:
        """One execution by id, in the same shape as :meth:`load_head` (for keyless calls)."""

    @abstractmethod
    def guard_state(self, request: ClaimRequest) -> GuardState:
        """Pause, rate, concurrency and budget figures for the tool (and tenant)."""

    @abstractmethod
    def insert_execution(self, execution_id: str, request: ClaimRequest, *, status: str,
                         attempt: int, retry_number: int, lease_expires_at: float | None,
                         approval_reason: str | None, approval_deadline: float | None) -> None:
        """Insert a new execution row."""

    @abstractmethod
    def point_key(self, key: str, execution_id: str) -> None:
        """Make ``key`` point at ``execution_id`` (insert or replace)."""

    @abstractmethod
    def end_execution(self, execution_id: str, status: str, error_type: str, error_message: str) -> None:
        """End an active execution (superseded, lost or expired)."""

    @abstractmethod
    def start_approved(self, execution_id: str, lease_expires_at: float, owner: str) -> bool:
        """Move an approved WAITING_APPROVAL execution to RUNNING; False if someone else did."""


def run_claim(tx: ClaimTransaction, request: ClaimRequest) -> ClaimOutcome:
    """Decide and record one call atomically; the caller owns the open transaction."""
    policy = request.policy
    if request.key is not None:
        record = tx.load_head(request.key)
    elif request.waiting_for is not None:  # a keyless (volatile) call waiting on its own approval
        record = tx.load_execution(request.waiting_for)
    else:
        record = None
    head = record.head if record is not None else None
    decision = decide(head, policy, tx.now, request.fingerprint, waiting_for=request.waiting_for)
    if decision.action is Action.MARK_LOST:
        assert head is not None and record is not None
        error_type, message = _supersede_error(LOST, head)
        tx.end_execution(head.execution_id, LOST, error_type, message)
        record = _with_error(record, LOST, error_type, message, tx.now)
        head = record.head
        # decide again on the LOST row: replay its failure, or retry it if the policy allows
        decision = decide(head, policy, tx.now, request.fingerprint, waiting_for=request.waiting_for)
    action = decision.action

    if action is Action.START:
        state = tx.guard_state(request)
        admission = admit(policy, state, tx.now, request.budget_amount)
        if admission.refusal is not None:
            return ClaimOutcome(
                Action.START,
                refusal=admission.refusal,
                retry_after=admission.retry_after,
                paused_reason=state.paused_reason,
                paused_by=state.paused_by,
            )
        approval = decision.force_approval or admission.needs_approval or request.approval_reason
        if decision.supersede is not None and head is not None:
            tx.end_execution(head.execution_id, decision.supersede, *_supersede_error(decision.supersede, head))
        execution_id = new_execution_id()
        if approval is None:
            status, lease, deadline = RUNNING, tx.now + policy.lease_timeout, None
        else:
            status, lease, deadline = WAITING_APPROVAL, None, tx.now + policy.approval_timeout
        tx.insert_execution(
            execution_id, request, status=status, attempt=decision.attempt,
            retry_number=decision.retry_number, lease_expires_at=lease,
            approval_reason=approval, approval_deadline=deadline,
        )
        if request.key is not None:
            tx.point_key(request.key, execution_id)
        return ClaimOutcome(Action.START, execution_id=execution_id, status=status, approval_reason=approval)

    assert head is not None and record is not None
    if action is Action.RUN_APPROVED:
        state = tx.guard_state(request)
        admission = admit_approved(policy, state)
        if admission.refusal is not None:
            return ClaimOutcome(Action.START, refusal=admission.refusal, paused_reason=state.paused_reason,
                                paused_by=state.paused_by)
        if tx.start_approved(head.execution_id, tx.now + policy.lease_timeout, request.owner):
            return ClaimOutcome(Action.RUN_APPROVED, execution_id=head.execution_id, record=record)
        return ClaimOutcome(Action.FOLLOW, execution_id=head.execution_id, record=record)
    if action is Action.APPROVAL_TIMED_OUT:
        tx.end_execution(head.execution_id, EXPIRED, *_supersede_error(EXPIRED, head))
    return ClaimOutcome(action, execution_id=head.execution_id, record=record,
                        retry_after=decision.retry_after)


def _supersede_error(status: str, head: Head) -> tuple[str, str]:
    if status == LOST:
        return ("OwnerLost", "the process running this call stopped renewing its lease "
                "(it crashed, was killed or lost the database) before recording an outcome")
    return ("ApprovalTimeout", "nobody approved or rejected the call before its approval timeout")


def _with_error(record: HeadRecord, status: str, error_type: str, message: str,
                now: float) -> HeadRecord:
    head = record.head
    new_head = Head(head.execution_id, status, head.attempt, head.retry_number, head.fingerprint,
                    now, None, head.replayable, head.approved, head.approval_deadline)
    return HeadRecord(new_head, record.tool_name, None, error_type, message,
                      record.decided_by, record.decision_reason)


class Store(ABC):
    """One database holding every execution, key, and control of a client."""

    url: str
    poll_interval_cap: float = 0.02
    """How long a waiter may go between two reads of an execution it waits on (seconds)."""
    early_poll_interval_cap: float = 0.001
    """The same cap during a waiter's first two seconds, when most tool calls end.

    Polling every 1 ms costs one indexed read (about 10 us) per waiter per poll;
    it makes a follower in another process return within a couple of
    milliseconds of the owner without a notification channel.
    """

    def after_fork_in_child(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: stop using the parent's connections and locks."""

    def watch(self, callback: Callable[[str | None], None]) -> None:  # noqa: B027 - optional hook
        """Call ``callback(execution_id)`` when another process changes an execution (``None``: any).

        Stores without push notifications (SQLite) never call it; waiters poll.
        """

    @abstractmethod
    def read_head(self, key: str) -> tuple[HeadRecord | None, float]:
        """One indexed read of the execution holding ``key``, plus the store's clock."""

    @abstractmethod
    def claim(self, request: ClaimRequest) -> ClaimOutcome:
        """Run :func:`run_claim` in one atomic transaction."""

    @abstractmethod
    def finish(self, execution_id: str, *, status: str, result: str | None, replayable: bool,
               error_type: str | None, error_message: str | None, error_traceback: str | None,
               cache_ttl: float | None) -> bool:
        """Record the outcome of a RUNNING execution; False when its lease was taken over (fenced)."""

    @abstractmethod
    def renew(self, execution_ids: Iterable[str], lease_timeout: float) -> None:
        """Extend the leases of RUNNING executions owned by this process."""

    @abstractmethod
    def poll(self, execution_id: str) -> PollState | None:
        """The state a waiter needs of one execution."""

    @abstractmethod
    def record_replay(self, execution_id: str, tool_name: str, tenant: str | None,
                      agent: str | None) -> None:
        """Write one audit row for a replay (only for policies with ``audit_replays``)."""

    @abstractmethod
    def canonical_args(self, execution_id: str) -> str | None:
        """The canonical arguments stored with an execution (to name conflicting fields)."""

    @abstractmethod
    def get(self, execution_id: str) -> Execution | None:
        """One execution, or None."""

    @abstractmethod
    def query(self, *, tool: str | None = None, status: str | None = None,
              tenant: str | None = None, limit: int | None = 100) -> list[Execution]:
        """Executions, newest first, filtered."""

    @abstractmethod
    def decide_approval(self, execution_id: str, *, approve: bool, by: str | None,
                        reason: str | None) -> Execution:
        """Approve or reject a waiting execution; raises for unknown or ended ones."""

    @abstractmethod
    def forget(self, execution_id: str) -> bool:
        """Release the key held by an execution so the next identical call runs fresh."""

    @abstractmethod
    def set_pause(self, tool: str, *, paused: bool, reason: str | None, by: str | None) -> None:
        """Pause (or resume) one tool, or every tool with ``"*"``."""

    @abstractmethod
    def controls(self) -> list[Control]:
        """The active pauses."""

    @abstractmethod
    def purge(self, older_than: float, *, dry_run: bool = False) -> int:
        """Delete ended executions older than ``older_than`` seconds; return how many."""

    @abstractmethod
    def stats(self) -> list[dict[str, Any]]:
        """Per-tool counts and durations for ``tbay stats``."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""
