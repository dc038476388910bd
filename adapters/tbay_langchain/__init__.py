"""tbay for LangChain: guarded tools, agent middleware and run links.

* :func:`guard_tool` / :class:`TbayTool` — a drop-in ``BaseTool`` whose calls go
  through tbay (``invoke``, ``ainvoke``, ``run``, ``arun``, ``ToolNode``);
  ``tbay_core.guard_toolkit`` uses it for LangChain tools (:class:`LangChainAdapter`,
  the ``tbay.adapters`` entry point).
* :class:`TbayMiddleware` — guards every tool of a ``langchain.agents.create_agent``
  agent without changing its tool list (needs the ``langchain`` package; imported
  on first use, so ``langchain_core`` alone is enough for the rest).
* :class:`TbayCallbackHandler` — records LangChain run ids and tool call ids in
  ``Execution.links`` (``tbay show``).

In agent loops refusals come back as ``ToolMessage(status="error")`` carrying
:func:`tbay_core.refusals.as_tool_result`; plain Python callers get the exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .adapter import (
    LangChainAdapter,
    StoredToolMessage,
    TbayTool,
    ToolErrorResult,
    guard_tool,
    guard_tools,
    is_guarded,
    refusal_message,
)
from .callbacks import TbayCallbackHandler

if TYPE_CHECKING:
    from .middleware import TbayMiddleware

__all__ = [
    "LangChainAdapter",
    "StoredToolMessage",
    "TbayCallbackHandler",
    "TbayMiddleware",
    "TbayTool",
    "ToolErrorResult",
    "guard_tool",
    "guard_tools",
    "is_guarded",
    "refusal_message",
]


def __getattr__(name: str) -> Any:
    if name == "TbayMiddleware":  # needs the `langchain` package, not only langchain_core
        from .middleware import TbayMiddleware

        return TbayMiddleware
    raise AttributeError(f"module 'tbay_langchain' has no attribute {name!r}")
