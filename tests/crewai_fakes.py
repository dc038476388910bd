"""A scripted CrewAI model, so real crews run offline in the adapter tests.

:class:`ScriptedLLM` is a real ``crewai.llms.base_llm.BaseLLM``: CrewAI's own
agent executor drives it, and it answers each call with the next step of its
script. A step is a ReAct text (``react(...)``, ``final(...)``), a list of
native tool calls (``tool_calls(...)``), or a callable that gets the messages
and returns one of those (to act between two model turns, e.g. a human
rejecting a pending call). Every message list it was sent is kept in
``seen``, so a test can read exactly what the model saw.

Importing this module imports crewai: set HOME, CREWAI_STORAGE_DIR and the
telemetry switches before importing it (the test module does).
"""

from __future__ import annotations

import json
from typing import Any

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from pydantic import Field


class ScriptedLLM(BaseLLM):
    """A model that plays a fixed script; ``native=True`` makes CrewAI use function calling."""

    script: list[Any] = Field(default_factory=list)
    seen: list[list[dict[str, Any]]] = Field(default_factory=list)
    native: bool = False

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None,
             available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> Any:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        snapshot = json.loads(json.dumps(list(messages), default=str))
        self.seen.append(snapshot)
        if not self.script:
            raise AssertionError(f"the scripted model ran out of steps after {len(self.seen) - 1} calls")
        step = self.script.pop(0)
        return step(snapshot) if callable(step) else step

    async def acall(self, messages: Any, tools: Any = None, callbacks: Any = None,
                    available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
                    response_model: Any = None) -> Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent,
                         response_model)

    def supports_function_calling(self) -> bool:
        return self.native

    def tool_results(self) -> list[str]:
        """Every tool result the model was shown, in order (both paths), from the last call."""
        last = self.seen[-1] if self.seen else []
        results = []
        for message in last:
            content = message.get("content") or ""
            if message.get("role") == "tool":
                results.append(content)
            elif message.get("role") == "assistant" and "\nObservation:" in content:
                results.append(content.split("\nObservation:", 1)[1].strip())
        return results


def react(tool: str, arguments: dict[str, Any]) -> str:
    """A ReAct step calling ``tool``."""
    return f"Thought: I need {tool}.\nAction: {tool}\nAction Input: {json.dumps(arguments)}"


def final(text: str, *, native: bool = False) -> str:
    """The last step: a final answer."""
    return text if native else f"Thought: I now know the final answer.\nFinal Answer: {text}"


_counter = iter(range(1, 1_000_000))


def tool_calls(*calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A native step: OpenAI-style tool calls, as a provider's response would carry them."""
    return [
        {"id": f"call_{next(_counter)}", "type": "function",
         "function": {"name": name, "arguments": json.dumps(arguments)}}
        for name, arguments in calls
    ]


def call_tool(native: bool, tool: str, arguments: dict[str, Any]) -> Any:
    """One step calling ``tool`` on the chosen path."""
    return tool_calls((tool, arguments)) if native else react(tool, arguments)


def make_crew(tools: list[Any], script: list[Any], *, native: bool, cache: bool = True,
              role: str = "support agent") -> tuple[Crew, ScriptedLLM]:
    """One agent with ``tools`` and one task, driven by ``script``. ``cache`` is CrewAI's tool cache."""
    llm = ScriptedLLM(model="scripted-model", script=list(script), native=native)
    agent = Agent(role=role, goal="help the customer", backstory="a careful assistant",
                  llm=llm, tools=tools, verbose=False, max_iter=25)
    task = Task(description="Handle the customer's request.", expected_output="what was done",
                agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False, cache=cache), llm
