"""tbay: execution safety for AI agent tool calls.

Idempotency keys, TTL caching, singleflight, crash recovery with leases,
risk-tiered policies, guardrails and human approval, for any agent framework.
State lives in a database you own: SQLite by default, PostgreSQL when many
processes or machines share it.
"""

from .approvals import verify_webhook
from .client import TbayClient, default_client
from .context import Scope, scope
from .errors import (
    ApprovalPending,
    ApprovalRejected,
    ApprovalTimeout,
    BudgetExceeded,
    ConcurrencyLimitExceeded,
    ExecutionFailed,
    ExecutionTimeout,
    IdempotencyConflict,
    InvalidTransition,
    KeyDerivationError,
    PolicyError,
    RateLimitExceeded,
    ReentrantCall,
    ResultNotReplayable,
    StoreError,
    TbayError,
    ToolNameClash,
    ToolPaused,
    UnknownExecution,
)
from .execution import Execution
from .guard import guard_toolkit, guarded
from .policy import Budget, Policy, RateLimit, load_policies

__version__ = "0.1.0"

__all__ = [
    "ApprovalPending",
    "ApprovalRejected",
    "ApprovalTimeout",
    "Budget",
    "BudgetExceeded",
    "ConcurrencyLimitExceeded",
    "Execution",
    "ExecutionFailed",
    "ExecutionTimeout",
    "IdempotencyConflict",
    "InvalidTransition",
    "KeyDerivationError",
    "Policy",
    "PolicyError",
    "RateLimit",
    "RateLimitExceeded",
    "ReentrantCall",
    "ResultNotReplayable",
    "Scope",
    "StoreError",
    "TbayClient",
    "TbayError",
    "ToolNameClash",
    "ToolPaused",
    "UnknownExecution",
    "default_client",
    "guard_toolkit",
    "guarded",
    "load_policies",
    "scope",
    "verify_webhook",
]
