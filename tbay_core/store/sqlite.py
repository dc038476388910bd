"""The embedded default store: one SQLite file in WAL mode, one reused connection per thread.

Claims run under ``BEGIN IMMEDIATE`` so that exactly one process at a time
decides a key; reads (the cache-hit path) are single autocommit SELECTs that
never take the write lock. All processes share one host, so the database's
clock is the host clock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import HeadRecord
from .sql import READ_HEAD_SQL, Cursor, SqlStore, Tx, execution_table_ddl, head_from_row

MIGRATIONS: dict[int, list[str]] = {1: execution_table_ddl("REAL")}


def sqlite_path_from_url(url: str) -> str:
    """Turn ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///~/x.db`` into a path."""
    if not url.startswith("sqlite:///"):
        raise StoreError(
            f"unsupported SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    raw = url[len("sqlite:///"):].split("?", 1)[0]
    if not raw or raw == ":memory:":
        raise StoreError(
            f"SQLite URL {url!r} names no file: tbay shares state between threads and processes "
            "through a file, so give a path such as sqlite:///./tbay.db"
        )
    return str(Path(raw).expanduser())


class SQLiteStore(SqlStore):
    """A store on one SQLite file, shared by the threads and processes of one host."""

    def __init__(self, url: str, *, busy_timeout: float = 10.0):
        self.url = url
        self.path = sqlite_path_from_url(url)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._holders: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._inherited: list[object] = []  # a fork's copies of the parent's connections, never used
        self._pid = os.getpid()
        self._closed = False
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory {directory!r} for SQLite database {url!r}: {exc}") from exc
        self.run(lambda _: self._migrate())

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the tbay client for {self.url} is closed; create a new TbayClient")
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r} ({self.url}): {exc}") from exc
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        holder = _ThreadConnection(conn)
        with self._connections_lock:
            self._holders.add(holder)
        self._local.holder = holder
        self._local.conn = conn
        return conn

    def after_fork_in_child(self) -> None:
        self._connections_lock = threading.Lock()
        self._forget_parent_connections()

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked without the at-fork hook (os.fork in C code)
            self._forget_parent_connections()
        try:
            return self._local.conn  # type: ignore[no-any-return]
        except AttributeError:
            return self._connect()

    def _forget_parent_connections(self) -> None:
        """In a forked child: open connections of its own, and never touch (or close) the parent's."""
        with self._connections_lock:
            for holder in list(self._holders):
                holder.finalizer.detach()
                self._inherited.append(holder)
            self._holders = weakref.WeakSet()
            self._local = threading.local()
            self._pid = os.getpid()

    def _executor(self, conn: sqlite3.Connection) -> Tx:
        def execute(sql: str, params: Sequence[Any] = ()) -> Cursor:
            return conn.execute(sql, params)

        return execute

    def run(self, operation: Callable[[Tx], Any]) -> Any:
        try:
            return operation(self._executor(self._conn()))
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"SQLite database {self.path!r} stayed locked for {self.busy_timeout:g}s: another "
                    "process holds a long write transaction. Nothing was recorded for this call; retry "
                    "it, or use PostgreSQL when many processes write at once."
                ) from exc
            raise StoreError(f"SQLite database {self.path!r} failed: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite database {self.path!r} failed: {exc}") from exc

    def guarded_write(self, operation: Callable[[Tx], Any]) -> Any:
        def in_transaction(_: Tx) -> Any:
            with self._transaction() as tx:
                return operation(tx)

        return self.run(in_transaction)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._executor(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def clock(self, tx: Tx) -> float:
        return time.time()

    def _migrate(self) -> None:
        conn = self._conn()
        for attempt in range(50):
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:  # another process is switching it at this moment
                time.sleep(0.01 * (attempt + 1))
        with self._transaction() as tx:
            self.apply_migrations(tx, MIGRATIONS, f"SQLite database {self.path!r}")

    # ------------------------------------------------------------------ hot path

    def read_head(self, key: str) -> tuple[HeadRecord | None, float]:
        try:
            row = self._conn().execute(READ_HEAD_SQL, (key,)).fetchone()
        except sqlite3.Error:
            row = self.run(lambda tx: tx(READ_HEAD_SQL, (key,)).fetchone())
        return (None if row is None else head_from_row(row)), time.time()

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            for holder in list(self._holders):
                holder.finalizer()
            self._holders = weakref.WeakSet()
        self._local = threading.local()


class _ThreadConnection:
    """One thread's connection, closed when the thread ends (its thread-locals are released).

    Threads come and go (timeouts, webhooks, user thread pools); without this,
    each would leave an open connection behind until the client closes.
    """

    __slots__ = ("__weakref__", "conn", "finalizer")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.finalizer = weakref.finalize(self, _close_quietly, conn)


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()
