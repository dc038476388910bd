"""A scripted chat model for driving real LangChain agents offline.

:class:`ScriptedChatModel` is a real ``BaseChatModel``: ``create_agent`` binds
tools to it (``bind_tools`` returns the model itself) and calls it like any
provider model. It answers with the next scripted ``AIMessage`` and records
every message list it was given, so tests can check what the model saw
(replayed tool results, refusal texts). Import it only after
``frameworks.need("langchain", ...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatModel(BaseChatModel):
    """Emits ``script`` one message per model call; records the messages of every call."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = []
    _lock: Any = None
    _position: int = 0

    def __init__(self, script: Sequence[AIMessage], **kwargs: Any):
        super().__init__(script=list(script), seen=[], **kwargs)
        self._lock = threading.Lock()
        self._position = 0

    @property
    def _llm_type(self) -> str:
        return "tbay-scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        with self._lock:
            self.seen.append(list(messages))
            if self._position >= len(self.script):
                raise AssertionError(f"the script has only {len(self.script)} model turns")
            message = self.script[self._position]
            self._position += 1
        return ChatResult(generations=[ChatGeneration(message=message.model_copy())])

    @property
    def calls(self) -> int:
        return self._position

    def tool_results(self, turn: int = -1) -> list[ToolMessage]:
        """The tool messages the model had in front of it at one of its calls (default: the last)."""
        return [m for m in self.seen[turn] if isinstance(m, ToolMessage)]


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def calls(*tool_calls: dict[str, Any]) -> AIMessage:
    """A model turn asking for these tool calls."""
    return AIMessage(content="", tool_calls=list(tool_calls))


def answer(text: str) -> AIMessage:
    """A final model turn."""
    return AIMessage(content=text)
