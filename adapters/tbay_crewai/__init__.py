"""tbay for CrewAI: guarded ``BaseTool`` wrappers and global tool-call hooks.

* :func:`guard_tool` / ``tbay_core.guard_toolkit`` wrap CrewAI tools in a
  :class:`TbayCrewTool` (same name, description and schemas; CrewAI's own
  result cache switched off for it, since it would bypass tbay).
* :func:`register_tbay_hooks` guards every tool call of every crew in the
  process through CrewAI's before/after tool-call hooks, without wrapping
  tools; :func:`unregister_tbay_hooks` removes them.

In agent loops tbay's refusals reach the model as tool-result text
(:class:`TbayRefusal`); ``TbayCrewTool.call``/``acall`` raise them for plain
Python callers.
"""

from .adapter import CrewAIAdapter, TbayCrewTool, TbayRefusal, guard_tool, never_cache
from .hooks import TbayHooks, register_tbay_hooks, unregister_tbay_hooks

__all__ = [
    "CrewAIAdapter",
    "TbayCrewTool",
    "TbayHooks",
    "TbayRefusal",
    "guard_tool",
    "never_cache",
    "register_tbay_hooks",
    "unregister_tbay_hooks",
]
