"""The embedded default store: one SQLite file in WAL mode, one reused connection per thread.

Claims run under ``BEGIN IMMEDIATE`` so that exactly one process at a time
decides a key; reads (the cache-hit path) are single autocommit SELECTs that
never take the write lock. All processes share one host, so the database's
clock is the host clock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..decide import (
    ACTIVE_STATUSES,
    ENDED_STATUSES,
    EXPIRED,
    FAILED,
    LOST,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    WAITING_APPROVAL,
    GuardState,
    Head,
)
from ..errors import InvalidTransition, StoreError, UnknownExecution
from ..execution import Execution, to_datetime
from .base import (
    ALL_TOOLS,
    ClaimOutcome,
    ClaimRequest,
    ClaimTransaction,
    Control,
    HeadRecord,
    PollState,
    Store,
    run_claim,
)

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS tbay_executions (
            id TEXT PRIMARY KEY,
            key TEXT,
            tool_name TEXT NOT NULL,
            tenant TEXT,
            agent TEXT,
            policy_name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            canonical_args TEXT,
            args TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            retry_number INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            result TEXT,
            replayable INTEGER NOT NULL DEFAULT 1,
            error_type TEXT,
            error_message TEXT,
            error_traceback TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            lease_expires_at REAL,
            expires_at REAL,
            owner TEXT,
            approved INTEGER NOT NULL DEFAULT 0,
            approval_reason TEXT,
            approval_deadline REAL,
            decided_by TEXT,
            decision_reason TEXT,
            decided_at REAL,
            budget_amount REAL,
            links TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS tbay_executions_key ON tbay_executions (key)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_tool ON tbay_executions (tool_name, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_status ON tbay_executions (status, tool_name, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_tenant ON tbay_executions (tenant, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_created ON tbay_executions (created_at)",
        """CREATE TABLE IF NOT EXISTS tbay_keys (
            key TEXT PRIMARY KEY,
            execution_id TEXT NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS tbay_keys_execution ON tbay_keys (execution_id)",
        """CREATE TABLE IF NOT EXISTS tbay_controls (
            tool TEXT PRIMARY KEY,
            reason TEXT,
            paused_by TEXT,
            since REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS tbay_replays (
            execution_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            tenant TEXT,
            agent TEXT,
            at REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS tbay_replays_tool ON tbay_replays (tool_name, at)",
    ],
}

_HEAD_COLUMNS = (
    "e.id, e.status, e.attempt, e.retry_number, e.fingerprint, e.finished_at, e.lease_expires_at,"
    " e.replayable, e.approved, e.approval_deadline, e.tool_name, e.result, e.error_type,"
    " e.error_message, e.decided_by, e.decision_reason"
)
_READ_HEAD_SQL = (
    f"SELECT {_HEAD_COLUMNS} FROM tbay_keys k JOIN tbay_executions e ON e.id = k.execution_id"
    " WHERE k.key = ?"
)
_EXECUTION_COLUMNS = (
    "id, tool_name, tenant, agent, status, policy_name, attempt, args, error_type, error_message,"
    " created_at, started_at, finished_at, decided_by, decision_reason, key, replayable,"
    " error_traceback, lease_expires_at, approval_reason, approval_deadline, links, approved"
)
_ENDED_SQL = ", ".join(f"'{s}'" for s in sorted(ENDED_STATUSES))
_NOT_SPENT_SQL = f"'{REJECTED}', '{EXPIRED}'"

T = TypeVar("T")


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


def _head_from_row(row: tuple[Any, ...]) -> HeadRecord:
    head = Head(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), bool(row[8]), row[9])
    return HeadRecord(head, row[10], row[11], row[12], row[13], row[14], row[15])


def _execution_from_row(row: tuple[Any, ...]) -> Execution:
    return Execution(
        id=row[0], tool_name=row[1], tenant=row[2], agent=row[3], status=row[4], policy_name=row[5],
        attempt=row[6], args=json.loads(row[7]) if row[7] else {}, error_type=row[8],
        error_message=row[9], created_at=to_datetime(row[10]), started_at=to_datetime(row[11]),
        finished_at=to_datetime(row[12]), decided_by=row[13], decision_reason=row[14], key=row[15],
        replayable=bool(row[16]), error_traceback=row[17], lease_expires_at=to_datetime(row[18]),
        approval_reason=row[19], approval_deadline=to_datetime(row[20]),
        links=json.loads(row[21]) if row[21] else {}, approved=bool(row[22]),
    )


class _SqliteClaim(ClaimTransaction):
    """The claim primitives over one connection inside ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection, now: float):
        self.conn = conn
        self.now = now

    def load_head(self, key: str) -> HeadRecord | None:
        row = self.conn.execute(_READ_HEAD_SQL, (key,)).fetchone()
        return None if row is None else _head_from_row(row)

    def guard_state(self, request: ClaimRequest) -> GuardState:
        conn, policy, now = self.conn, request.policy, self.now
        paused = conn.execute(
            "SELECT reason, paused_by FROM tbay_controls WHERE tool IN (?, ?) ORDER BY tool = ? LIMIT 1",
            (request.tool_name, ALL_TOOLS, ALL_TOOLS),
        ).fetchone()
        started, oldest, running, spent = 0, None, 0, 0.0
        if policy.rate_limit is not None:
            started, oldest = conn.execute(
                "SELECT COUNT(*), MIN(created_at) FROM tbay_executions WHERE tool_name = ? AND"
                f" tenant IS ? AND created_at > ? AND status NOT IN ({_NOT_SPENT_SQL})",
                (request.tool_name, request.tenant, now - policy.rate_limit.per),
            ).fetchone()
        if policy.max_concurrent is not None:
            (running,) = conn.execute(
                "SELECT COUNT(*) FROM tbay_executions WHERE status = ? AND tool_name = ?"
                " AND lease_expires_at > ?",
                (RUNNING, request.tool_name, now),
            ).fetchone()
        if policy.budget is not None:
            (spent,) = conn.execute(
                "SELECT COALESCE(SUM(budget_amount), 0) FROM tbay_executions WHERE tool_name = ? AND"
                f" tenant IS ? AND created_at > ? AND status NOT IN ({_NOT_SPENT_SQL})",
                (request.tool_name, request.tenant, now - policy.budget.per),
            ).fetchone()
        return GuardState(
            paused=paused is not None,
            paused_reason=paused[0] if paused else None,
            paused_by=paused[1] if paused else None,
            started_in_window=started,
            oldest_start_in_window=oldest,
            running=running,
            budget_spent=float(spent),
        )

    def insert_execution(self, execution_id: str, request: ClaimRequest, *, status: str,
                         attempt: int, retry_number: int, lease_expires_at: float | None,
                         approval_reason: str | None, approval_deadline: float | None) -> None:
        self.conn.execute(
            "INSERT INTO tbay_executions (id, key, tool_name, tenant, agent, policy_name, fingerprint,"
            " canonical_args, args, attempt, retry_number, status, created_at, started_at,"
            " lease_expires_at, owner, approval_reason, approval_deadline, budget_amount, links)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                execution_id, request.key, request.tool_name, request.tenant, request.agent,
                request.policy.name, request.fingerprint, request.canonical_args, request.args_json,
                attempt, retry_number, status, self.now, self.now if status == RUNNING else None,
                lease_expires_at, request.owner, approval_reason, approval_deadline,
                request.budget_amount, request.links_json,
            ),
        )

    def point_key(self, key: str, execution_id: str) -> None:
        self.conn.execute(
            "INSERT INTO tbay_keys (key, execution_id) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET execution_id = excluded.execution_id",
            (key, execution_id),
        )

    def end_execution(self, execution_id: str, status: str, error_type: str, error_message: str) -> None:
        self.conn.execute(
            "UPDATE tbay_executions SET status = ?, error_type = ?, error_message = ?, finished_at = ?,"
            " lease_expires_at = NULL WHERE id = ? AND status IN (?, ?)",
            (status, error_type, error_message, self.now, execution_id, RUNNING, WAITING_APPROVAL),
        )

    def start_approved(self, execution_id: str, lease_expires_at: float, owner: str) -> bool:
        cursor = self.conn.execute(
            "UPDATE tbay_executions SET status = ?, started_at = ?, lease_expires_at = ?, owner = ?"
            " WHERE id = ? AND status = ? AND approved = 1",
            (RUNNING, self.now, lease_expires_at, owner, execution_id, WAITING_APPROVAL),
        )
        return cursor.rowcount == 1


class SQLiteStore(Store):
    """A :class:`Store` on one SQLite file, shared by threads and processes of one host."""

    def __init__(self, url: str, *, busy_timeout: float = 10.0):
        self.url = url
        self.path = sqlite_path_from_url(url)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory {directory!r} for SQLite database {url!r}: {exc}") from exc
        self._guard(self._migrate)

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
        conn.execute("PRAGMA foreign_keys = OFF")
        with self._connections_lock:
            self._connections.append(conn)
        self._local.conn = conn
        self._local.pid = self._pid
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        try:
            if local.pid == self._pid:
                return local.conn  # type: ignore[no-any-return]
        except AttributeError:
            pass
        if os.getpid() != self._pid:  # forked: never share the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            self._connections = []
        return self._connect()

    def _guard(self, operation: Callable[[], T]) -> T:
        """Run a store operation, turning raw SQLite errors into one clear :class:`StoreError`."""
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"SQLite database {self.path!r} stayed locked for {self.busy_timeout:g}s: another "
                    "process holds a long write transaction. Nothing was recorded for this call; retry it, "
                    "or use PostgreSQL when many processes write at once."
                ) from exc
            raise StoreError(f"SQLite database {self.path!r} failed: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite database {self.path!r} failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._conn()
        for attempt in range(50):
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:  # another process is switching it at this moment
                time.sleep(0.01 * (attempt + 1))
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tbay_schema_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM tbay_schema_version WHERE id = 1").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite database {self.path!r} has tbay schema version {current}, newer than this "
                    f"tbay ({SCHEMA_VERSION}); upgrade tbay"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO tbay_schema_version (id, version) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )

    # ------------------------------------------------------------------ hot path

    def read_head(self, key: str) -> tuple[HeadRecord | None, float]:
        try:
            row = self._conn().execute(_READ_HEAD_SQL, (key,)).fetchone()
        except sqlite3.Error:
            return self._guard(lambda: self._read_head_again(key))
        return (None if row is None else _head_from_row(row)), time.time()

    def _read_head_again(self, key: str) -> tuple[HeadRecord | None, float]:
        row = self._conn().execute(_READ_HEAD_SQL, (key,)).fetchone()
        return (None if row is None else _head_from_row(row)), time.time()

    def claim(self, request: ClaimRequest) -> ClaimOutcome:
        def operation() -> ClaimOutcome:
            with self._write() as conn:
                return run_claim(_SqliteClaim(conn, time.time()), request)

        return self._guard(operation)

    def finish(self, execution_id: str, *, status: str, result: str | None, replayable: bool,
               error_type: str | None, error_message: str | None, error_traceback: str | None,
               cache_ttl: float | None) -> bool:
        now = time.time()
        expires_at = None if cache_ttl is None else now + cache_ttl

        def operation() -> bool:
            cursor = self._conn().execute(
                "UPDATE tbay_executions SET status = ?, result = ?, replayable = ?, error_type = ?,"
                " error_message = ?, error_traceback = ?, finished_at = ?, expires_at = ?,"
                " lease_expires_at = NULL WHERE id = ? AND status = ?",
                (status, result, int(replayable), error_type, error_message, error_traceback, now,
                 expires_at, execution_id, RUNNING),
            )
            return cursor.rowcount == 1

        return self._guard(operation)

    def renew(self, execution_ids: Iterable[str], lease_timeout: float) -> None:
        ids = list(execution_ids)
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)

        def operation() -> None:
            self._conn().execute(
                f"UPDATE tbay_executions SET lease_expires_at = ? WHERE status = ? AND id IN ({marks})",
                (time.time() + lease_timeout, RUNNING, *ids),
            )

        self._guard(operation)

    def poll(self, execution_id: str) -> PollState | None:
        def operation() -> PollState | None:
            row = self._conn().execute(
                "SELECT status, lease_expires_at, approved, approval_deadline FROM tbay_executions"
                " WHERE id = ?",
                (execution_id,),
            ).fetchone()
            return None if row is None else PollState(row[0], row[1], bool(row[2]), row[3], time.time())

        return self._guard(operation)

    def record_replay(self, execution_id: str, tool_name: str, tenant: str | None, agent: str | None) -> None:
        """Write one audit row for a replay (only when the policy sets ``audit_replays``)."""
        self._guard(lambda: self._conn().execute(
            "INSERT INTO tbay_replays (execution_id, tool_name, tenant, agent, at) VALUES (?, ?, ?, ?, ?)",
            (execution_id, tool_name, tenant, agent, time.time()),
        ))

    def canonical_args(self, execution_id: str) -> str | None:
        row = self._guard(lambda: self._conn().execute(
            "SELECT canonical_args FROM tbay_executions WHERE id = ?", (execution_id,)
        ).fetchone())
        return None if row is None else row[0]

    # ------------------------------------------------------------------ operator side

    def get(self, execution_id: str) -> Execution | None:
        row = self._guard(lambda: self._conn().execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM tbay_executions WHERE id = ?", (execution_id,)
        ).fetchone())
        return None if row is None else _execution_from_row(row)

    def query(self, *, tool: str | None = None, status: str | None = None,
              tenant: str | None = None, limit: int | None = 100) -> list[Execution]:
        clauses, params = [], []
        for column, value in (("tool_name", tool), ("status", status), ("tenant", tenant)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_EXECUTION_COLUMNS} FROM tbay_executions{where} ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._guard(lambda: self._conn().execute(sql, params).fetchall())
        return [_execution_from_row(row) for row in rows]

    def decide_approval(self, execution_id: str, *, approve: bool, by: str | None,
                        reason: str | None) -> Execution:
        def operation() -> None:
            with self._write() as conn:
                now = time.time()
                row = conn.execute(
                    "SELECT status, approved, approval_deadline, tool_name FROM tbay_executions WHERE id = ?",
                    (execution_id,),
                ).fetchone()
                if row is None:
                    raise UnknownExecution(_unknown(execution_id))
                status, approved, deadline, tool = row
                verb = "approve" if approve else "reject"
                if status != WAITING_APPROVAL or approved:
                    state = "already approved" if approved and status == WAITING_APPROVAL else status
                    raise InvalidTransition(
                        f"cannot {verb} execution {execution_id} of tool '{tool}': it is {state}, "
                        "not waiting for approval. Nothing was changed; see `tbay show "
                        f"{execution_id}`."
                    )
                if deadline is not None and now >= deadline:
                    conn.execute(
                        "UPDATE tbay_executions SET status = ?, finished_at = ?, error_type = ?,"
                        " error_message = ? WHERE id = ?",
                        (EXPIRED, now, "ApprovalTimeout",
                         "nobody approved or rejected the call before its approval timeout", execution_id),
                    )
                    return
                if approve:
                    conn.execute(
                        "UPDATE tbay_executions SET approved = 1, decided_by = ?, decision_reason = ?,"
                        " decided_at = ? WHERE id = ?",
                        (by, reason, now, execution_id),
                    )
                else:
                    conn.execute(
                        "UPDATE tbay_executions SET status = ?, decided_by = ?, decision_reason = ?,"
                        " decided_at = ?, finished_at = ?, error_type = ?, error_message = ? WHERE id = ?",
                        (REJECTED, by, reason, now, now, "ApprovalRejected",
                         f"rejected by {by or 'an operator'}: {reason or 'no reason given'}", execution_id),
                    )

        self._guard(operation)
        execution = self.get(execution_id)
        assert execution is not None
        if execution.status == EXPIRED:
            raise InvalidTransition(
                f"cannot {'approve' if approve else 'reject'} execution {execution_id} of tool "
                f"'{execution.tool_name}': its approval timed out, so it is now EXPIRED. The next "
                "identical call asks for approval again."
            )
        return execution

    def forget(self, execution_id: str) -> bool:
        def operation() -> bool:
            with self._write() as conn:
                row = conn.execute(
                    "SELECT status, tool_name FROM tbay_executions WHERE id = ?", (execution_id,)
                ).fetchone()
                if row is None:
                    raise UnknownExecution(_unknown(execution_id))
                if row[0] in ACTIVE_STATUSES:
                    raise InvalidTransition(
                        f"cannot forget execution {execution_id} of tool '{row[1]}': it is {row[0]}. "
                        "Forgetting it now could run the call twice; wait for it to end, or reject it."
                    )
                cursor = conn.execute("DELETE FROM tbay_keys WHERE execution_id = ?", (execution_id,))
                return cursor.rowcount > 0

        return self._guard(operation)

    def set_pause(self, tool: str, *, paused: bool, reason: str | None, by: str | None) -> None:
        def operation() -> None:
            conn = self._conn()
            if paused:
                conn.execute(
                    "INSERT INTO tbay_controls (tool, reason, paused_by, since) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (tool) DO UPDATE SET reason = excluded.reason,"
                    " paused_by = excluded.paused_by, since = excluded.since",
                    (tool, reason, by, time.time()),
                )
            else:
                conn.execute("DELETE FROM tbay_controls WHERE tool = ?", (tool,))

        self._guard(operation)

    def controls(self) -> list[Control]:
        rows = self._guard(lambda: self._conn().execute(
            "SELECT tool, reason, paused_by, since FROM tbay_controls ORDER BY tool"
        ).fetchall())
        return [Control(*row) for row in rows]

    def purge(self, older_than: float, *, dry_run: bool = False) -> int:
        def operation() -> int:
            with self._write() as conn:
                now = time.time()
                conn.execute(
                    "DELETE FROM tbay_keys WHERE execution_id IN (SELECT id FROM tbay_executions"
                    f" WHERE status IN ({_ENDED_SQL}) AND (status = ? OR (expires_at IS NOT NULL AND expires_at <= ?)))",
                    (EXPIRED, now),
                )
                doomed = (
                    f"FROM tbay_executions WHERE status IN ({_ENDED_SQL})"
                    " AND COALESCE(finished_at, created_at) < ?"
                    " AND NOT EXISTS (SELECT 1 FROM tbay_keys k WHERE k.execution_id = tbay_executions.id)"
                )
                cutoff = now - older_than
                (count,) = conn.execute(f"SELECT COUNT(*) {doomed}", (cutoff,)).fetchone()
                if dry_run:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN")
                    return int(count)
                conn.execute(f"DELETE {doomed}", (cutoff,))
                conn.execute("DELETE FROM tbay_replays WHERE at < ?", (cutoff,))
                return int(count)

        return self._guard(operation)

    def stats(self) -> list[dict[str, Any]]:
        def operation() -> list[dict[str, Any]]:
            conn = self._conn()
            rows = conn.execute(
                "SELECT tool_name, COUNT(*),"
                f" SUM(status = '{SUCCEEDED}'), SUM(status IN ('{FAILED}', '{LOST}')),"
                f" SUM(status = '{RUNNING}'), SUM(status = '{WAITING_APPROVAL}' AND approved = 0),"
                f" SUM(status = '{REJECTED}')"
                " FROM tbay_executions GROUP BY tool_name ORDER BY tool_name"
            ).fetchall()
            replays = dict(conn.execute(
                "SELECT tool_name, COUNT(*) FROM tbay_replays GROUP BY tool_name"
            ).fetchall())
            result = []
            for tool, total, succeeded, failed, running, pending, rejected in rows:
                durations = [r[0] for r in conn.execute(
                    "SELECT finished_at - started_at FROM tbay_executions WHERE tool_name = ? AND"
                    " started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY created_at DESC LIMIT 10000",
                    (tool,),
                ).fetchall()]
                result.append({
                    "tool": tool, "executions": total, "succeeded": succeeded or 0,
                    "failed": failed or 0, "running": running or 0, "pending": pending or 0,
                    "rejected": rejected or 0, "replays": replays.get(tool, 0),
                    "durations": durations,
                })
            return result

        return self._guard(operation)

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()


def _unknown(execution_id: str) -> str:
    return (
        f"no execution has id {execution_id!r}; list executions with `tbay log` "
        "(ids are shown in the first column)"
    )
