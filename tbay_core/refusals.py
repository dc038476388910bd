"""How a refused or deferred call reads to a model inside an agent loop.

Raising out of a tool aborts many agent runners (the Agents SDK ends the run;
LangChain surfaces a crash unless error handling is configured), so adapters
turn these outcomes into a tool result the model can act on: what happened and
what to do next. Plain Python callers still get the exceptions.
"""

from __future__ import annotations

from .errors import (
    ApprovalPending,
    ApprovalRejected,
    ApprovalTimeout,
    BudgetExceeded,
    ConcurrencyLimitExceeded,
    ExecutionFailed,
    ExecutionTimeout,
    IdempotencyConflict,
    RateLimitExceeded,
    ResultNotReplayable,
    TbayError,
    ToolPaused,
)

AGENT_VISIBLE_ERRORS: tuple[type[TbayError], ...] = (
    ApprovalRejected,
    ApprovalPending,
    ApprovalTimeout,
    ToolPaused,
    RateLimitExceeded,
    ConcurrencyLimitExceeded,
    BudgetExceeded,
    ExecutionFailed,
    ExecutionTimeout,
    IdempotencyConflict,
    ResultNotReplayable,
)
"""tbay errors that an agent loop reports to the model as the tool's result instead of crashing."""

_ADVICE: dict[type[TbayError], str] = {
    ApprovalRejected: "Do not retry this call; tell the user it was rejected and why.",
    ApprovalPending: "Tell the user the action awaits human approval; call the tool again with the "
                     "same arguments once it is approved.",
    ApprovalTimeout: "Nobody approved it in time; ask the user before trying again.",
    ToolPaused: "The tool is switched off by an operator; do not retry now, tell the user.",
    RateLimitExceeded: "Wait before calling this tool again, or continue without it.",
    ConcurrencyLimitExceeded: "The tool is busy; try again shortly.",
    BudgetExceeded: "The spending budget is used up; do not retry, tell the user.",
    ExecutionFailed: "This exact call already failed; do not repeat it unchanged.",
    ExecutionTimeout: "The action is still running in the background; check its result later "
                      "instead of starting it again.",
    IdempotencyConflict: "A different request already used this idempotency key; change the request.",
    ResultNotReplayable: "The action already ran once; do not run it again.",
}


def as_tool_result(error: TbayError) -> str:
    """The text a model sees as the tool's result when tbay refused or deferred the call."""
    advice = next((text for kind, text in _ADVICE.items() if isinstance(error, kind)), "")
    return f"[tbay: {type(error).__name__}] {error} {advice}".strip()
