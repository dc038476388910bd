"""The opt-in in-process result cache (``local_cache: true`` on a cached policy).

A hit skips the database read: the key is derived and the stored JSON decoded,
nothing more. Entries are bounded (LRU) and expire at the TTL computed from the
stored row's finish time on the database clock, so an entry is never served past
the policy's TTL. The trade-off, documented for users: a ``forget`` or ``purge``
made by another process is seen here only when the entry expires.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import NamedTuple


class _Entry(NamedTuple):
    execution_id: str
    fingerprint: str
    result: str
    deadline: float  # time.monotonic() after which the entry is dead


class LocalCache:
    """A bounded, thread-safe LRU of replayable results by idempotency key."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """A fresh lock in a forked child (the parent's may have been held at the fork)."""
        self._lock = threading.Lock()

    def get(self, key: str, fingerprint: str) -> tuple[str, str] | None:
        """``(execution_id, result JSON)`` for ``key``, or None when absent, expired or for other arguments."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fingerprint != fingerprint or time.monotonic() >= entry.deadline:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry.execution_id, entry.result

    def put(self, key: str, execution_id: str, fingerprint: str, result: str, ttl_left: float) -> None:
        """Remember a replayable result for ``ttl_left`` more seconds (what remains of its TTL)."""
        if ttl_left <= 0:
            return
        with self._lock:
            self._entries[key] = _Entry(execution_id, fingerprint, result, time.monotonic() + ttl_left)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard_execution(self, execution_id: str) -> None:
        """Drop the entry of a forgotten execution (this process's ``forget``)."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.execution_id == execution_id]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
