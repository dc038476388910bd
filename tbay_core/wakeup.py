"""In-process wake-ups: a waiter in this process learns at once that an execution changed.

Followers and approval waiters subscribe *before* they re-read the row, so a
change that lands between the read and the wait is never missed; waiters in
other processes fall back to polling the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future


class Wakeups:
    """One pending :class:`~concurrent.futures.Future` per execution id, fired when it changes."""

    def __init__(self) -> None:
        self._futures: dict[str, Future[str | None]] = {}
        self._lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """A forked child starts with nobody waiting (and a lock no dead thread holds)."""
        self._futures = {}
        self._lock = threading.Lock()

    def subscribe(self, execution_id: str) -> Future[str | None]:
        """The future that completes at the next :meth:`fire` for ``execution_id``."""
        with self._lock:
            future = self._futures.get(execution_id)
            if future is None:
                future = self._futures[execution_id] = Future()
            return future

    def fire(self, execution_id: str | None, result: str | None = None) -> None:
        """Wake every waiter of ``execution_id`` (``None``: every waiter); a no-op when nobody waits.

        ``result`` is the stored result JSON an owner hands to its followers.
        """
        with self._lock:
            if execution_id is None:
                futures = list(self._futures.values())
                self._futures.clear()
            else:
                future = self._futures.pop(execution_id, None)
                futures = [future] if future is not None else []
        for future in futures:
            future.set_result(result)


class AsyncWaiter:
    """Awaits wake-up futures from one coroutine without blocking or cancelling them.

    ``asyncio.wrap_future`` would cancel the shared future when this waiter times
    out, waking (and confusing) every other waiter. The bridge here adds one
    callback per wake-up future (not one per poll), and a callback firing after
    the waiter's event loop closed is dropped quietly.
    """

    def __init__(self) -> None:
        self._source: Future[str | None] | None = None
        self._bridge: asyncio.Future[str | None] | None = None

    async def wait(self, future: Future[str | None], timeout: float) -> None:
        """Return when ``future`` completes or after ``timeout`` seconds."""
        if future.done():
            return
        if future is not self._source or self._bridge is None:
            loop = asyncio.get_running_loop()
            bridge: asyncio.Future[str | None] = loop.create_future()

            def wake(_: Future[str | None]) -> None:
                if not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # closed between the check and the call
                        loop.call_soon_threadsafe(_resolve, bridge)

            future.add_done_callback(wake)
            self._source, self._bridge = future, bridge
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._bridge), timeout)


def _resolve(waiter: asyncio.Future[str | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
