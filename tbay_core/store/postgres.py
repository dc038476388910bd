"""The shared store: PostgreSQL, for many processes and hosts on one database.

Same statements and decisions as SQLite (see :mod:`tbay_core.store.sql`); what
differs is the plumbing:

- a thread-safe psycopg2 connection pool, reused across calls; a connection
  that dies (server restart, network cut) is discarded, and the next call
  reconnects by itself;
- claims lock their key with ``pg_advisory_xact_lock`` (and the tool, when it
  has caps or budgets), so check-then-act races cannot happen;
- leases, TTLs and windows use the database clock (``clock_timestamp()``), so
  hosts with skewed clocks agree;
- waiters are woken by ``LISTEN/NOTIFY`` on the ``tbay_events`` channel; polling
  stays only as a slow safety net.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``). Add
``?schema=NAME`` to keep the ``tbay_`` tables in a schema of their own (created
if missing); any libpq parameter (``sslmode``, ``options``...) passes through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

from ..errors import StoreError
from . import mask_url
from .base import HeadRecord
from .sql import (
    HEAD_COLUMNS,
    HEAD_FROM,
    SqlStore,
    Tx,
    execution_table_ddl,
    head_from_row,
)

log = logging.getLogger("tbay")

CHANNEL = "tbay_events"
MIGRATION_LOCK = 7_262_020_001
MIGRATIONS: dict[int, list[str]] = {1: execution_table_ddl("DOUBLE PRECISION")}
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
_CLOCK_SQL = "SELECT extract(epoch FROM clock_timestamp())::float8"
_READ_HEAD_SQL = (
    f"SELECT {HEAD_COLUMNS}, extract(epoch FROM clock_timestamp())::float8 {HEAD_FROM}"
).replace("?", "%s")


class _Uncertain(Exception):
    """The connection died while COMMIT was in flight: the outcome is unknown, never retry."""


def split_url(url: str) -> tuple[str, str | None]:
    """The libpq URL without tbay's own ``schema`` parameter, and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), None)
    rest = urlencode([(name, value) for name, value in query if name != "schema"], quote_via=quote)
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def _quote_ident(name: str) -> str:
    """A SQL identifier in double quotes (any characters, quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


class PostgresStore(SqlStore):
    """A store on a PostgreSQL database shared by many processes and hosts."""

    null_safe_eq = "IS NOT DISTINCT FROM"
    poll_interval_cap = 0.25
    early_poll_interval_cap = 0.25  # LISTEN/NOTIFY wakes waiters; polling is only the safety net

    def __init__(self, url: str, *, max_connections: int = 32, connect_timeout: int = 5,
                 pool_wait: float = 30.0):
        self.url = url
        self.masked_url = mask_url(url)
        dsn, self.schema = split_url(url)
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self._pool_wait = pool_wait
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()
        self._sql_cache: dict[str, str] = {}
        self._watchers: list[Callable[[str | None], None]] = []
        self._listener: threading.Thread | None = None
        self._closed = False
        self._checkin(self._checkout(), broken=False)  # fail now, not at the first call
        self.run(lambda _: self._migrate())

    def _connect_error(self, exc: BaseException) -> str:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"cannot connect to PostgreSQL at {self.masked_url}: {first_line}. Check the host, port, "
            "user, password and database name (the database must exist)."
        )

    # ------------------------------------------------------------------ connections

    def _sql(self, sql: str) -> str:
        converted = self._sql_cache.get(sql)
        if converted is None:
            converted = self._sql_cache[sql] = sql.replace("?", "%s")
        return converted

    def _executor(self, conn: Any) -> Tx:
        def execute(sql: str, params: Sequence[Any] = ()) -> Any:
            cursor = conn.cursor()
            cursor.execute(self._sql(sql), tuple(params))
            return cursor

        return execute

    def _open(self) -> Any:
        """A new autocommit connection, its search_path set to the tbay schema when there is one."""
        conn = psycopg2.connect(self._dsn, connect_timeout=self._connect_timeout)
        conn.autocommit = True
        if self.schema:
            conn.cursor().execute(f"SET search_path TO {_quote_ident(self.schema)}, public")
        return conn

    def _checkout(self) -> Any:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        try:
            return self._open()
        except psycopg2.Error as exc:
            raise StoreError(self._connect_error(exc)) from None

    def after_fork_in_child(self) -> None:
        self._idle_lock = threading.Lock()
        self._forget_parent_connections()

    def _forget_parent_connections(self) -> None:
        """In a forked child: never use, close or free the parent's sockets (freeing one would end
        the parent's session), and listen on a connection of its own."""
        with self._idle_lock:
            self._inherited.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()
            self._slots = threading.BoundedSemaphore(self._max_connections)
        if self._listener is not None:
            self._listener = None
            self._start_listener()

    def _checkin(self, conn: Any, *, broken: bool) -> None:
        """Keep a healthy connection for reuse; a broken one is closed, and so are the idle ones.

        A connection breaks when the server restarted or the network dropped,
        which kills its idle siblings too: dropping them all at once spares the
        next calls from tripping over each dead one in turn.
        """
        if not broken and not conn.closed and not self._closed:
            with self._idle_lock:
                self._idle.append(conn)
            return
        doomed = [conn]
        if broken:
            with self._idle_lock:
                doomed += self._idle
                self._idle = []
        for dead in doomed:
            with contextlib.suppress(psycopg2.Error):
                dead.close()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled autocommit connection, reused across calls; one that broke is discarded."""
        if self._closed:
            raise StoreError(f"the tbay client for {self.masked_url} is closed; create a new TbayClient")
        if os.getpid() != self._pid:
            self._forget_parent_connections()
        slots = self._slots
        if not slots.acquire(timeout=self._pool_wait):
            raise StoreError(
                f"no free PostgreSQL connection to {self.masked_url} within {self._pool_wait:g}s; "
                "too many threads at once for max_connections"
            )
        try:
            conn = self._checkout()
            broken = False
            try:
                yield conn
            except _CONNECTION_ERRORS as exc:
                if not conn.closed:  # the server refused a statement (timeout, deadlock): not a lost link
                    raise StoreError(
                        f"PostgreSQL at {self.masked_url} failed: {str(exc).strip()}"
                    ) from None
                broken = True
                raise
            except _Uncertain:
                broken = True
                raise
            finally:
                self._checkin(conn, broken=broken or bool(conn.closed))
        finally:
            slots.release()

    def run(self, operation: Callable[[Tx], Any]) -> Any:
        """Run ``operation`` on a pooled connection, retrying once on a connection that had died.

        A retry is safe because an operation whose connection died before COMMIT was
        rolled back by the server; a death during COMMIT is reported, never retried.
        """
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    return operation(self._executor(conn))
            except _Uncertain as exc:
                raise StoreError(
                    f"PostgreSQL at {self.masked_url} went away while committing; the outcome of "
                    f"this step is unknown ({exc.__cause__}). The call was not run; retrying it is "
                    "safe: tbay will replay or follow whatever was recorded."
                ) from None
            except _CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise StoreError(
                        f"PostgreSQL at {self.masked_url} is unreachable ({str(exc).strip() or type(exc).__name__}); "
                        "nothing was recorded for this step. tbay reconnects by itself once the "
                        "server is back."
                    ) from None
            except psycopg2.Error as exc:
                raise StoreError(f"PostgreSQL at {self.masked_url} failed: {str(exc).strip()}") from None
        raise AssertionError("unreachable")

    def guarded_write(self, operation: Callable[[Tx], Any]) -> Any:
        def in_transaction(tx: Tx) -> Any:
            tx("BEGIN")
            try:
                result = operation(tx)
            except BaseException:
                with contextlib.suppress(psycopg2.Error):  # a dead connection cannot roll back: fine
                    tx("ROLLBACK")
                raise
            try:
                tx("COMMIT")
            except _CONNECTION_ERRORS as exc:
                raise _Uncertain() from exc
            return result

        return self.run(in_transaction)

    def clock(self, tx: Tx) -> float:
        return float(tx(_CLOCK_SQL).fetchone()[0])

    def lock(self, tx: Tx, kind: str, name: str) -> None:
        tx("SELECT pg_advisory_xact_lock(hashtext(?))", (f"tbay:{kind}:{name}",))

    def notify(self, tx: Tx, execution_id: str) -> None:
        tx("SELECT pg_notify(?, ?)", (CHANNEL, execution_id))

    def _migrate(self) -> None:
        def operation(tx: Tx) -> None:
            tx("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
            try:
                if self.schema:
                    tx(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self.schema)}")
                tx("BEGIN")
                try:
                    self.apply_migrations(tx, MIGRATIONS, f"PostgreSQL at {self.masked_url}")
                except BaseException:
                    tx("ROLLBACK")
                    raise
                tx("COMMIT")
            finally:
                tx("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))

        self.run(operation)

    # ------------------------------------------------------------------ hot path

    def read_head(self, key: str) -> tuple[HeadRecord | None, float]:
        def operation(tx: Tx) -> Any:
            return tx(_READ_HEAD_SQL, (key,)).fetchone()

        row = self.run(operation)
        if row is None:
            return None, time.time()
        return head_from_row(row), float(row[16])

    # ------------------------------------------------------------------ LISTEN/NOTIFY

    def watch(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(execution_id)`` whenever any process changes an execution."""
        self._watchers.append(callback)
        if self._listener is None:
            self._start_listener()

    def _start_listener(self) -> None:
        self._listener = threading.Thread(target=self._listen, name="tbay-listen", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                conn = self._open()
            except psycopg2.Error:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            try:
                conn.autocommit = True
                conn.cursor().execute(f"LISTEN {CHANNEL}")
                self._wake(None)  # anything may have changed while nobody listened
                while not self._closed:
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        while conn.notifies:
                            self._wake(conn.notifies.pop(0).payload)
            except (psycopg2.Error, OSError, ValueError) as exc:
                if not self._closed:
                    log.warning("tbay: LISTEN connection to %s lost (%s); reconnecting", self.masked_url, exc)
            finally:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()

    def _wake(self, execution_id: str | None) -> None:
        for callback in self._watchers:
            callback(execution_id)

    def close(self) -> None:
        self._closed = True
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
