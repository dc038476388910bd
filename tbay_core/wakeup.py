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
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    def subscribe(self, execution_id: str) -> Future[None]:
        """The future that completes at the next :meth:`fire` for ``execution_id``."""
        with self._lock:
            future = self._futures.get(execution_id)
            if future is None:
                future = self._futures[execution_id] = Future()
            return future

    def fire(self, execution_id: str | None) -> None:
        """Wake every waiter of ``execution_id`` (``None``: every waiter); a no-op when nobody waits."""
        with self._lock:
            if execution_id is None:
                futures = list(self._futures.values())
                self._futures.clear()
            else:
                future = self._futures.pop(execution_id, None)
                futures = [future] if future is not None else []
        for future in futures:
            future.set_result(None)


async def wait_async(future: Future[None], timeout: float) -> None:
    """Wait for a thread-safe future from a coroutine without blocking the loop or cancelling it.

    ``asyncio.wrap_future`` would cancel the shared future when this waiter
    times out, waking (and confusing) every other waiter; this bridge never does.
    """
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: Future[None]) -> None:
        loop.call_soon_threadsafe(_resolve, waiter)

    future.add_done_callback(wake)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(waiter, timeout)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
