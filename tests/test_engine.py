"""The guarded-call pipeline on the sync path, against real SQLite files.

Every test drives ``@guarded`` functions through a real :class:`TbayClient`
(the ``client`` fixture: one fresh SQLite file per test) and checks what a
user relies on: how often the body ran, what the caller got back, and what
the audit log says. Nothing of tbay is mocked; no test asserts on speed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import inspect
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import pydantic
import pytest

from tbay_core import (
    ExecutionFailed,
    ExecutionTimeout,
    IdempotencyConflict,
    KeyDerivationError,
    PolicyError,
    ReentrantCall,
    ResultNotReplayable,
    TbayClient,
    ToolNameClash,
    UnknownExecution,
    guarded,
    scope,
)
from tbay_core.execution import Execution

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class Counter:
    """Counts body runs, thread-safely."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def bump(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


def db_path(db_url: str) -> str:
    return db_url[len("sqlite:///"):]


def query_db(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Read the test's database directly, with the driver itself (not through tbay)."""
    if db_url.startswith("sqlite:"):
        conn = sqlite3.connect(db_path(db_url))
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg2

    parts = urlsplit(db_url)
    query = parse_qsl(parts.query)
    schema = dict(query).get("schema")
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    options = {"options": f"-c search_path={schema}"} if schema else {}
    conn = psycopg2.connect(dsn, **options)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        conn.close()


def count_rows(db_url: str, table: str) -> int:
    return int(query_db(db_url, f"SELECT COUNT(*) FROM {table}")[0][0])


def dump_tables(db_url: str) -> str:
    """Every row of every tbay table, as text."""
    return repr([query_db(db_url, f"SELECT * FROM {table}") for table in
                 ("tbay_executions", "tbay_keys", "tbay_replays", "tbay_controls")])


def only_execution(client: TbayClient, tool: str) -> Execution:
    rows = client.executions(tool=tool)
    assert len(rows) == 1, rows
    return rows[0]


def wait_until_ended(client: TbayClient, execution_id: str, timeout: float = 10.0) -> Execution:
    """Poll the log until the execution leaves RUNNING/WAITING_APPROVAL (bounded, never a timing assert)."""
    deadline = time.monotonic() + timeout
    while True:
        execution = client.get(execution_id)
        if execution.status not in ("RUNNING", "WAITING_APPROVAL"):
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_id} still {execution.status} after {timeout}s")
        time.sleep(0.01)


def short_ttl(client: TbayClient, ttl: float = 0.3) -> None:
    client.policies["readonly"].cache_ttl = ttl


# ---------------------------------------------------------------------------
# replay, TTL, volatile
# ---------------------------------------------------------------------------


def test_readonly_result_replayed_inside_ttl_and_rerun_after(client: TbayClient) -> None:
    short_ttl(client, 0.3)
    runs = Counter()

    @guarded(client, policy="readonly")
    def search(query: str) -> dict:
        return {"query": query, "run": runs.bump()}

    first = search("tbay")
    assert search("tbay") == first == {"query": "tbay", "run": 1}
    assert runs.n == 1

    time.sleep(0.4)  # past the TTL
    again = search("tbay")
    assert again == {"query": "tbay", "run": 2}
    assert runs.n == 2
    assert search("tbay") == again  # the fresh result is cached in turn
    assert runs.n == 2
    assert [e.status for e in client.executions(tool="search")] == ["SUCCEEDED", "SUCCEEDED"]


def test_mutating_result_replayed_forever(client: TbayClient) -> None:
    short_ttl(client, 0.3)  # to make sure no readonly TTL leaks into mutating
    runs = Counter()

    @guarded(client)  # "mutating" is the default policy
    def create_ticket(title: str) -> dict:
        return {"title": title, "ticket": runs.bump()}

    first = create_ticket("printer on fire")
    time.sleep(0.4)
    assert create_ticket("printer on fire") == first
    assert create_ticket(title="printer on fire") == first
    assert runs.n == 1
    execution = only_execution(client, "create_ticket")
    assert execution.policy_name == "mutating"
    assert execution.status == "SUCCEEDED"


def test_volatile_runs_every_time_and_each_run_is_audited(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client, policy="volatile")
    def roll_dice(sides: int) -> int:
        return runs.bump()

    assert [roll_dice(6) for _ in range(3)] == [1, 2, 3]
    rows = client.executions(tool="roll_dice")
    assert len(rows) == 3
    assert {row.status for row in rows} == {"SUCCEEDED"}
    assert {row.policy_name for row in rows} == {"volatile"}
    assert all(row.args == {"sides": 6} for row in rows)


# ---------------------------------------------------------------------------
# keys: binding and tenants
# ---------------------------------------------------------------------------


def test_positional_keyword_and_default_spellings_are_one_call(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def add(a: int, b: int = 2) -> int:
        runs.bump()
        return a + b

    assert add(1, 2) == 3
    assert add(a=1, b=2) == 3
    assert add(1, b=2) == 3
    assert add(b=2, a=1) == 3
    assert add(1) == 3  # default applied
    assert runs.n == 1
    assert add(1, 3) == 4
    assert runs.n == 2


def test_tenant_from_scope_separates_keys_and_is_recorded(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def lookup(customer: str) -> tuple:
        return (customer, runs.bump())

    with scope(tenant="acme", agent="support-bot"):
        acme = lookup("c1")
        assert lookup("c1") == acme
    with scope(tenant="globex"):
        globex = lookup("c1")
    untenanted = lookup("c1")
    assert runs.n == 3
    assert len({acme, globex, untenanted}) == 3

    with scope(tenant="acme"):
        assert lookup("c1") == acme  # still replayed for acme
    assert runs.n == 3

    by_tenant = {e.tenant: e for e in client.executions(tool="lookup")}
    assert set(by_tenant) == {"acme", "globex", None}
    assert by_tenant["acme"].agent == "support-bot"
    assert [e.tenant for e in client.executions(tool="lookup", tenant="globex")] == ["globex"]


def lookup_order(order_id: str) -> dict:
    return {"order": order_id, "run": _order_runs.bump()}


_order_runs = Counter()


def test_tenant_from_guarded_separates_keys_and_wins_over_scope(client: TbayClient) -> None:
    _order_runs.n = 0
    acme = guarded(client, tenant="acme", tool_name="orders")(lookup_order)
    globex = guarded(client, tenant="globex", tool_name="orders")(lookup_order)
    scoped = guarded(client, tool_name="orders")(lookup_order)

    first = acme("o1")
    assert globex("o1") != first
    assert _order_runs.n == 2
    with scope(tenant="globex"):
        assert acme("o1") == first  # the decorator's tenant wins over the scope's
    with scope(tenant="acme"):
        assert scoped("o1") == first  # same tool name + tenant: the same key
    assert _order_runs.n == 2
    assert sorted(e.tenant for e in client.executions(tool="orders")) == ["acme", "globex"]


# ---------------------------------------------------------------------------
# failures and retries
# ---------------------------------------------------------------------------


class PaymentDeclined(Exception):
    """A custom failure whose qualified name must survive the audit log."""


def test_owner_gets_real_exception_and_later_callers_get_execution_failed(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def charge(amount: int) -> str:
        runs.bump()
        raise ValueError(f"amount {amount} too large")

    with pytest.raises(ValueError, match="amount 500 too large"):
        charge(500)
    with pytest.raises(ExecutionFailed) as info:
        charge(500)
    assert runs.n == 1
    failed = info.value
    assert failed.error_type == "ValueError"
    assert failed.error_message == "amount 500 too large"
    assert failed.tool_name == "charge"
    assert "charge" in str(failed) and "tbay forget" in str(failed)
    execution = client.get(failed.execution_id)
    assert execution.status == "FAILED"
    assert execution.error_type == "ValueError"
    assert execution.error_message == "amount 500 too large"
    assert execution.attempt == 1


def test_custom_exception_is_replayed_with_its_qualified_name(client: TbayClient) -> None:
    @guarded(client)
    def pay(card: str) -> None:
        raise PaymentDeclined("insufficient funds")

    with pytest.raises(PaymentDeclined):
        pay("visa")
    with pytest.raises(ExecutionFailed) as info:
        pay("visa")
    qualified = f"{PaymentDeclined.__module__}.{PaymentDeclined.__qualname__}"
    assert info.value.error_type == qualified
    assert info.value.error_message == "insufficient funds"
    assert client.get(info.value.execution_id).error_type == qualified


def test_readonly_retries_after_backoff_not_before_and_at_most_max_retries(client: TbayClient) -> None:
    # A backoff long enough that "immediately afterwards" is reliably inside it.
    client.policies["readonly"].max_retries = 2
    client.policies["readonly"].retry_backoff = 0.2
    runs = Counter()

    @guarded(client, policy="readonly")
    def flaky(x: int) -> int:
        raise ValueError(f"attempt {runs.bump()}")

    with pytest.raises(ValueError, match="attempt 1"):
        flaky(1)
    for expected_runs in (2, 3):
        with pytest.raises(ExecutionFailed) as info:  # inside the backoff: replayed, not re-run
            flaky(1)
        assert runs.n == expected_runs - 1
        assert info.value.error_message == f"attempt {expected_runs - 1}"
        time.sleep(0.25)
        with pytest.raises(ValueError, match=f"attempt {expected_runs}"):  # the retrying caller owns it
            flaky(1)
        assert runs.n == expected_runs

    time.sleep(0.25)  # retries are used up: never again, however long we wait (inside the TTL)
    with pytest.raises(ExecutionFailed) as info:
        flaky(1)
    assert runs.n == 3
    assert "no more retries" in str(info.value)
    assert info.value.error_message == "attempt 3"

    rows = sorted(client.executions(tool="flaky"), key=lambda e: e.attempt)
    assert [(e.attempt, e.status, e.error_message) for e in rows] == [
        (1, "FAILED", "attempt 1"),
        (2, "FAILED", "attempt 2"),
        (3, "FAILED", "attempt 3"),
    ]


def test_failure_replayed_inside_backoff_says_a_retry_is_allowed(client: TbayClient) -> None:
    client.policies["readonly"].retry_backoff = 60

    @guarded(client, policy="readonly")
    def lookup_user(name: str) -> dict:
        raise TimeoutError("directory unreachable")

    with pytest.raises(TimeoutError):
        lookup_user("ann")
    with pytest.raises(ExecutionFailed) as info:
        lookup_user("ann")
    assert "retry is allowed" in str(info.value)
    assert "no more retries" not in str(info.value)


def test_retry_that_succeeds_is_replayed_and_every_attempt_stays_in_the_log(client: TbayClient) -> None:
    client.policies["readonly"].retry_backoff = 0.05
    runs = Counter()

    @guarded(client, policy="readonly")
    def fetch(url: str) -> str:
        if runs.bump() < 3:
            raise ConnectionError("upstream down")
        return "page"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            fetch("https://example.org")
        time.sleep(0.1)
    assert fetch("https://example.org") == "page"
    assert fetch("https://example.org") == "page"  # replayed
    assert runs.n == 3

    rows = sorted(client.executions(tool="fetch"), key=lambda e: e.attempt)
    assert [(e.attempt, e.status) for e in rows] == [(1, "FAILED"), (2, "FAILED"), (3, "SUCCEEDED")]
    assert [e.error_type for e in rows] == ["ConnectionError", "ConnectionError", None]


def test_mutating_failure_is_never_retried(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def transfer(amount: int) -> None:
        runs.bump()
        raise RuntimeError("bank said no")

    with pytest.raises(RuntimeError):
        transfer(10)
    time.sleep(0.1)
    for _ in range(3):
        with pytest.raises(ExecutionFailed):
            transfer(10)
    assert runs.n == 1


def test_readonly_failure_expires_with_the_ttl(client: TbayClient) -> None:
    client.policies["readonly"].cache_ttl = 0.3
    client.policies["readonly"].max_retries = 0
    runs = Counter()

    @guarded(client, policy="readonly")
    def status(service: str) -> str:
        if runs.bump() == 1:
            raise ConnectionError("timeout")
        return "up"

    with pytest.raises(ConnectionError):
        status("api")
    with pytest.raises(ExecutionFailed):
        status("api")
    time.sleep(0.4)
    assert status("api") == "up"
    assert runs.n == 2
    rows = sorted(client.executions(tool="status"), key=lambda e: e.attempt)
    assert [(e.attempt, e.status) for e in rows] == [(1, "FAILED"), (2, "SUCCEEDED")]


def test_keyboard_interrupt_in_owner_ends_the_row_failed(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def migrate(table: str) -> None:
        runs.bump()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate("users")
    execution = only_execution(client, "migrate")
    assert execution.status == "FAILED"
    assert execution.error_type == "KeyboardInterrupt"
    assert client.executions(status="RUNNING") == []
    with pytest.raises(ExecutionFailed) as info:  # the side effect may have happened: not re-run
        migrate("users")
    assert info.value.error_type == "KeyboardInterrupt"
    assert runs.n == 1


def test_arguments_that_do_not_fit_the_signature_raise_type_error_and_record_nothing(
    client: TbayClient,
) -> None:
    @guarded(client)
    def resize(image: str, width: int) -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="resize"):
        resize("a.png")
    with pytest.raises(TypeError):
        resize("a.png", 10, height=3)
    assert client.executions(tool="resize") == []


def test_volatile_tolerates_arguments_without_stable_value(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client, policy="volatile")
    def emit(event: str, sink: Any) -> int:
        return runs.bump()

    sink = object()
    assert emit("a", sink) == 1
    assert emit("a", sink) == 2
    rows = client.executions(tool="emit")
    assert len(rows) == 2
    assert all(row.args["event"] == "a" for row in rows)


def test_tenant_is_part_of_a_key_fn_key(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client, key_fn=lambda order_id, amount: order_id)
    def ship(order_id: str, amount: int) -> int:
        return runs.bump()

    with scope(tenant="acme"):
        assert ship("o1", 5) == 1
    with scope(tenant="globex"):
        assert ship("o1", 7) == 2  # another tenant: no conflict, its own key
    with scope(tenant="acme"):
        assert ship("o1", 5) == 1
        with pytest.raises(IdempotencyConflict):
            ship("o1", 7)
    assert runs.n == 2


# ---------------------------------------------------------------------------
# results: the codec through the engine
# ---------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: Decimal
    label: tuple[str, ...] = ()


@dataclasses.dataclass
class Route:
    start: Point
    stops: list[Point]
    when: datetime


class Invoice(pydantic.BaseModel):
    number: int
    amount: Decimal
    issued: datetime
    tags: list[str] = []


def assert_identical(replayed: Any, fresh: Any, path: str = "result") -> None:
    """Equal and of the same type, all the way down."""
    assert type(replayed) is type(fresh), f"{path}: {type(replayed)!r} != {type(fresh)!r}"
    assert replayed == fresh, path
    if isinstance(fresh, dict):
        assert list(replayed) == list(fresh), f"{path}: key order"
        for (rk, rv), (fk, fv) in zip(replayed.items(), fresh.items(), strict=True):
            assert_identical(rk, fk, f"{path}.keys()")
            assert_identical(rv, fv, f"{path}[{fk!r}]")
    elif isinstance(fresh, (list, tuple)):
        for i, (r, f) in enumerate(zip(replayed, fresh, strict=True)):
            assert_identical(r, f, f"{path}[{i}]")
    elif isinstance(fresh, (set, frozenset)):
        assert sorted(map(repr, replayed)) == sorted(map(repr, fresh)), path
    elif dataclasses.is_dataclass(fresh):
        for field in dataclasses.fields(fresh):
            assert_identical(getattr(replayed, field.name), getattr(fresh, field.name), f"{path}.{field.name}")
    elif isinstance(fresh, pydantic.BaseModel):
        for name in type(fresh).model_fields:
            assert_identical(getattr(replayed, name), getattr(fresh, name), f"{path}.{name}")
    elif isinstance(fresh, datetime):
        assert replayed.utcoffset() == fresh.utcoffset(), path
        assert replayed.tzinfo == fresh.tzinfo, path


PARIS = timezone(timedelta(hours=2), "CEST")
WHEN = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)

RESULTS: list[tuple[str, Any, Any]] = [
    ("tuple", (1, "a", (2, 3)), tuple),
    ("bytes", b"\x00\xffbinary", bytes),
    ("datetime_utc", WHEN, datetime),
    ("datetime_offset", datetime(2024, 5, 1, 14, 30, tzinfo=PARIS), datetime),
    ("datetime_zoneinfo", datetime(2024, 1, 15, 9, 0, tzinfo=ZoneInfo("Europe/Paris")), datetime),
    ("decimal", Decimal("10.50"), Decimal),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
    ("set", {3, 1, 2}, set),
    ("frozenset", frozenset({"a", "b"}), frozenset),
    ("int_keyed_dict", {1: "one", 2: "two", -7: "minus seven"}, dict),
    ("tuple_keyed_dict", {(1, 2): "pair"}, dict),
    ("enum", Color.GREEN, Color),
    ("dataclass", Point(1, Decimal("2.50"), ("a", "b")), Point),
    ("nested_dataclass", Route(Point(0, Decimal("0")), [Point(1, Decimal("1.0"))], WHEN), Route),
    ("pydantic", Invoice(number=7, amount=Decimal("99.90"), issued=WHEN, tags=["x"]), Invoice),
    (
        "nested",
        {
            "ids": (uuid.UUID(int=1), uuid.UUID(int=2)),
            "by_id": {1: [Color.RED, {Decimal("1.5"), b"x"}], 2: frozenset({(1, 2)})},
            "point": Point(3, Decimal("4")),
            "invoices": [Invoice(number=1, amount=Decimal("1.00"), issued=WHEN)],
            "$tuple": "a user key that looks like a tag",
            "when": WHEN,
        },
        dict[str, Any],
    ),
]


@pytest.mark.parametrize(("value", "annotation"), [(v, a) for _, v, a in RESULTS], ids=[n for n, _, _ in RESULTS])
def test_replayed_result_equals_fresh_one_type_included(client: TbayClient, value: Any, annotation: Any) -> None:
    runs = Counter()

    def produce(tag: str):
        runs.bump()
        return value

    produce.__annotations__["return"] = annotation
    tool = guarded(client, policy="mutating")(produce)

    fresh = tool("x")
    assert fresh is value  # the owner gets its own object
    replayed = tool("x")
    assert runs.n == 1
    assert_identical(replayed, fresh)
    # a second client on the same file (a new process would do the same) rebuilds it too
    with TbayClient(client.db_url) as other:
        again = guarded(other, policy="mutating")(produce)("x")
    assert runs.n == 1
    assert_identical(again, fresh)


def test_pydantic_and_dataclass_results_rebuilt_from_annotation(client: TbayClient) -> None:
    @guarded(client)
    def make_invoice(number: int) -> Invoice:
        return Invoice(number=number, amount=Decimal("12.30"), issued=WHEN)

    @guarded(client)
    def make_points(n: int) -> list[Point]:
        return [Point(i, Decimal(i)) for i in range(n)]

    fresh_invoice, fresh_points = make_invoice(1), make_points(3)
    replayed_invoice, replayed_points = make_invoice(1), make_points(3)
    assert_identical(replayed_invoice, fresh_invoice)
    assert_identical(replayed_points, fresh_points)
    assert replayed_invoice is not fresh_invoice  # rebuilt, not a shared object


# ---------------------------------------------------------------------------
# results that cannot be stored
# ---------------------------------------------------------------------------


def _numbers() -> Iterator[int]:
    yield from (1, 2, 3)


@pytest.mark.parametrize("make", [threading.Lock, _numbers, lambda: {"ok": 1, "lock": threading.Lock()}],
                         ids=["lock", "generator", "nested_lock"])
def test_unstorable_result_owner_gets_value_later_callers_get_clear_error(
    client: TbayClient, make: Callable[[], Any]
) -> None:
    runs = Counter()

    @guarded(client)
    def open_handle(name: str):
        runs.bump()
        return make()

    value = open_handle("db")
    assert runs.n == 1
    assert value is not None and not isinstance(value, str)  # the real object, never stringified
    execution = only_execution(client, "open_handle")
    assert execution.status == "SUCCEEDED"
    assert execution.replayable is False

    with pytest.raises(ResultNotReplayable) as info:
        open_handle("db")
    assert runs.n == 1  # not run again
    assert "open_handle" in str(info.value)
    assert info.value.execution_id == execution.id
    assert f"tbay forget {execution.id}" in str(info.value)

    assert client.forget(execution.id) is True  # the way out the message names
    open_handle("db")
    assert runs.n == 2


# ---------------------------------------------------------------------------
# key derivation errors and conflicts
# ---------------------------------------------------------------------------


def test_argument_without_stable_value_raises_key_derivation_error(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def send(message: str, connection: Any) -> None:
        runs.bump()

    with pytest.raises(KeyDerivationError) as info:
        send("hi", connection=object())
    text = str(info.value)
    assert "'connection'" in text
    assert "key_fn" in text
    assert "send" in text
    assert runs.n == 0
    assert client.executions(tool="send") == []


def test_key_fn_conflict_names_the_differing_argument(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client, key_fn=lambda customer_id, amount, note="": customer_id)
    def refund(customer_id: str, amount: float, note: str = "") -> str:
        runs.bump()
        return f"refunded {amount}"

    assert refund("c1", 10.0, note="late") == "refunded 10.0"
    assert refund("c1", 10, note="late") == "refunded 10.0"  # 10 == 10.0: same arguments, replayed
    with pytest.raises(IdempotencyConflict) as info:
        refund("c1", 20.0, note="late")
    assert info.value.differing_fields == ("amount",)
    assert "amount" in str(info.value) and "refund" in str(info.value)
    assert runs.n == 1
    assert refund("c2", 20.0) == "refunded 20.0"  # another key runs
    assert runs.n == 2


# ---------------------------------------------------------------------------
# forget
# ---------------------------------------------------------------------------


def test_forget_makes_the_next_identical_call_run_fresh(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    def provision(name: str) -> int:
        return runs.bump()

    assert provision("vm") == 1
    assert provision("vm") == 1
    first = only_execution(client, "provision")
    assert client.forget(first.id) is True
    assert client.forget(first.id) is False  # already released
    assert provision("vm") == 2
    assert provision("vm") == 2
    assert runs.n == 2
    assert client.get(first.id).status == "SUCCEEDED"  # forgetting keeps the audit row


def test_forget_unknown_execution_raises(client: TbayClient) -> None:
    with pytest.raises(UnknownExecution, match="no-such-id"):
        client.forget("no-such-id")
    with pytest.raises(UnknownExecution):
        client.get("no-such-id")


# ---------------------------------------------------------------------------
# decoration time
# ---------------------------------------------------------------------------


def test_two_functions_under_one_tool_name_clash(client: TbayClient) -> None:
    def search_web(q: str) -> str:
        return "web"

    def search_db(q: str) -> str:
        return "db"

    guarded(client, tool_name="search")(search_web)
    with pytest.raises(ToolNameClash) as info:
        guarded(client, tool_name="search")(search_db)
    assert "search_web" in str(info.value) and "search_db" in str(info.value)
    guarded(client, tool_name="search")(search_web)  # re-guarding the same function is fine


def test_unknown_policy_fails_at_decoration_time(client: TbayClient) -> None:
    runs = Counter()

    def tool(x: int) -> int:
        return runs.bump()

    with pytest.raises(PolicyError) as info:
        guarded(client, policy="readonyl")(tool)
    assert "readonyl" in str(info.value)
    assert "readonly" in str(info.value)  # did-you-mean
    assert "tool" in str(info.value)
    assert runs.n == 0
    with pytest.raises(PolicyError):
        client.guard(tool, policy="nope")


def test_guarded_keeps_name_doc_signature_and_annotations(client: TbayClient) -> None:
    def get_weather(city: str, *, units: str = "metric") -> dict[str, float]:
        """Current weather for a city."""
        return {"temp": 21.5}

    async def get_forecast(city: str, days: int = 3) -> list[float]:
        """Forecast for a city."""
        return [1.0] * days

    wrapped = guarded(client, policy="readonly")(get_weather)
    awrapped = guarded(client, policy="readonly")(get_forecast)
    for bare, guarded_fn in ((get_weather, wrapped), (get_forecast, awrapped)):
        assert guarded_fn.__name__ == bare.__name__
        assert guarded_fn.__qualname__ == bare.__qualname__
        assert guarded_fn.__doc__ == bare.__doc__
        assert guarded_fn.__annotations__ == bare.__annotations__
        assert inspect.signature(guarded_fn) == inspect.signature(bare)
    assert not inspect.iscoroutinefunction(wrapped)
    assert inspect.iscoroutinefunction(awrapped)
    assert wrapped("Paris") == {"temp": 21.5}


# ---------------------------------------------------------------------------
# singleflight across threads
# ---------------------------------------------------------------------------


def test_sixteen_threads_on_one_mutating_key_run_it_once(client: TbayClient) -> None:
    runs = Counter()
    barrier = threading.Barrier(16)

    @guarded(client)
    def send_invoice(customer: str) -> dict:
        n = runs.bump()
        time.sleep(0.2)
        return {"customer": customer, "run": n, "token": uuid.uuid4().hex}

    def call(_: int) -> dict:
        barrier.wait(timeout=10)
        return send_invoice("c1")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(16), timeout=30))
    assert runs.n == 1
    assert all(result == results[0] for result in results)
    assert only_execution(client, "send_invoice").status == "SUCCEEDED"


def test_threads_following_a_failing_owner_replay_its_failure(client: TbayClient) -> None:
    runs = Counter()
    barrier = threading.Barrier(8)

    @guarded(client)
    def debit(account: str) -> None:
        runs.bump()
        time.sleep(0.2)
        raise ValueError("account frozen")

    def call(_: int) -> str:
        barrier.wait(timeout=10)
        try:
            debit("a1")
        except ExecutionFailed as exc:
            assert exc.error_type == "ValueError"
            return "replayed"
        except ValueError:
            return "owner"
        return "returned"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(call, range(8), timeout=30))
    assert runs.n == 1
    assert outcomes == ["owner"] + ["replayed"] * 7


# ---------------------------------------------------------------------------
# the cache-hit path writes nothing
# ---------------------------------------------------------------------------


def test_cache_hit_writes_nothing(client: TbayClient, db_url: str) -> None:
    @guarded(client, policy="readonly")
    def quote(symbol: str) -> float:
        return 101.5

    quote("ACME")
    executions = count_rows(db_url, "tbay_executions")
    replays = count_rows(db_url, "tbay_replays")
    before = dump_tables(db_url)
    watcher = sqlite3.connect(db_path(db_url)) if db_url.startswith("sqlite:") else None
    version = watcher.execute("PRAGMA data_version").fetchone()[0] if watcher else None
    for _ in range(100):
        assert quote("ACME") == 101.5
    if watcher is not None:
        # data_version changes when any other connection commits to the file
        assert watcher.execute("PRAGMA data_version").fetchone()[0] == version
        watcher.close()
    assert dump_tables(db_url) == before
    assert count_rows(db_url, "tbay_executions") == executions == 1
    assert count_rows(db_url, "tbay_replays") == replays == 0
    assert [row["replays"] for row in client.stats() if row["tool"] == "quote"] == [0]


def test_audit_replays_records_every_hit(client: TbayClient, db_url: str) -> None:
    client.policies["audited"] = client.policies["readonly"].copy(name="audited", audit_replays=True)

    @guarded(client, policy="audited")
    def quote(symbol: str) -> float:
        return 101.5

    quote("ACME")
    for _ in range(100):
        assert quote("ACME") == 101.5
    assert count_rows(db_url, "tbay_executions") == 1
    assert count_rows(db_url, "tbay_replays") == 100
    stats = {row["tool"]: row for row in client.stats()}
    assert stats["quote"]["replays"] == 100
    assert stats["quote"]["executions"] == 1


# ---------------------------------------------------------------------------
# the audit record
# ---------------------------------------------------------------------------

DOCUMENTED_KEYS = {
    "id", "tool_name", "tenant", "status", "policy_name", "attempt", "args", "error_type",
    "error_message", "created_at", "started_at", "finished_at", "decided_by", "decision_reason",
}


def test_get_returns_the_documented_execution_record(client: TbayClient) -> None:
    @guarded(client, policy="readonly")
    def weather(city: str, days: int = 1) -> str:
        return "sunny"

    with scope(tenant="acme"):
        weather("Oslo")
    (listed,) = client.executions(tool="weather")
    execution = client.get(listed.id)
    assert execution == listed
    assert execution.tool_name == "weather"
    assert execution.tenant == "acme"
    assert execution.status == "SUCCEEDED"
    assert execution.policy_name == "readonly"
    assert execution.attempt == 1
    assert execution.args == {"city": "Oslo", "days": 1}
    assert execution.error_type is None and execution.error_message is None
    assert execution.decided_by is None and execution.decision_reason is None
    for moment in (execution.created_at, execution.started_at, execution.finished_at):
        assert isinstance(moment, datetime) and moment.tzinfo is not None
    assert execution.created_at <= execution.started_at <= execution.finished_at

    data = execution.to_json_dict()
    assert set(data) >= DOCUMENTED_KEYS
    assert data["id"] == execution.id
    assert datetime.fromisoformat(data["created_at"]) == execution.created_at
    json.dumps(data)  # JSON-ready as is


def test_redacted_arguments_in_log_while_key_sees_real_values(client: TbayClient, db_url: str) -> None:
    runs = Counter()

    @guarded(client)
    def login(user: str, password: str, payment: dict) -> int:
        return runs.bump()

    payment = {"card": {"number": "4111 1111 1111 1111", "holder": "Bob"}}
    login("bob", password="hunter2", payment=payment)
    login("bob", password="hunter2", payment=payment)
    login("bob", password="letmein", payment=payment)
    assert runs.n == 2  # different passwords are different calls

    rows = client.executions(tool="login")
    assert len(rows) == 2
    for row in rows:
        assert row.args["user"] == "bob"
        assert row.args["password"] == "***"
        assert row.args["payment"]["card"]["number"] == "***"
        assert row.args["payment"]["card"]["holder"] == "Bob"

    # nothing in the database holds the secrets in clear
    stored = dump_tables(db_url)
    for secret in ("hunter2", "letmein", "4111 1111 1111 1111", "4111111111111111"):
        assert secret not in stored
    if db_url.startswith("sqlite:"):  # not even in the file's bytes (WAL included)
        client.close()
        for path in Path(db_path(db_url)).parent.iterdir():
            data = path.read_bytes()
            assert b"hunter2" not in data and b"letmein" not in data, path.name
            assert b"4111 1111 1111 1111" not in data, path.name


def test_key_fn_does_not_store_secrets_in_clear(client: TbayClient, db_url: str) -> None:
    @guarded(client, key_fn=lambda user, password: user)
    def sign_in(user: str, password: str) -> str:
        return "ok"

    sign_in("bob", "hunter2")
    assert client.executions(tool="sign_in")[0].args["password"] == "***"
    assert "hunter2" not in dump_tables(db_url)


# ---------------------------------------------------------------------------
# purge
# ---------------------------------------------------------------------------


def test_purge_removes_expired_cache_rows_but_never_a_live_mutating_result(client: TbayClient) -> None:
    short_ttl(client, 0.3)
    read_runs, write_runs = Counter(), Counter()

    @guarded(client, policy="readonly")
    def read(x: int) -> int:
        return read_runs.bump()

    @guarded(client)
    def write(x: int) -> int:
        return write_runs.bump()

    read(1)
    write(1)
    expired = only_execution(client, "read")
    kept = only_execution(client, "write")
    assert client.purge(0) == 0  # the readonly result is still live
    time.sleep(0.4)

    assert client.purge(0, dry_run=True) == 1
    assert client.get(expired.id).status == "SUCCEEDED"  # a dry run deletes nothing
    assert client.purge(0) == 1
    with pytest.raises(UnknownExecution):
        client.get(expired.id)
    assert client.get(kept.id).status == "SUCCEEDED"
    assert write(1) == 1  # still replayed
    assert write_runs.n == 1
    assert read(1) == 2  # the purged readonly call runs fresh
    assert client.purge(0) == 0


# ---------------------------------------------------------------------------
# execution timeout (sync)
# ---------------------------------------------------------------------------


def test_sync_execution_timeout_caller_gets_error_and_row_records_the_real_outcome(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=0.1)
    release = threading.Event()
    runs = Counter()

    @guarded(client, policy="slow")
    def export(report: str) -> str:
        runs.bump()
        release.wait(10)
        return f"{report} exported"

    with pytest.raises(ExecutionTimeout) as info:
        export("q3")
    assert "export" in str(info.value)
    execution = only_execution(client, "export")
    assert execution.id in str(info.value)
    assert execution.status == "RUNNING"  # the caller was answered before the body finished

    release.set()
    ended = wait_until_ended(client, execution.id)
    assert ended.status == "SUCCEEDED"
    assert export("q3") == "q3 exported"  # and its result is replayed
    assert runs.n == 1


_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def test_sync_execution_timeout_keeps_the_callers_context(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=5)
    seen: list[str | None] = []

    @guarded(client)
    def audit_step(step: str) -> str:
        return step

    @guarded(client, policy="slow")
    def workflow(name: str) -> str:
        seen.append(_request_id.get())
        return audit_step(name)

    token = _request_id.set("req-42")
    try:
        with scope(tenant="acme"):
            assert workflow("w1") == "w1"
    finally:
        _request_id.reset(token)
    assert seen == ["req-42"]
    assert only_execution(client, "audit_step").tenant == "acme"


def test_a_call_waiting_on_its_own_execution_is_refused(client: TbayClient) -> None:
    """Re-entrancy: a guarded body that calls itself with the same arguments would wait forever."""
    depth = {"n": 0}

    @guarded(client)
    def recurse(x: int) -> int:
        depth["n"] += 1
        return recurse(x)

    with pytest.raises(ReentrantCall, match="inside its own execution"):
        recurse(1)
    assert depth["n"] == 1
