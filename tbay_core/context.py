"""Per-call context (tenant, agent, framework links) carried by contextvars.

Contextvars follow both threads started with ``contextvars.copy_context`` and
asyncio tasks, so ``with scope(tenant="acme"):`` applies to every guarded call
made inside it, sync or async, without threading arguments through tools.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Scope:
    """Who is calling: the tenant (part of the idempotency key), the agent, and audit links."""

    tenant: str | None = None
    agent: str | None = None
    links: dict[str, Any] = field(default_factory=dict)


_EMPTY = Scope()
_current: ContextVar[Scope] = ContextVar("tbay_scope", default=_EMPTY)


def current_scope() -> Scope:
    """The scope in force for the running thread or task."""
    return _current.get()


class scope:  # noqa: N801 - used like a function: ``with scope(tenant=...)``
    """Set the tenant, agent and audit links of every guarded call inside the block.

    Nested scopes inherit what they do not set; ``links`` are merged.
    """

    def __init__(self, *, tenant: str | None = None, agent: str | None = None,
                 links: dict[str, Any] | None = None):
        self._tenant = tenant
        self._agent = agent
        self._links = links or {}
        self._token: Token[Scope] | None = None

    def __enter__(self) -> Scope:
        outer = _current.get()
        inner = Scope(
            tenant=self._tenant if self._tenant is not None else outer.tenant,
            agent=self._agent if self._agent is not None else outer.agent,
            links={**outer.links, **self._links} if self._links else outer.links,
        )
        self._token = _current.set(inner)
        return inner

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._token is not None
        _current.reset(self._token)
        self._token = None

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)
