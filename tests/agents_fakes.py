"""A scripted Agents SDK ``Model`` for offline runs (the SDK's own tests do the same).

Each turn of the script is a list of output items (function calls, a final
message), or a callable that builds them from the input the model receives.
Every input is kept, so a test can read what the model saw: the tool outputs
of the previous turn arrive as ``function_call_output`` items.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agents import Model, ModelResponse, Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

Turn = Sequence[Any] | Callable[[list[Any]], Sequence[Any]]


def tool_call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    """A function call item the model emits."""
    return ResponseFunctionToolCall(
        id=f"fc_{call_id}", call_id=call_id, type="function_call", name=name,
        arguments=json.dumps(arguments), status="completed",
    )


def message(text: str) -> ResponseOutputMessage:
    """A final assistant message (ends the run when there is no tool call beside it)."""
    return ResponseOutputMessage(
        id="msg_final", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)
    return dump() if callable(dump) else {}


def tool_outputs(model_input: str | list[Any]) -> dict[str, str]:
    """``call_id -> output text`` of every tool result in one model input."""
    if isinstance(model_input, str):
        return {}
    outputs = {}
    for item in map(_as_dict, model_input):
        if item.get("type") == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = json.dumps(output)
            outputs[str(item.get("call_id"))] = output
    return outputs


class ScriptedModel(Model):
    """Plays a script of turns; records what it was given at each turn."""

    def __init__(self, turns: Sequence[Turn]):
        self.turns = list(turns)
        self.inputs: list[str | list[Any]] = []
        self.tool_names: list[list[str]] = []

    async def get_response(self, system_instructions: str | None, input: str | list[Any],
                           model_settings: Any, tools: list[Any], output_schema: Any,
                           handoffs: list[Any], tracing: Any, **kwargs: Any) -> ModelResponse:
        snapshot = input if isinstance(input, str) else [_as_dict(item) or item for item in input]
        self.inputs.append(snapshot)
        self.tool_names.append([getattr(tool, "name", "?") for tool in tools])
        if not self.turns:
            raise AssertionError("the scripted model ran out of turns")
        turn = self.turns.pop(0)
        items = turn(snapshot) if callable(turn) else turn
        return ModelResponse(output=list(items), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")

    def last_outputs(self) -> dict[str, str]:
        """The tool outputs in the most recent input the model received."""
        return tool_outputs(self.inputs[-1])
