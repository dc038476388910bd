"""Linking tbay executions to the LangChain runs that asked for them.

Add a :class:`TbayCallbackHandler` to a run's callbacks
(``agent.invoke(inputs, config={"callbacks": [handler]})``, or
``tool.invoke(call, config=...)``) and every execution a tool call starts
records, in ``Execution.links`` (``tbay show ID``):

``langchain_run_id``
    the tool run's id (what LangSmith and other tracers show for the tool);
``langchain_parent_run_id``
    the run that called the tool (the agent's ``tools`` node);
``langchain_root_run_id``
    the outermost run the handler saw: the agent run that asked for the call;
``langchain_tool_call_id``
    the id of the model's tool call (the ``AIMessage`` that asked for it);
``langgraph_thread_id``
    the LangGraph thread, when the agent runs with a checkpointer.

How it works. LangChain calls a handler's ``on_tool_start`` in the tool
call's own context, before the tool body runs (sync handlers with
``run_inline = True`` are called inline on the async path too). The handler
opens a :func:`tbay_core.scope` with the links there and closes it in
``on_tool_end``/``on_tool_error``, so every guarded call inside the tool —
a :class:`~tbay_langchain.TbayTool`, or a ``@guarded`` function under
``@tool`` — records them. :class:`~tbay_langchain.TbayMiddleware` claims the
execution *before* LangChain starts the tool run, so it asks the handler for
the links itself (:meth:`TbayCallbackHandler.tool_links`) and gives the tool
run a pre-assigned run id.

The handler keeps one small entry per live run (to find a run's root) and
forgets it when the run ends; ``max_runs`` bounds it if runs never end.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from tbay_core import scope

from .adapter import current_tool_call_id

__all__ = ["LINK_KEYS", "TbayCallbackHandler", "find_handler"]

LINK_KEYS = (
    "langchain_run_id",
    "langchain_parent_run_id",
    "langchain_root_run_id",
    "langchain_tool_call_id",
    "langgraph_thread_id",
)


class TbayCallbackHandler(BaseCallbackHandler):
    """Records LangChain run ids and tool call ids on the tbay executions tool calls start."""

    run_inline = True  # called in the tool call's own context, also on the async path
    raise_error = False

    def __init__(self, *, max_runs: int = 100_000):
        self.max_runs = max_runs
        self._parents: OrderedDict[UUID, UUID | None] = OrderedDict()
        self._scopes: dict[UUID, scope] = {}
        self._lock = threading.Lock()

    # -- the run tree ---------------------------------------------------------

    def _started(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id
            while len(self._parents) > self.max_runs:
                self._parents.popitem(last=False)

    def _ended(self, run_id: UUID) -> None:
        with self._lock:
            self._parents.pop(run_id, None)

    def root_run_id(self, run_id: UUID) -> UUID:
        """The outermost known ancestor of ``run_id`` (itself when it has none)."""
        with self._lock:
            current = run_id
            for _ in range(10_000):  # a cycle cannot happen, but never loop forever
                parent = self._parents.get(current)
                if parent is None:
                    return current
                current = parent
            return current

    def tool_links(self, *, run_id: UUID | None, parent_run_id: UUID | None,
                   tool_call_id: str | None, thread_id: Any = None) -> dict[str, str]:
        """The links of a tool run, as stored in ``Execution.links``."""
        links: dict[str, str] = {}
        if run_id is not None:
            links["langchain_run_id"] = str(run_id)
        if parent_run_id is not None:
            links["langchain_parent_run_id"] = str(parent_run_id)
            links["langchain_root_run_id"] = str(self.root_run_id(parent_run_id))
        elif run_id is not None:
            links["langchain_root_run_id"] = str(run_id)
        if tool_call_id:
            links["langchain_tool_call_id"] = str(tool_call_id)
        if thread_id is not None:
            links["langgraph_thread_id"] = str(thread_id)
        return links

    # -- every kind of run, for the tree ------------------------------------------

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._started(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._started(run_id, parent_run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._started(run_id, parent_run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._started(run_id, parent_run_id)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    # -- tool runs: open the scope the guarded call records -----------------------

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, metadata: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> None:
        self._started(run_id, parent_run_id)
        # LangChain reports the tool call id to callbacks since langchain-core 1.x; before
        # that, a TbayTool running this call knows it.
        if "tool_call_id" in kwargs:
            tool_call_id = kwargs["tool_call_id"]
        else:
            tool_call_id = current_tool_call_id((serialized or {}).get("name"))
        links = self.tool_links(
            run_id=run_id, parent_run_id=parent_run_id, tool_call_id=tool_call_id,
            thread_id=(metadata or {}).get("thread_id"),
        )
        opened = scope(links=links)
        opened.__enter__()
        with self._lock:
            self._scopes[run_id] = opened

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id)

    def _close(self, run_id: UUID) -> None:
        with self._lock:
            opened = self._scopes.pop(run_id, None)
        self._ended(run_id)
        if opened is not None:
            # ValueError: ended in another context than it started in; that context is gone.
            with contextlib.suppress(ValueError):
                opened.__exit__(None, None, None)


def find_handler(callbacks: Any) -> tuple[TbayCallbackHandler | None, UUID | None]:
    """The :class:`TbayCallbackHandler` among a config's ``callbacks``, and their parent run id."""
    if callbacks is None:
        return None, None
    if isinstance(callbacks, (list, tuple)):
        handlers = list(callbacks)
        parent = None
    else:
        handlers = list(getattr(callbacks, "handlers", ()) or ())
        handlers += list(getattr(callbacks, "inheritable_handlers", ()) or ())
        parent = getattr(callbacks, "parent_run_id", None)
    for handler in handlers:
        if isinstance(handler, TbayCallbackHandler):
            return handler, parent
    return None, None
