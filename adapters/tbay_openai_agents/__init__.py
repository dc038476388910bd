"""tbay for the OpenAI Agents SDK: guarded ``FunctionTool``s, ``guard_agent`` and run hooks.

```python
from agents import Agent, Runner
from tbay_core import TbayClient
from tbay_openai_agents import TbayRunHooks, guard_agent

client = TbayClient()
safe = guard_agent(agent, {"search_*": "readonly", "refund": "destructive", "*": "mutating"},
                   client=client)
result = await Runner.run(safe, "...", context=ctx, hooks=TbayRunHooks())
```

- :func:`guard_agent` returns a copy of an agent (and of every agent it hands
  off to) whose ``FunctionTool``s are guarded; an unmatched tool name fails
  closed. ``tbay_core.guard_toolkit`` accepts ``FunctionTool``s as well, through
  :class:`AgentsAdapter` (the ``tbay.adapters`` entry point ``agents``).
- A guarded call keys on the model's parsed JSON arguments; a repeated or
  concurrent identical call replays or follows instead of running again; a
  refusal (rejected, approval pending, paused, rate-limited, over budget, ...)
  reaches the model as the tool's text result instead of aborting the run.
- The tenant comes from ``tenant=``, ``tenant_from_context=``, the run
  context's ``tenant`` attribute or key, or ``tbay_core.scope`` (in that order).
- :class:`TbayRunHooks` record the agent name, the tool call id and the run's
  trace / group ids on each execution.

Verified with openai-agents 0.20 and 0.24.
"""

from .adapter import (
    AgentsAdapter,
    TenantFromContext,
    context_tenant,
    guard_function_tool,
    is_guarded,
    original_tool,
    record_call,
)
from .agent import guard_agent, match_policy
from .hooks import TbayRunHooks

__all__ = [
    "AgentsAdapter",
    "TbayRunHooks",
    "TenantFromContext",
    "context_tenant",
    "guard_agent",
    "guard_function_tool",
    "is_guarded",
    "match_policy",
    "original_tool",
    "record_call",
]
