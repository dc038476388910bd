"""The SQL both stores share: every statement and every operation, written once.

SQLite and PostgreSQL differ in how they connect, lock, report the database
clock and wake waiters; they do not differ in what they store or decide. So
:class:`SqlStore` holds all statements (written with ``?`` placeholders, turned
into ``%s`` for psycopg2) and all operations, and a subclass supplies the
plumbing: connections, transactions, the clock and per-key locks.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

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

HEAD_COLUMNS = (
    "e.id, e.status, e.attempt, e.retry_number, e.fingerprint, e.finished_at, e.lease_expires_at,"
    " e.replayable, e.approved, e.approval_deadline, e.tool_name, e.result, e.error_type,"
    " e.error_message, e.decided_by, e.decision_reason"
)
HEAD_FROM = "FROM tbay_keys k JOIN tbay_executions e ON e.id = k.execution_id WHERE k.key = ?"
READ_HEAD_SQL = f"SELECT {HEAD_COLUMNS} {HEAD_FROM}"

EXECUTION_COLUMNS = (
    "id, tool_name, tenant, agent, status, policy_name, attempt, args, error_type, error_message,"
    " created_at, started_at, finished_at, decided_by, decision_reason, key, replayable,"
    " error_traceback, lease_expires_at, approval_reason, approval_deadline, links, approved"
)
_ENDED = ", ".join(f"'{status}'" for status in sorted(ENDED_STATUSES))
_NOT_SPENT = f"'{REJECTED}', '{EXPIRED}'"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def execution_table_ddl(real: str, text_key: str = "TEXT") -> list[str]:
    """The tables and indexes of schema version 1, for a dialect's float type."""
    return [
        f"""CREATE TABLE IF NOT EXISTS tbay_executions (
            id {text_key} PRIMARY KEY,
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
            created_at {real} NOT NULL,
            started_at {real},
            finished_at {real},
            lease_expires_at {real},
            expires_at {real},
            owner TEXT,
            approved INTEGER NOT NULL DEFAULT 0,
            approval_reason TEXT,
            approval_deadline {real},
            decided_by TEXT,
            decision_reason TEXT,
            decided_at {real},
            budget_amount {real},
            links TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS tbay_executions_key ON tbay_executions (key)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_tool ON tbay_executions (tool_name, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_status ON tbay_executions (status, tool_name, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_tenant ON tbay_executions (tenant, created_at)",
        "CREATE INDEX IF NOT EXISTS tbay_executions_created ON tbay_executions (created_at)",
        "CREATE TABLE IF NOT EXISTS tbay_keys (key TEXT PRIMARY KEY, execution_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS tbay_keys_execution ON tbay_keys (execution_id)",
        f"""CREATE TABLE IF NOT EXISTS tbay_controls (
            tool TEXT PRIMARY KEY, reason TEXT, paused_by TEXT, since {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS tbay_replays (
            execution_id TEXT NOT NULL, tool_name TEXT NOT NULL, tenant TEXT, agent TEXT,
            at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS tbay_replays_tool ON tbay_replays (tool_name, at)",
    ]


class Cursor(Protocol):
    """The DB-API cursor subset the shared code uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """An open transaction: run one statement (``?`` placeholders) and get a cursor."""

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...


def head_from_row(row: Sequence[Any]) -> HeadRecord:
    """Build the decision's view of a key's execution from a ``HEAD_COLUMNS`` row."""
    head = Head(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), bool(row[8]), row[9])
    return HeadRecord(head, row[10], row[11], row[12], row[13], row[14], row[15])


def execution_from_row(row: Sequence[Any]) -> Execution:
    """Build an :class:`Execution` from an ``EXECUTION_COLUMNS`` row."""
    return Execution(
        id=row[0], tool_name=row[1], tenant=row[2], agent=row[3], status=row[4], policy_name=row[5],
        attempt=row[6], args=json.loads(row[7]) if row[7] else {}, error_type=row[8],
        error_message=row[9], created_at=to_datetime(row[10]), started_at=to_datetime(row[11]),
        finished_at=to_datetime(row[12]), decided_by=row[13], decision_reason=row[14], key=row[15],
        replayable=bool(row[16]), error_traceback=row[17], lease_expires_at=to_datetime(row[18]),
        approval_reason=row[19], approval_deadline=to_datetime(row[20]),
        links=json.loads(row[21]) if row[21] else {}, approved=bool(row[22]),
    )


def unknown_execution(execution_id: str) -> UnknownExecution:
    """The error for an id that names no execution."""
    return UnknownExecution(
        f"no execution has id {execution_id!r}; list executions with `tbay log` "
        "(ids are shown in the first column)"
    )


class _DryRun(Exception):
    """Raised inside a purge transaction to roll it back and report what it would have done."""

    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


class _Claim(ClaimTransaction):
    """The claim primitives over an open transaction of a :class:`SqlStore`."""

    def __init__(self, store: SqlStore, tx: Tx, now: float):
        self.store = store
        self.tx = tx
        self.now = now

    def load_head(self, key: str) -> HeadRecord | None:
        self.store.lock(self.tx, "key", key)
        row = self.tx(READ_HEAD_SQL, (key,)).fetchone()
        return None if row is None else head_from_row(row)

    def load_execution(self, execution_id: str) -> HeadRecord | None:
        row = self.tx(f"SELECT {HEAD_COLUMNS} FROM tbay_executions e WHERE e.id = ?", (execution_id,)).fetchone()
        return None if row is None else head_from_row(row)

    def guard_state(self, request: ClaimRequest) -> GuardState:
        tx, policy, now, same_tenant = self.tx, request.policy, self.now, self.store.null_safe_eq
        if policy.rate_limit or policy.max_concurrent or policy.budget:
            self.store.lock(tx, "tool", request.tool_name)
        paused = tx(
            "SELECT reason, paused_by FROM tbay_controls WHERE tool IN (?, ?) ORDER BY tool = ? LIMIT 1",
            (request.tool_name, ALL_TOOLS, ALL_TOOLS),
        ).fetchone()
        started, oldest, running, spent = 0, None, 0, 0.0
        if policy.rate_limit is not None:
            started, oldest = tx(
                f"SELECT COUNT(*), MIN(created_at) FROM tbay_executions WHERE tool_name = ? AND"
                f" tenant {same_tenant} ? AND created_at > ? AND status NOT IN ({_NOT_SPENT})",
                (request.tool_name, request.tenant, now - policy.rate_limit.per),
            ).fetchone()
        if policy.max_concurrent is not None:
            (running,) = tx(
                "SELECT COUNT(*) FROM tbay_executions WHERE status = ? AND tool_name = ?"
                " AND lease_expires_at > ?",
                (RUNNING, request.tool_name, now),
            ).fetchone()
        if policy.budget is not None:
            (spent,) = tx(
                f"SELECT COALESCE(SUM(budget_amount), 0) FROM tbay_executions WHERE tool_name = ? AND"
                f" tenant {same_tenant} ? AND created_at > ? AND status NOT IN ({_NOT_SPENT})",
                (request.tool_name, request.tenant, now - policy.budget.per),
            ).fetchone()
        return GuardState(
            paused=paused is not None,
            paused_reason=paused[0] if paused else None,
            paused_by=paused[1] if paused else None,
            started_in_window=int(started),
            oldest_start_in_window=oldest,
            running=int(running),
            budget_spent=float(spent),
        )

    def insert_execution(self, execution_id: str, request: ClaimRequest, *, status: str,
                         attempt: int, retry_number: int, lease_expires_at: float | None,
                         approval_reason: str | None, approval_deadline: float | None) -> None:
        self.tx(
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
        self.tx(
            "INSERT INTO tbay_keys (key, execution_id) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET execution_id = excluded.execution_id",
            (key, execution_id),
        )

    def end_execution(self, execution_id: str, status: str, error_type: str, error_message: str) -> None:
        self.tx(
            "UPDATE tbay_executions SET status = ?, error_type = ?, error_message = ?, finished_at = ?,"
            " lease_expires_at = NULL WHERE id = ? AND status IN (?, ?)",
            (status, error_type, error_message, self.now, execution_id, RUNNING, WAITING_APPROVAL),
        )
        self.store.notify(self.tx, execution_id)

    def start_approved(self, execution_id: str, lease_expires_at: float, owner: str) -> bool:
        cursor = self.tx(
            "UPDATE tbay_executions SET status = ?, started_at = ?, lease_expires_at = ?, owner = ?"
            " WHERE id = ? AND status = ? AND approved = 1",
            (RUNNING, self.now, lease_expires_at, owner, execution_id, WAITING_APPROVAL),
        )
        return cursor.rowcount == 1


class SqlStore(Store):
    """Every store operation in SQL; subclasses supply connections, transactions and the clock."""

    null_safe_eq = "IS"
    """The operator comparing two values where NULL equals NULL (``IS`` in SQLite)."""

    # ------------------------------------------------------------------ plumbing (subclasses)

    @abstractmethod
    def guarded_write(self, operation: Callable[[Tx], Any]) -> Any:
        """Run ``operation`` in one write transaction (committed on success, rolled back on error)."""

    @abstractmethod
    def run(self, operation: Callable[[Tx], Any]) -> Any:
        """Run ``operation`` with a one-statement autocommit executor, errors made readable."""

    @abstractmethod
    def clock(self, tx: Tx) -> float:
        """The database's clock, in epoch seconds."""

    def lock(self, tx: Tx, kind: str, name: str) -> None:
        """Serialise claims on one key (``kind="key"``) or one tool's guardrails (``"tool"``).

        SQLite's ``BEGIN IMMEDIATE`` already serialises every writer, so the default does nothing.
        """

    def notify(self, tx: Tx, execution_id: str) -> None:
        """Tell waiters in other processes that ``execution_id`` changed (PostgreSQL: NOTIFY)."""

    def apply_migrations(self, tx: Tx, migrations: dict[int, list[str]], where: str) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` inside the caller's transaction.

        The caller serialises concurrent starters (SQLite's write lock, a
        PostgreSQL advisory lock), so every statement runs once.
        """
        tx(
            "CREATE TABLE IF NOT EXISTS tbay_schema_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " version INTEGER NOT NULL)"
        )
        row = tx("SELECT version FROM tbay_schema_version WHERE id = 1").fetchone()
        current = row[0] if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{where} has tbay schema version {current}, newer than this tbay "
                f"({SCHEMA_VERSION}); upgrade tbay"
            )
        if current == SCHEMA_VERSION:
            return
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in migrations[version]:
                tx(statement)
        tx(
            "INSERT INTO tbay_schema_version (id, version) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )

    # ------------------------------------------------------------------ hot path and claims

    def claim(self, request: ClaimRequest) -> ClaimOutcome:
        return self.guarded_write(lambda tx: run_claim(_Claim(self, tx, self.clock(tx)), request))

    def finish(self, execution_id: str, *, status: str, result: str | None, replayable: bool,
               error_type: str | None, error_message: str | None, error_traceback: str | None,
               cache_ttl: float | None) -> bool:
        """Record the outcome of a RUNNING execution, or of a LOST one that still holds its key.

        A stalled owner declared LOST whose key no newer attempt took (after_crash
        ``fail``) records what really happened; once another attempt holds the
        key, the stale owner is fenced out and nothing is written.
        """

        def operation(tx: Tx) -> bool:
            now = self.clock(tx)
            cursor = tx(
                "UPDATE tbay_executions SET status = ?, result = ?, replayable = ?, error_type = ?,"
                " error_message = ?, error_traceback = ?, finished_at = ?, expires_at = ?,"
                " lease_expires_at = NULL WHERE id = ? AND (status = ? OR (status = ? AND EXISTS"
                " (SELECT 1 FROM tbay_keys k WHERE k.execution_id = tbay_executions.id)))",
                (status, result, int(replayable), error_type, error_message, error_traceback, now,
                 None if cache_ttl is None else now + cache_ttl, execution_id, RUNNING, LOST),
            )
            self.notify(tx, execution_id)
            return cursor.rowcount == 1

        return bool(self.guarded_write(operation))

    def renew(self, execution_ids: Iterable[str], lease_timeout: float) -> None:
        ids = list(execution_ids)
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)

        def operation(tx: Tx) -> None:
            tx(
                f"UPDATE tbay_executions SET lease_expires_at = ? WHERE status = ? AND id IN ({marks})",
                (self.clock(tx) + lease_timeout, RUNNING, *ids),
            )

        self.guarded_write(operation)

    def poll(self, execution_id: str) -> PollState | None:
        def operation(tx: Tx) -> PollState | None:
            row = tx(
                "SELECT status, lease_expires_at, approved, approval_deadline FROM tbay_executions"
                " WHERE id = ?",
                (execution_id,),
            ).fetchone()
            return None if row is None else PollState(row[0], row[1], bool(row[2]), row[3], self.clock(tx))

        return self.run(operation)  # type: ignore[no-any-return]

    def record_replay(self, execution_id: str, tool_name: str, tenant: str | None, agent: str | None) -> None:
        self.run(lambda tx: tx(
            "INSERT INTO tbay_replays (execution_id, tool_name, tenant, agent, at) VALUES (?, ?, ?, ?, ?)",
            (execution_id, tool_name, tenant, agent, self.clock(tx)),
        ))

    def canonical_args(self, execution_id: str) -> str | None:
        row = self.run(lambda tx: tx(
            "SELECT canonical_args FROM tbay_executions WHERE id = ?", (execution_id,)
        ).fetchone())
        return None if row is None else row[0]

    # ------------------------------------------------------------------ operator side

    def get(self, execution_id: str) -> Execution | None:
        row = self.run(lambda tx: tx(
            f"SELECT {EXECUTION_COLUMNS} FROM tbay_executions WHERE id = ?", (execution_id,)
        ).fetchone())
        return None if row is None else execution_from_row(row)

    def query(self, *, tool: str | None = None, status: str | None = None,
              tenant: str | None = None, limit: int | None = 100) -> list[Execution]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("tool_name", tool), ("status", status), ("tenant", tenant)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {EXECUTION_COLUMNS} FROM tbay_executions{where} ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.run(lambda tx: tx(sql, params).fetchall())
        return [execution_from_row(row) for row in rows]

    def decide_approval(self, execution_id: str, *, approve: bool, by: str | None,
                        reason: str | None) -> Execution:
        verb = "approve" if approve else "reject"

        def refuse(state: str, tool: str) -> InvalidTransition:
            return InvalidTransition(
                f"cannot {verb} execution {execution_id} of tool '{tool}': it is {state}, not "
                f"waiting for approval. Nothing was changed; see `tbay show {execution_id}`."
            )

        # Every UPDATE re-checks "still undecided": a concurrent approve, reject or start
        # (PostgreSQL, READ COMMITTED) makes it match nothing, never overwrite.
        undecided = f" WHERE id = ? AND status = '{WAITING_APPROVAL}' AND approved = 0"

        def operation(tx: Tx) -> None:
            now = self.clock(tx)
            row = tx(
                "SELECT status, approved, approval_deadline, tool_name FROM tbay_executions WHERE id = ?",
                (execution_id,),
            ).fetchone()
            if row is None:
                raise unknown_execution(execution_id)
            status, approved, deadline, tool = row
            if status != WAITING_APPROVAL or approved:
                raise refuse("already approved" if approved and status == WAITING_APPROVAL else status, tool)
            if deadline is not None and now >= deadline:
                cursor = tx(
                    "UPDATE tbay_executions SET status = ?, finished_at = ?, error_type = ?,"
                    " error_message = ?" + undecided,
                    (EXPIRED, now, "ApprovalTimeout",
                     "nobody approved or rejected the call before its approval timeout", execution_id),
                )
            elif approve:
                cursor = tx(
                    "UPDATE tbay_executions SET approved = 1, decided_by = ?, decision_reason = ?,"
                    " decided_at = ?" + undecided,
                    (by, reason, now, execution_id),
                )
            else:
                cursor = tx(
                    "UPDATE tbay_executions SET status = ?, decided_by = ?, decision_reason = ?,"
                    " decided_at = ?, finished_at = ?, error_type = ?, error_message = ?" + undecided,
                    (REJECTED, by, reason, now, now, "ApprovalRejected",
                     f"rejected by {by or 'an operator'}: {reason or 'no reason given'}", execution_id),
                )
            if cursor.rowcount != 1:
                raise refuse("no longer waiting (decided or started a moment ago)", tool)
            self.notify(tx, execution_id)

        self.guarded_write(operation)
        execution = self.get(execution_id)
        assert execution is not None
        if execution.status == EXPIRED:
            raise InvalidTransition(
                f"cannot {verb} execution {execution_id} of tool '{execution.tool_name}': its approval "
                "timed out, so it is now EXPIRED. The next identical call asks for approval again."
            )
        return execution

    def forget(self, execution_id: str) -> bool:
        def operation(tx: Tx) -> bool:
            row = tx("SELECT status, tool_name FROM tbay_executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                raise unknown_execution(execution_id)
            if row[0] in ACTIVE_STATUSES:
                raise InvalidTransition(
                    f"cannot forget execution {execution_id} of tool '{row[1]}': it is {row[0]}. "
                    "Forgetting it now could run the call twice; wait for it to end, or reject it."
                )
            return tx("DELETE FROM tbay_keys WHERE execution_id = ?", (execution_id,)).rowcount > 0

        return bool(self.guarded_write(operation))

    def set_pause(self, tool: str, *, paused: bool, reason: str | None, by: str | None) -> None:
        def operation(tx: Tx) -> None:
            if paused:
                tx(
                    "INSERT INTO tbay_controls (tool, reason, paused_by, since) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (tool) DO UPDATE SET reason = excluded.reason,"
                    " paused_by = excluded.paused_by, since = excluded.since",
                    (tool, reason, by, self.clock(tx)),
                )
            else:
                tx("DELETE FROM tbay_controls WHERE tool = ?", (tool,))

        self.run(operation)

    def controls(self) -> list[Control]:
        rows = self.run(lambda tx: tx(
            "SELECT tool, reason, paused_by, since FROM tbay_controls ORDER BY tool"
        ).fetchall())
        return [Control(*row) for row in rows]

    def purge(self, older_than: float, *, dry_run: bool = False) -> int:
        """Delete ended executions older than ``older_than`` seconds, expired keys and old replays.

        Rows nobody will ever finish are ended first: a request past its
        approval deadline becomes EXPIRED and a RUNNING row whose lease lapsed
        before the cutoff becomes LOST (its key stays, so a mutating call is not
        run again). The outcome a live key still replays is never deleted.
        A dry run does the same inside a transaction it rolls back.
        """

        def operation(tx: Tx) -> int:
            now = self.clock(tx)
            cutoff = now - older_than
            tx(
                f"UPDATE tbay_executions SET status = '{EXPIRED}', finished_at = approval_deadline,"
                " error_type = 'ApprovalTimeout', error_message = 'nobody approved or rejected the"
                f" call before its approval timeout' WHERE status = '{WAITING_APPROVAL}'"
                " AND approved = 0 AND approval_deadline < ?",
                (cutoff,),
            )
            tx(
                f"UPDATE tbay_executions SET status = '{LOST}', finished_at = lease_expires_at,"
                " lease_expires_at = NULL, error_type = 'OwnerLost', error_message = 'the process"
                " running this call stopped renewing its lease and nobody recovered it'"
                f" WHERE status = '{RUNNING}' AND lease_expires_at < ?",
                (cutoff,),
            )
            # stated positively, so a key a concurrent claim just repointed is never matched
            tx(
                "DELETE FROM tbay_keys WHERE execution_id IN (SELECT id FROM tbay_executions WHERE"
                f" status = '{EXPIRED}' OR (status IN ({_ENDED}) AND expires_at IS NOT NULL"
                " AND expires_at <= ?))",
                (now,),
            )
            cursor = tx(
                f"DELETE FROM tbay_executions WHERE status IN ({_ENDED})"
                " AND COALESCE(finished_at, created_at) < ?"
                " AND NOT EXISTS (SELECT 1 FROM tbay_keys k WHERE k.execution_id = tbay_executions.id)",
                (cutoff,),
            )
            tx("DELETE FROM tbay_replays WHERE at < ?", (cutoff,))
            if dry_run:
                raise _DryRun(cursor.rowcount)
            return int(cursor.rowcount)

        try:
            return int(self.guarded_write(operation))
        except _DryRun as dry:
            return dry.count

    def stats(self) -> list[dict[str, Any]]:
        def operation(tx: Tx) -> list[dict[str, Any]]:
            rows = tx(
                f"SELECT tool_name, COUNT(*), {_count(f'status = {SUCCEEDED!r}')},"
                f" {_count(f'status IN ({FAILED!r}, {LOST!r})')}, {_count(f'status = {RUNNING!r}')},"
                f" {_count(f'status = {WAITING_APPROVAL!r} AND approved = 0 AND approval_deadline > ?')},"
                f" {_count(f'status = {REJECTED!r}')}"
                " FROM tbay_executions GROUP BY tool_name ORDER BY tool_name",
                (self.clock(tx),),
            ).fetchall()
            replays = dict(tx("SELECT tool_name, COUNT(*) FROM tbay_replays GROUP BY tool_name").fetchall())
            result = []
            for tool, total, succeeded, failed, running, pending, rejected in rows:
                durations = [float(r[0]) for r in tx(
                    "SELECT finished_at - started_at FROM tbay_executions WHERE tool_name = ? AND"
                    " started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY created_at DESC LIMIT 10000",
                    (tool,),
                ).fetchall()]
                result.append({
                    "tool": tool, "executions": int(total), "succeeded": int(succeeded or 0),
                    "failed": int(failed or 0), "running": int(running or 0),
                    "pending": int(pending or 0), "rejected": int(rejected or 0),
                    "replays": int(replays.get(tool, 0)), "durations": durations,
                })
            return result

        return self.run(operation)  # type: ignore[no-any-return]


def iter_statements(statements: Iterable[str]) -> Iterator[str]:
    """Statements with surrounding whitespace trimmed (for logging migrations)."""
    return (statement.strip() for statement in statements)
