"""Lease renewal for executions this process is running.

One daemon thread per client renews every running execution's lease, grouped
by lease length, so an owner that is alive is never mistaken for a crashed
one and no per-call thread is started.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from .errors import TbayError
from .store.base import Store

log = logging.getLogger("tbay")


class Heartbeat:
    """Renews the leases of registered executions every third of their lease."""

    def __init__(self, store: Store):
        self._store = store
        self._leases: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._interval = float("inf")  # how long the thread sleeps now; a shorter lease wakes it

    def add(self, execution_id: str, lease_timeout: float) -> None:
        """Start renewing ``execution_id``'s lease."""
        with self._lock:
            self._leases[execution_id] = lease_timeout
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tbay-heartbeat", daemon=True)
                self._thread.start()
            sooner = lease_timeout / 3 < self._interval
        if sooner:  # waking the thread costs more than the rest of add(): only when needed
            self._changed.set()

    def after_fork_in_child(self) -> None:
        """A forked child renews none of the parent's leases and starts its own thread when needed."""
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._leases = {}
        self._thread = None
        self._interval = float("inf")

    def renews(self, execution_id: str) -> bool:
        """True while ``execution_id`` runs in this process (its owner will fire its wake-up)."""
        return execution_id in self._leases

    def remove(self, execution_id: str) -> None:
        """Stop renewing (the execution ended)."""
        with self._lock:
            self._leases.pop(execution_id, None)

    def stop(self) -> None:
        """End the thread (client closed)."""
        self._stopped = True
        self._changed.set()

    def _run(self) -> None:
        while not self._stopped:
            with self._lock:  # add() either lands in these groups or sees the new interval
                self._changed.clear()
                groups: dict[float, list[str]] = defaultdict(list)
                for execution_id, lease in self._leases.items():
                    groups[lease].append(execution_id)
                interval = self._interval = min(groups, default=30.0) / 3
            if self._changed.wait(interval) and not groups:
                continue
            for lease, ids in groups.items():
                with self._lock:
                    alive = [i for i in ids if i in self._leases]
                try:
                    self._store.renew(alive, lease)
                except TbayError as exc:  # the database is away; the lease may lapse, which is the point
                    log.warning("tbay: could not renew leases of %d running execution(s): %s", len(alive), exc)
