"""PostgreSQL-specific behaviour, on a real server and real processes.

The general behaviour suite already runs on PostgreSQL through conftest's
parametrised ``db_url``; this module covers what only the shared store has:
connection errors and URL handling, ``?schema=``, concurrent migrations,
LISTEN/NOTIFY wake-ups across processes, a server restart, connections killed
under the pool, a many-process stress run, and the CLI against PostgreSQL.

Children are real interpreters (``python -m tests.pg_workers``). Nothing asserts
on time: timeouts only keep a broken build from hanging; waits are for
observable facts (a file exists, a backend waits on a lock).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from pgserver import PgServer

from tbay_core import ExecutionFailed, StoreError, TbayClient, UnknownExecution
from tbay_core.store.sql import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("tbay_test_pg_workers", Path(__file__).with_name("pg_workers.py"))
assert _spec is not None and _spec.loader is not None
pg_workers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg_workers)

HANG_GUARD = 30.0
"""Upper bound on any wait in this file; reached only when something is broken."""

PUSH_GUARD = 10.0
"""Hang guard for a waiter in another process to answer once the change it waits for is made.

Only a guard: a waiter whose back-off has reached 2 s would still answer within it by polling.
What proves the push is observed, not timed: the waiter's LISTEN hears the execution's NOTIFY,
and its last re-read follows a fired wake-up future rather than an expired wait (see
``pg_workers.spy_on_waits``); with LISTEN switched off both checks fail."""

TBAY_TABLES = {"tbay_executions", "tbay_keys", "tbay_controls", "tbay_replays", "tbay_schema_version"}

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses POSIX processes and pg_ctl")


# --------------------------------------------------------------------------- harness


@contextlib.contextmanager
def admin(url: str, *, autocommit: bool = True) -> Iterator[Any]:
    """A plain psycopg2 connection to the database of ``url`` (its ``?schema=`` dropped)."""
    conn = psycopg2.connect(url.split("?", 1)[0], connect_timeout=5)
    conn.autocommit = autocommit
    try:
        yield conn
    finally:
        conn.close()


def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with admin(url) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def schema_of(url: str) -> str:
    return url.rsplit("?schema=", 1)[1]


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = HANG_GUARD,
               watch: tuple[Child, ...] = ()) -> None:
    """Poll ``condition`` (a hang guard, not a timing assertion); fail early if a child died."""
    deadline = time.monotonic() + timeout
    while not condition():
        for child in watch:
            if child.proc.poll() is not None:
                pytest.fail(f"waiting for {what}: {child.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.002)


def in_thread(fn: Callable[[], Any]) -> Future[Any]:
    """Run a blocking call on a daemon thread; its value or exception lands in the future."""
    future: Future[Any] = Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the test thread
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def child_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TBAY_DB_URL"] = url
    env.pop("TBAY_POLICY_FILE", None)
    return env


class Child:
    """One ``python -m tests.pg_workers`` process; it prints one JSON answer and exits."""

    def __init__(self, url: str, tmp_path: Path, name: str, mode: str, options: dict[str, Any]):
        self.name = name
        self.stdout_path = tmp_path / f"{name}.stdout"
        self.stderr_path = tmp_path / f"{name}.stderr"
        argv = [sys.executable, "-m", "tests.pg_workers", mode]
        for option, value in options.items():
            argv += [f"--{option.replace('_', '-')}", str(value)]
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(argv, env=child_env(url), cwd=REPO_ROOT, stdout=stdout,
                                         stderr=stderr, stdin=subprocess.DEVNULL)

    def describe(self) -> str:
        return (f"child {self.name} (pid {self.proc.pid}, exit {self.proc.poll()}), stderr:\n"
                f"{self.stderr_path.read_text()}")

    def answer(self, timeout: float = HANG_GUARD) -> dict[str, Any]:
        """The child's JSON answer, once it exited cleanly within ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no answer within {timeout:g}s from {self.describe()}")
        assert code == 0, self.describe()
        lines = self.stdout_path.read_text().splitlines()
        assert len(lines) == 1, f"expected one answer line, got {lines!r}; {self.describe()}"
        return json.loads(lines[0])  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG_GUARD)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start children; any still running at the end of the test is killed."""
    children: list[Child] = []

    def start(url: str, mode: str, *, name: str, **options: Any) -> Child:
        child = Child(url, tmp_path, name, mode, options)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """The file every body run, in any process, appends one line to."""
    return tmp_path / "events.jsonl"


def runs(events: Path, tool: str | None = None) -> list[dict[str, Any]]:
    return [run for run in pg_workers.read_lines(events) if tool is None or run["tool"] == tool]


def running_rows(url: str) -> list[tuple[Any, ...]]:
    schema = schema_of(url)
    return fetch(url, f'SELECT id, tool_name, key FROM "{schema}".tbay_executions WHERE status = %s',
                 ("RUNNING",))


def assert_store_error(exc: BaseException, url: str, *, secret: str = PgServer.password) -> str:
    """A tbay StoreError naming the masked URL, with no password and no raw driver error chained."""
    assert type(exc) is StoreError, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    assert not isinstance(exc, psycopg2.Error)
    message = str(exc)
    assert secret not in message
    assert "***" in message
    assert url.split("?", 1)[0].replace(f":{secret}@", ":***@") in message
    assert exc.__cause__ is None and exc.__suppress_context__, "the driver error leaks into the traceback"
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "psycopg2.OperationalError" not in formatted and secret not in formatted
    return message


# --------------------------------------------------------------------------- 1. bad URLs


def _url(server: PgServer, *, password: str | None = None, port: int | None = None,
         database: str = "postgres", scheme: str = "postgresql") -> str:
    return (f"{scheme}://postgres:{password or server.password}@127.0.0.1:{port or server.port}"
            f"/{database}")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("case", ["wrong_password", "unreachable", "missing_database"])
def test_bad_connection_is_a_store_error_naming_the_masked_url(pg_server: PgServer, case: str) -> None:
    wrong = "Wr0ng-Passw0rd-" + uuid.uuid4().hex[:6]
    url, secret, expected = {
        "wrong_password": (_url(pg_server, password=wrong), wrong, "password authentication failed"),
        "unreachable": (_url(pg_server, port=_closed_port()), pg_server.password, "refused"),
        "missing_database": (_url(pg_server, database="no_such_db"), pg_server.password,
                             'database "no_such_db" does not exist'),
    }[case]
    with pytest.raises(StoreError) as info:
        TbayClient(url)
    message = assert_store_error(info.value, url, secret=secret)
    assert expected in message
    assert "PostgreSQL" in message


def test_postgres_scheme_is_accepted_like_postgresql(pg_server: PgServer, events: Path) -> None:
    url = f"{_url(pg_server, scheme='postgres')}?schema=t_{uuid.uuid4().hex[:12]}"
    with TbayClient(url) as client:
        tool = pg_workers.make_tool(client, tool="scheme_tool", policy="mutating", events=events)
        value = tool("a")
        assert tool("a") == value
        assert "***" in repr(client) and pg_server.password not in repr(client)
    with TbayClient(url.replace("postgres://", "postgresql://", 1)) as same:
        assert [e.status for e in same.executions(tool="scheme_tool")] == ["SUCCEEDED"]
    assert len(runs(events)) == 1


def test_password_given_as_query_parameter_is_masked_too(pg_server: PgServer) -> None:
    wrong = "Wr0ng-Query-Passw0rd"
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres?password={wrong}"
    with pytest.raises(StoreError) as info:
        TbayClient(url)
    assert "password authentication failed" in str(info.value)
    assert wrong not in str(info.value)


def test_libpq_options_parameter_passes_through(pg_server: PgServer) -> None:
    url = f"{pg_server.base_url}?options=-c%20work_mem%3D7777kB"
    with TbayClient(url) as client:
        assert client.store.run(lambda tx: tx("SHOW work_mem").fetchone()[0]) == "7777kB"


def test_libpq_options_parameter_is_kept_with_schema(pg_server: PgServer) -> None:
    url = f"{pg_server.base_url}?options=-c%20work_mem%3D7777kB&schema=t_{uuid.uuid4().hex[:12]}"
    with TbayClient(url) as client:
        assert client.store.run(lambda tx: tx("SHOW work_mem").fetchone()[0]) == "7777kB"


# --------------------------------------------------------------------------- 2. schemas


def _tbay_tables(url: str, schema: str) -> set[str]:
    rows = fetch(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                 " AND table_name LIKE 'tbay\\_%%'", (schema,))
    return {row[0] for row in rows}


@pytest.mark.parametrize("schema", ["t_plain", "Tbay-Mixed_Case"])
def test_schema_parameter_puts_the_tables_in_that_schema(pg_server: PgServer, events: Path,
                                                         schema: str) -> None:
    schema = f"{schema}_{uuid.uuid4().hex[:8]}"
    url = f"{pg_server.base_url}?schema={schema}"
    public_before = _tbay_tables(url, "public")
    with TbayClient(url) as client:
        tool = pg_workers.make_tool(client, tool="schema_tool", policy="mutating", events=events)
        tool("a")
        assert client.store.run(lambda tx: tx("SELECT current_schema()").fetchone()[0]) == schema
    assert _tbay_tables(url, schema) == TBAY_TABLES
    assert _tbay_tables(url, "public") == public_before, "tables leaked into public"
    rows = fetch(url, f'SELECT tool_name, status FROM "{schema.replace(chr(34), chr(34) * 2)}".tbay_executions')
    assert rows == [("schema_tool", "SUCCEEDED")]


def test_two_schemas_of_one_database_do_not_see_each_other(pg_server: PgServer, events: Path) -> None:
    url_a, url_b = pg_server.fresh_url(), pg_server.fresh_url()
    with TbayClient(url_a) as a, TbayClient(url_b) as b:
        tool_a = pg_workers.make_tool(a, tool="shared_name", policy="mutating", events=events)
        tool_b = pg_workers.make_tool(b, tool="shared_name", policy="mutating", events=events)
        value_a = tool_a("same-arg")
        value_b = tool_b("same-arg")
        assert value_a != value_b, "schema B replayed schema A's result"
        assert tool_a("same-arg") == value_a and tool_b("same-arg") == value_b
        ids_a = {e.id for e in a.executions()}
        ids_b = {e.id for e in b.executions()}
        assert len(ids_a) == len(ids_b) == 1 and not ids_a & ids_b
        with pytest.raises(UnknownExecution):
            b.get(next(iter(ids_a)))
        a.pause("shared_name", reason="only in A")
        assert [c.tool for c in a.paused()] == ["shared_name"] and b.paused() == []
        assert tool_b("other-arg")  # not paused in B
    assert len(runs(events)) == 3


@pytest.mark.parametrize("schema", ["with space", "back\\slash"])
def test_schema_name_needing_libpq_escapes_is_used_exactly(own_database: str, events: Path,
                                                            schema: str) -> None:
    url = f"{own_database}?schema={urllib.parse.quote(schema)}"
    with TbayClient(url) as client:
        pg_workers.make_tool(client, tool="odd_schema_tool", policy="mutating", events=events)("a")
    assert _tbay_tables(url, schema) == TBAY_TABLES
    assert _tbay_tables(url, "public") == set()


# --------------------------------------------------------------------------- 3. migrations


def test_concurrent_first_start_migrates_once(pg_server: PgServer, tmp_path: Path, events: Path,
                                              spawn: Callable[..., Child]) -> None:
    url = pg_server.fresh_url()  # a schema nobody created yet
    schema = schema_of(url)
    go = tmp_path / "go"
    children = [
        spawn(url, "call", name=f"migrate{i}", events=events, tool="migrate_tool", arg="one-key",
              ready=tmp_path / f"ready{i}", go=go)
        for i in range(8)
    ]
    wait_until(lambda: all((tmp_path / f"ready{i}").exists() for i in range(8)), "all children ready",
               watch=tuple(children))
    go.touch()  # every child now creates its TbayClient (and migrates) at once
    answers = [child.answer() for child in children]
    assert all(answer["ok"] for answer in answers), answers
    body = runs(events)
    assert len(body) == 1, body
    assert {answer["value"] for answer in answers} == {body[0]["value"]}
    assert fetch(url, f'SELECT id, version FROM "{schema}".tbay_schema_version') == [(1, SCHEMA_VERSION)]
    assert _tbay_tables(url, schema) == TBAY_TABLES


# --------------------------------------------------------------------------- 4. push, not poll


def _spied(spy: Path) -> list[dict[str, Any]]:
    return pg_workers.read_lines(spy)  # type: ignore[no-any-return]


def test_follower_in_another_process_is_woken_by_notify(pg_url: str, tmp_path: Path, events: Path,
                                                        spawn: Callable[..., Child]) -> None:
    started, release, spy = tmp_path / "started", tmp_path / "release", tmp_path / "spy.jsonl"
    with TbayClient(pg_url) as client:
        owner = pg_workers.make_tool(client, tool="push_tool", policy="mutating", events=events,
                                     started=started, release=release)
        owned = in_thread(lambda: owner("k"))
        pg_workers.wait_for_file(started)
        follower = spawn(pg_url, "call", name="follower", events=events, tool="push_tool", arg="k",
                         poll_cap=30, spy=spy)
        # Twelve re-reads: its back-off has doubled from 1 ms to over 2 s, growing to 30 s, so
        # from here polling alone would leave it sleeping through the owner's finish.
        wait_until(lambda: len(_spied(spy)) >= 12, "the follower to wait on the owner",
                   watch=(follower,))
        assert {line["status"] for line in _spied(spy)} == {"RUNNING"}
        release.touch()
        value = owned.result(HANG_GUARD)
        answer = follower.answer(PUSH_GUARD)
    assert answer["ok"], answer
    assert answer["value"] == value
    execution_id = _spied(spy)[0]["execution_id"]
    assert execution_id in answer["heard"], "the follower's LISTEN never delivered the owner's NOTIFY"
    last = _spied(spy)[-1]
    assert last["status"] == "SUCCEEDED"
    assert last["woken"], "the follower noticed the end by polling, not through its wake-up"
    assert [run["value"] for run in runs(events)] == [value]


def test_approval_waiter_in_another_process_is_released_by_approve(
    pg_url: str, tmp_path: Path, events: Path, spawn: Callable[..., Child]
) -> None:
    spy = tmp_path / "spy.jsonl"
    waiter = spawn(pg_url, "call", name="waiter", events=events, tool="gate_tool", policy="destructive",
                   arg="k", poll_cap=30, spy=spy)
    wait_until(lambda: len(_spied(spy)) >= 12, "the waiter to wait for approval", watch=(waiter,))
    assert {line["status"] for line in _spied(spy)} == {"WAITING_APPROVAL"}
    execution_id = _spied(spy)[0]["execution_id"]
    assert runs(events) == []
    with TbayClient(pg_url) as client:
        assert [e.id for e in client.pending()] == [execution_id]
        client.approve(execution_id, by="tester", reason="looks fine")
        answer = waiter.answer(PUSH_GUARD)
        assert answer["ok"], answer
        execution = client.get(execution_id)
    assert [run["value"] for run in runs(events)] == [answer["value"]]
    assert execution.status == "SUCCEEDED" and execution.decided_by == "tester"
    assert execution_id in answer["heard"]
    last_waiting = [line for line in _spied(spy) if line["execution_id"] == execution_id][-1]
    assert last_waiting["approved"] and last_waiting["woken"], _spied(spy)


# --------------------------------------------------------------------------- 5. restarts


@pytest.fixture(scope="module")
def restartable(pg_server: PgServer) -> Iterator[PgServer]:
    """A server of this module's own, so stopping it disturbs no other test."""
    server = PgServer(pg_server.bindir)
    server.start()
    yield server
    server.remove()


@contextlib.contextmanager
def server_down(server: PgServer) -> Iterator[None]:
    """Stop the server (fast: connections are cut) and start it again on the same port."""
    server.stop()
    try:
        yield
    finally:
        server.start()


def test_calls_while_the_server_is_down_fail_clearly_and_the_client_recovers(
    restartable: PgServer, events: Path
) -> None:
    url = restartable.fresh_url()
    with TbayClient(url) as client:
        tool = pg_workers.make_tool(client, tool="restart_tool", policy="mutating", events=events)
        first = tool("a")
        assert tool("a") == first
        with server_down(restartable):
            for attempt in (lambda: tool("a"), lambda: tool("b"), client.executions, client.stats,
                            lambda: client.pause("restart_tool")):
                with pytest.raises(StoreError) as info:
                    attempt()
                assert_store_error(info.value, url)
        assert tool("a") == first, "a stored result was not replayed after the restart"
        second = tool("b")
        assert tool("b") == second
        with server_down(restartable):  # nothing runs while it is down: the pool holds a dead connection
            pass
        assert tool("a") == first and tool("b") == second
        assert client.paused() == []
        statuses = collections.Counter(e.status for e in client.executions(limit=None))
    assert statuses == {"SUCCEEDED": 2}
    assert collections.Counter(run["arg"] for run in runs(events)) == {"a": 1, "b": 1}


def test_owner_running_across_a_restart_records_its_outcome(restartable: PgServer, tmp_path: Path,
                                                            events: Path) -> None:
    url = restartable.fresh_url()
    started, release = tmp_path / "started", tmp_path / "release"
    with TbayClient(url) as client:
        owner = pg_workers.make_tool(client, tool="inflight_tool", policy="mutating", events=events,
                                     started=started, release=release)
        owned = in_thread(lambda: owner("x"))
        pg_workers.wait_for_file(started)
        with server_down(restartable):
            pass
        release.touch()  # the body ends after the server is back: recording reconnects by itself
        value = owned.result(HANG_GUARD)
        assert owner("x") == value  # replayed
        (execution,) = client.executions(tool="inflight_tool")
        assert execution.status == "SUCCEEDED"
    assert [run["value"] for run in runs(events)] == [value]
    assert running_rows(url) == []


def _owner_finishing_while_down(server: PgServer, tmp_path: Path, events: Path, client: TbayClient,
                                policy: str, stay_down: Callable[[], bool] = lambda: True,
                                ) -> tuple[str, Callable[[str], str]]:
    """Start an owner, stop the server, let the body return while it is down (so its outcome
    cannot be written), wait for ``stay_down()``, and start the server again.

    Returns the owner's value and the tool itself (a call of it that ran the body would show
    up in ``events``)."""
    started, release = tmp_path / "started", tmp_path / "release"
    owner = pg_workers.make_tool(client, tool="lost_tool", policy=policy, events=events,
                                 started=started, release=release)
    owned = in_thread(lambda: owner("y"))
    pg_workers.wait_for_file(started)
    with server_down(server):
        release.touch()
        value = owned.result(HANG_GUARD)  # the owner still gets its own function's value at once
        wait_until(stay_down, "the server's downtime to be long enough")
    return value, owner  # the release file exists now: calling it again never waits


def test_owner_finishing_while_the_server_is_down_records_its_outcome_once_back(
    restartable: PgServer, tmp_path: Path, events: Path
) -> None:
    url = restartable.fresh_url()
    with TbayClient(url) as client:
        value, plain = _owner_finishing_while_down(restartable, tmp_path, events, client, "mutating")
        # Nobody calls again: the engine itself records the outcome once the server is back.
        wait_until(lambda: not running_rows(url), "the outcome to be recorded after the restart")
        (execution,) = client.executions(tool="lost_tool")
        assert execution.status == "SUCCEEDED"
        assert plain("y") == value
    assert [run["value"] for run in runs(events)] == [value]
    assert running_rows(url) == []


def test_owner_whose_outcome_cannot_be_recorded_in_time_is_settled_by_after_crash(
    restartable: PgServer, tmp_path: Path, events: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = restartable.fresh_url()
    with TbayClient(url) as client:
        client.policies["short_mutating"] = client.policies["mutating"].copy(
            name="short_mutating", lease_timeout=1.0
        )

        def engine_gave_up() -> bool:
            return any("outcome not recorded" in record.getMessage() for record in caplog.records)

        value, plain = _owner_finishing_while_down(restartable, tmp_path, events, client,
                                                   "short_mutating", stay_down=engine_gave_up)
        # The database stayed away longer than the engine keeps retrying: the lease lapses and
        # after_crash ("fail" for mutating) settles the row at the next identical call. The body
        # never runs twice and the row does not stay RUNNING.
        with pytest.raises(ExecutionFailed) as info:
            plain("y")
        assert info.value.error_type == "OwnerLost"
        with pytest.raises(ExecutionFailed):
            plain("y")
        (execution,) = client.executions(tool="lost_tool")
        assert execution.status == "LOST"
    assert [run["value"] for run in runs(events)] == [value]
    assert running_rows(url) == []


def _listeners(url: str) -> list[int]:
    return [row[0] for row in fetch(
        url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
             " AND query = 'LISTEN tbay_events' AND pid <> pg_backend_pid()")]


def test_listen_connection_comes_back_after_a_restart(restartable: PgServer, tmp_path: Path,
                                                      events: Path, spawn: Callable[..., Child]) -> None:
    url = restartable.fresh_url()
    started, release, spy = tmp_path / "started", tmp_path / "release", tmp_path / "spy.jsonl"
    with TbayClient(url) as client:
        client.store.poll_interval_cap = 30
        heard = pg_workers.spy_on_waits(client, spy)
        wait_until(lambda: len(_listeners(url)) == 1, "the client to LISTEN")
        (before,) = _listeners(url)
        with server_down(restartable):
            pass
        wait_until(lambda: len(_listeners(url)) == 1, "the client to LISTEN again after the restart")
        assert _listeners(url) != [before]
        owner = spawn(url, "call", name="owner", events=events, tool="relisten_tool", arg="k",
                      started=started, release=release)
        pg_workers.wait_for_file(started)
        follower = pg_workers.make_tool(client, tool="relisten_tool", policy="mutating", events=events)
        followed = in_thread(lambda: follower("k"))
        wait_until(lambda: len(_spied(spy)) >= 12, "this process to wait on the owner", watch=(owner,))
        release.touch()
        answer = owner.answer()
        assert followed.result(PUSH_GUARD) == answer["value"]
    execution_id = _spied(spy)[0]["execution_id"]
    assert execution_id in heard, "the re-established LISTEN did not deliver the owner's NOTIFY"
    assert _spied(spy)[-1]["status"] == "SUCCEEDED" and _spied(spy)[-1]["woken"]
    assert [run["value"] for run in runs(events)] == [answer["value"]]


# --------------------------------------------------------------------------- 6. killed connections


@pytest.fixture
def own_database(pg_server: PgServer) -> Iterator[str]:
    """A database of this test's own, so killing every backend of it disturbs nobody else."""
    name = f"tbay_kill_{uuid.uuid4().hex[:10]}"
    with admin(pg_server.base_url) as conn, conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres:{pg_server.password}@127.0.0.1:{pg_server.port}/{name}"
    with admin(pg_server.base_url) as conn, conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TERMINATE_SQL = (
    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def terminate_backends(conn: Any) -> set[int]:
    """Kill every other backend of the database ``conn`` is on; return once they are gone."""
    with conn.cursor() as cursor:
        cursor.execute(TERMINATE_SQL)
        killed = {row[0] for row in cursor.fetchall()}

    def gone() -> bool:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(killed),))
            return not cursor.fetchall()

    wait_until(gone, f"backends {sorted(killed)} to exit")
    return killed


def test_killed_idle_connections_are_replaced(own_database: str, events: Path) -> None:
    with TbayClient(own_database) as client, admin(own_database) as killer:
        tool = pg_workers.make_tool(client, tool="kill_tool", policy="mutating", events=events)
        # Several threads at once first, so the pool may hold several idle connections.
        with_threads = [in_thread(lambda i=i: tool(f"warm{i}")) for i in range(8)]
        warm = [future.result(HANG_GUARD) for future in with_threads]
        values = {}
        for i in range(5):
            values[i] = tool(f"k{i}")
            assert terminate_backends(killer), "the client had no backend to kill"
            assert tool(f"k{i}") == values[i]  # replayed on a fresh connection
            assert client.get(client.executions(limit=1)[0].id).status == "SUCCEEDED"
        assert [tool(f"warm{i}") for i in range(8)] == warm
        assert [tool(f"k{i}") for i in range(5)] == [values[i] for i in range(5)]
    counts = collections.Counter(run["arg"] for run in runs(events))
    assert set(counts.values()) == {1} and len(counts) == 13


def _lock_waiters(conn: Any) -> list[int]:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND xact_start IS NOT NULL"
        )
        return [row[0] for row in cursor.fetchall()]


def test_connection_killed_inside_a_transaction_is_discarded(own_database: str, events: Path) -> None:
    with TbayClient(own_database) as client, admin(own_database, autocommit=False) as blocker:
        # A cap makes the claim lock its tool inside its transaction, so the test can hold the
        # claim there, kill its backend mid-transaction, then let the retry through.
        client.policies["capped"] = client.policies["mutating"].copy(name="capped", max_concurrent=100)
        tool = pg_workers.make_tool(client, tool="capped_tool", policy="capped", events=events)
        for round_ in range(3):
            with blocker.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("tbay:tool:capped_tool",))
            call = in_thread(lambda round_=round_: tool(f"k{round_}"))
            wait_until(lambda: bool(_lock_waiters(blocker)), "the claim to wait inside its transaction")
            (victim,) = _lock_waiters(blocker)
            killed = terminate_backends(blocker)
            assert victim in killed
            wait_until(lambda: bool(_lock_waiters(blocker)), "the claim to be retried")
            (retry,) = _lock_waiters(blocker)
            assert retry != victim
            blocker.commit()  # release the tool lock
            value = call.result(HANG_GUARD)
            assert tool(f"k{round_}") == value
        statuses = [e.status for e in client.executions(limit=None)]
    assert statuses == ["SUCCEEDED"] * 3
    assert collections.Counter(run["arg"] for run in runs(events)) == {"k0": 1, "k1": 1, "k2": 1}


def test_pool_reuses_connections_of_concurrent_threads(pg_url: str) -> None:
    with TbayClient(pg_url) as client:
        inside, outside = threading.Barrier(4), threading.Barrier(4)
        backends: set[int] = set()
        lock = threading.Lock()

        def operation(tx: Any) -> int:
            inside.wait(HANG_GUARD)  # four connections checked out at once
            return int(tx("SELECT pg_backend_pid()").fetchone()[0])

        def worker() -> None:
            for _ in range(5):
                pid = client.store.run(operation)
                with lock:
                    backends.add(pid)
                outside.wait(HANG_GUARD)  # all four returned before the next round

        threads = [in_thread(worker) for _ in range(4)]
        for thread in threads:
            thread.result(HANG_GUARD)
    assert len(backends) <= 4, f"{len(backends)} backends for 4 threads: connections are not reused"


# --------------------------------------------------------------------------- 7. stress


def test_many_processes_many_keys(pg_url: str, tmp_path: Path, events: Path,
                                  spawn: Callable[..., Child]) -> None:
    processes, calls = 16, 200
    go = tmp_path / "go"
    children = [
        spawn(pg_url, "stress", name=f"stress{i}", events=events, seed=i, calls=calls,
              mutating_keys=50, readonly_keys=50, ready=tmp_path / f"ready{i}", go=go)
        for i in range(processes)
    ]
    wait_until(lambda: all((tmp_path / f"ready{i}").exists() for i in range(processes)),
               "all children ready", watch=tuple(children), timeout=60)
    go.touch()
    answers = [child.answer(timeout=90) for child in children]

    body: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for run in runs(events):
        kind = "mutating" if run["tool"] == "stress_mutating" else "readonly"
        body[kind, run["arg"]].append(run["value"])
    seen: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    failures = []
    for answer in answers:
        assert len(answer["answers"]) == calls
        for kind, key, outcome in answer["answers"]:
            if outcome["ok"]:
                seen[kind, key].add(outcome["value"])
            else:
                failures.append((answer["pid"], kind, key, outcome))
    assert failures == []
    for (kind, key), values in seen.items():
        assert len(body[kind, key]) == 1, f"{kind} key {key} ran {len(body[kind, key])} times"
        assert values == set(body[kind, key]), f"{kind} key {key}: callers got {values}"
    assert set(body) == set(seen)
    with TbayClient(pg_url) as client:
        executions = client.executions(limit=None)
    assert collections.Counter(e.status for e in executions) == {"SUCCEEDED": len(seen)}
    assert running_rows(pg_url) == []


# --------------------------------------------------------------------------- 8. CLI


def test_cli_log_json_against_postgres(pg_url: str, events: Path) -> None:
    with TbayClient(pg_url) as client:
        tool = pg_workers.make_tool(client, tool="cli_tool", policy="mutating", events=events)
        tool("a")
        tool("b")
        made = {e.id: e for e in client.executions()}
    env = child_env(pg_url)
    env.pop("TBAY_DB_URL")
    result = subprocess.run(
        [sys.executable, "-m", "tbay_core.cli", "--db-url", pg_url, "log", "--json"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=HANG_GUARD,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["id"] for row in rows} == set(made)
    for row in rows:
        assert row["tool_name"] == "cli_tool" and row["status"] == "SUCCEEDED"
        assert row["args"] == made[row["id"]].args
    assert sorted(row["args"]["arg"] for row in rows) == ["a", "b"]


def test_cli_bad_postgres_url_is_one_masked_line(pg_server: PgServer) -> None:
    wrong = "Wr0ng-Cli-Passw0rd"
    url = _url(pg_server, password=wrong)
    env = child_env(url)
    env.pop("TBAY_DB_URL")
    result = subprocess.run(
        [sys.executable, "-m", "tbay_core.cli", "--db-url", url, "log", "--json"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=HANG_GUARD,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert wrong not in result.stderr and "***" in result.stderr
    assert "Traceback" not in result.stderr
    assert "password authentication failed" in result.stderr
