"""Every error tbay raises.

All of them derive from :class:`TbayError`, so an agent loop can catch the
whole family in one place. Each message names the tool involved and says what
to do next, because the reader is usually an engineer looking at a log line
long after the agent made the call.
"""

from __future__ import annotations


class TbayError(Exception):
    """Base class of every tbay error."""


class PolicyError(TbayError):
    """A policy file, a policy name or a policy field is invalid or contradictory."""


class KeyDerivationError(TbayError):
    """An argument has no stable value to derive an idempotency key from."""


class IdempotencyConflict(TbayError):
    """The same idempotency key arrived with different arguments.

    ``differing_fields`` lists the top-level argument names whose values differ
    from the stored call, when they could be determined.
    """

    def __init__(self, message: str, *, tool_name: str = "", differing_fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.tool_name = tool_name
        self.differing_fields = differing_fields


class ExecutionFailed(TbayError):
    """A stored failure of an earlier execution, replayed to a later caller.

    The caller that ran the function always sees the real exception; only
    callers that replay the stored outcome get this error.
    """

    def __init__(
        self,
        message: str,
        *,
        tool_name: str = "",
        error_type: str = "",
        error_message: str = "",
        execution_id: str = "",
    ):
        super().__init__(message)
        self.tool_name = tool_name
        self.error_type = error_type
        self.error_message = error_message
        self.execution_id = execution_id


class ResultNotReplayable(TbayError):
    """The execution succeeded but its result could not be stored, so it cannot be replayed."""

    def __init__(self, message: str, *, tool_name: str = "", execution_id: str = ""):
        super().__init__(message)
        self.tool_name = tool_name
        self.execution_id = execution_id


class ExecutionTimeout(TbayError):
    """The function ran longer than the policy's ``execution_timeout``; it keeps running and records its outcome."""

    def __init__(self, message: str, *, execution_id: str = ""):
        super().__init__(message)
        self.execution_id = execution_id


class ApprovalRejected(TbayError):
    """A human rejected the call."""

    def __init__(self, message: str, *, reason: str | None = None, by: str | None = None, execution_id: str = ""):
        super().__init__(message)
        self.reason = reason
        self.by = by
        self.execution_id = execution_id


class ApprovalTimeout(TbayError):
    """Nobody approved or rejected the call within ``approval_timeout``."""

    def __init__(self, message: str, *, execution_id: str = ""):
        super().__init__(message)
        self.execution_id = execution_id


class ApprovalPending(TbayError):
    """Defer mode: the call waits for a human; make the same call again once approved."""

    def __init__(self, message: str, *, execution_id: str = ""):
        super().__init__(message)
        self.execution_id = execution_id


class RateLimitExceeded(TbayError):
    """Too many executions of this tool started in the rate window."""

    def __init__(self, message: str, *, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class ConcurrencyLimitExceeded(TbayError):
    """The tool's ``max_concurrent`` cap stayed full for ``concurrency_wait_timeout``."""


class BudgetExceeded(TbayError):
    """Starting this call would spend more than the policy's budget allows in its window."""


class ToolPaused(TbayError):
    """An operator paused this tool (or all tools) with the kill switch."""

    def __init__(self, message: str, *, reason: str | None = None, by: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.by = by


class UnknownExecution(TbayError):
    """No execution has the given id."""


class InvalidTransition(TbayError):
    """The requested change does not apply to the execution's current status (e.g. approving a finished call)."""


class StoreError(TbayError):
    """The database could not be opened, is locked for too long, or failed mid-operation."""


class ReentrantCall(TbayError):
    """A guarded call made from inside the very execution it would wait for (it would wait forever)."""


class ToolNameClash(TbayError):
    """Two different functions were guarded under one tool name on one client."""
