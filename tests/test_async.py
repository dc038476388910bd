"""The guarded-call pipeline on the async path, against real SQLite files.

Plain ``asyncio.run`` inside sync tests (no pytest-asyncio). Waits are
bounded by generous timeouts so a bug hangs nothing; assertions are about
ordering and counts, never about speed.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tbay_core import (
    ExecutionFailed,
    ExecutionTimeout,
    KeyDerivationError,
    ResultNotReplayable,
    TbayClient,
    guarded,
    scope,
)
from tbay_core.execution import Execution


class Counter:
    """Counts body runs, thread-safely."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def bump(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


def only_execution(client: TbayClient, tool: str) -> Execution:
    rows = client.executions(tool=tool)
    assert len(rows) == 1, rows
    return rows[0]


async def wait_until_ended(client: TbayClient, execution_id: str, timeout: float = 10.0) -> Execution:
    """Poll the log without blocking the loop until the execution has ended (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        execution = client.get(execution_id)
        if execution.status not in ("RUNNING", "WAITING_APPROVAL"):
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_id} still {execution.status} after {timeout}s")
        await asyncio.sleep(0.01)


async def wait_for_flag(flag: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not flag():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------
# cancellation
# ---------------------------------------------------------------------------


def test_cancelled_async_owner_ends_failed_and_mutating_replays_the_failure(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    async def charge(card: str) -> str:
        runs.bump()
        await asyncio.sleep(60)
        return "charged"

    async def main() -> None:
        owner = asyncio.create_task(charge("visa"))
        await wait_for_flag(lambda: runs.n == 1)
        running = only_execution(client, "charge")
        assert running.status == "RUNNING"
        follower = asyncio.create_task(charge("visa"))
        await asyncio.sleep(0.05)  # let the follower start waiting on the owner
        assert not follower.done()

        owner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await owner
        # the follower is woken, and replays the owner's outcome instead of hanging or re-running
        with pytest.raises(ExecutionFailed) as info:
            await asyncio.wait_for(follower, 10)
        assert "CancelledError" in info.value.error_type

    asyncio.run(main())

    execution = only_execution(client, "charge")
    assert execution.status == "FAILED"
    assert "CancelledError" in (execution.error_type or "")
    assert execution.finished_at is not None
    assert client.executions(status="RUNNING") == []

    with pytest.raises(ExecutionFailed) as info:  # the charge may have happened: never re-run silently
        asyncio.run(charge("visa"))
    assert info.value.execution_id == execution.id
    assert "CancelledError" in info.value.error_type
    assert runs.n == 1


def test_cancelled_follower_does_not_disturb_the_owner(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    async def render(page: str) -> str:
        runs.bump()
        await asyncio.sleep(0.3)
        return f"<h1>{page}</h1>"

    async def main() -> str:
        owner = asyncio.create_task(render("home"))
        await wait_for_flag(lambda: runs.n == 1)
        follower = asyncio.create_task(render("home"))
        await asyncio.sleep(0.05)
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
        return await asyncio.wait_for(owner, 10)

    assert asyncio.run(main()) == "<h1>home</h1>"
    assert runs.n == 1
    assert only_execution(client, "render").status == "SUCCEEDED"


# ---------------------------------------------------------------------------
# singleflight without blocking the event loop
# ---------------------------------------------------------------------------


def test_async_followers_do_not_block_the_event_loop(client: TbayClient) -> None:
    runs = Counter()

    async def main() -> tuple[list[Any], list[int]]:
        ticks = 0
        ticked = asyncio.Event()
        pending_followers_at_ticks: list[int] = []
        followers: list[asyncio.Task[Any]] = []

        @guarded(client)
        async def summarise(doc: str) -> dict:
            n = runs.bump()
            # The owner only finishes after 20 ticks of another coroutine: if a waiting
            # follower blocked the loop, no tick would happen and this would time out.
            await asyncio.wait_for(ticked.wait(), 10)
            return {"doc": doc, "run": n}

        async def ticker() -> None:
            nonlocal ticks
            while ticks < 20:
                await asyncio.sleep(0.01)
                ticks += 1
                pending_followers_at_ticks.append(sum(not f.done() for f in followers))
            ticked.set()

        owner = asyncio.create_task(summarise("report"))
        await wait_for_flag(lambda: runs.n == 1)
        followers.extend(asyncio.create_task(summarise("report")) for _ in range(5))
        await asyncio.sleep(0)  # the followers start and begin to wait
        tick_task = asyncio.create_task(ticker())
        results = await asyncio.wait_for(asyncio.gather(owner, *followers), 20)
        await tick_task
        return results, pending_followers_at_ticks

    results, pending = asyncio.run(main())
    assert runs.n == 1
    assert results == [{"doc": "report", "run": 1}] * 6
    assert len(pending) == 20
    assert pending == [5] * 20  # all five followers were waiting while the loop kept ticking


def test_gather_of_twenty_identical_calls_runs_the_body_once(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client)
    async def geocode(address: str) -> tuple[float, float]:
        runs.bump()
        await asyncio.sleep(0.1)
        return (48.8566, 2.3522)

    async def main() -> list[tuple[float, float]]:
        return await asyncio.wait_for(asyncio.gather(*(geocode("Paris") for _ in range(20))), 20)

    results = asyncio.run(main())
    assert runs.n == 1
    assert results == [(48.8566, 2.3522)] * 20
    assert all(type(r) is tuple for r in results)
    assert only_execution(client, "geocode").status == "SUCCEEDED"


def test_async_follower_in_another_thread_and_loop_is_woken(client: TbayClient) -> None:
    runs = Counter()
    barrier = threading.Barrier(2)

    @guarded(client)
    async def allocate(pool: str) -> int:
        n = runs.bump()
        await asyncio.sleep(0.3)
        return n

    results: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        try:
            results.append(asyncio.run(asyncio.wait_for(allocate("p1"), 20)))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [1, 1]
    assert runs.n == 1


def test_singleflight_false_lets_concurrent_identical_calls_each_run(client: TbayClient) -> None:
    client.policies["fanout"] = client.policies["readonly"].copy(name="fanout", singleflight=False)
    runs = Counter()

    @guarded(client, policy="fanout")
    async def sample(source: str) -> int:
        n = runs.bump()
        await asyncio.sleep(0.1)
        return n

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(sample("s") for _ in range(5))), 20)

    assert sorted(asyncio.run(main())) == [1, 2, 3, 4, 5]
    assert asyncio.run(sample("s")) in {1, 2, 3, 4, 5}  # a later call is a cache hit
    assert runs.n == 5
    assert len(client.executions(tool="sample")) == 5


def test_follower_that_gave_up_leaves_no_errors_behind(
    client: TbayClient, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    runs = Counter()

    @guarded(client)
    async def export(report: str) -> str:
        runs.bump()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return f"{report}.csv"

    results: list[Any] = []
    owner = threading.Thread(target=lambda: results.append(asyncio.run(export("q3"))))
    owner.start()
    try:
        deadline = time.monotonic() + 10
        while runs.n == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(asyncio.TimeoutError):  # an agent framework's own per-tool timeout
            asyncio.run(asyncio.wait_for(export("q3"), 0.2))
        caplog.set_level(logging.ERROR)
    finally:
        release.set()
        owner.join(10)
    assert results == ["q3.csv"]
    assert runs.n == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_long_async_wait_does_not_pile_up_callbacks(sqlite_url: str) -> None:
    # SQLite only: its 20 ms poll cap makes about 50 polls in the one-second wait below.
    runs = Counter()
    with TbayClient(sqlite_url) as client:

        async def main() -> int:
            gate = asyncio.Event()

            @guarded(client)
            async def crunch(n: int) -> int:
                runs.bump()
                await asyncio.wait_for(gate.wait(), 10)
                return n * 2

            owner = asyncio.create_task(crunch(21))
            await wait_for_flag(lambda: runs.n == 1)
            gc.collect()
            before = sum(1 for o in gc.get_objects() if type(o) is asyncio.Future)
            follower = asyncio.create_task(crunch(21))
            await asyncio.sleep(1.0)  # let the follower wait (and poll) for a while
            alive = sum(1 for o in gc.get_objects() if type(o) is asyncio.Future) - before
            gate.set()
            assert await asyncio.wait_for(asyncio.gather(owner, follower), 10) == [42, 42]
            return alive

        alive = asyncio.run(main())
    assert runs.n == 1
    assert alive < 10, f"{alive} asyncio futures kept alive by one waiting follower"


# ---------------------------------------------------------------------------
# sync and async behave the same
# ---------------------------------------------------------------------------


def make_tool(client: TbayClient, mode: str, body: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """A guarded tool running ``body``, as a sync def or an async def."""
    if mode == "sync":
        def tool(x: Any) -> Any:
            return body(x)
    else:
        async def tool(x: Any) -> Any:  # type: ignore[misc]
            await asyncio.sleep(0)
            return body(x)
    return guarded(client, **options)(tool)


def call(tool: Callable[..., Any], *args: Any) -> Any:
    """Call a guarded tool the way its kind is called."""
    if inspect.iscoroutinefunction(tool):
        return asyncio.run(tool(*args))
    return tool(*args)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
def test_parity_replay(client: TbayClient, mode: str) -> None:
    runs = Counter()
    tool = make_tool(client, mode, lambda x: {"x": x, "run": runs.bump()}, tool_name="t_replay")
    assert inspect.iscoroutinefunction(tool) is (mode == "async")
    first = call(tool, 1)
    assert call(tool, 1) == first == {"x": 1, "run": 1}
    assert call(tool, 2) == {"x": 2, "run": 2}
    assert runs.n == 2
    assert len(client.executions(tool="t_replay")) == 2


@MODES
def test_parity_failure(client: TbayClient, mode: str) -> None:
    runs = Counter()

    def body(x: Any) -> Any:
        runs.bump()
        raise LookupError(f"no {x}")

    tool = make_tool(client, mode, body, tool_name="t_fail")
    with pytest.raises(LookupError, match="no 1"):
        call(tool, 1)
    with pytest.raises(ExecutionFailed) as info:
        call(tool, 1)
    assert (info.value.error_type, info.value.error_message) == ("LookupError", "no 1")
    assert runs.n == 1
    execution = client.get(info.value.execution_id)
    assert (execution.status, execution.attempt, execution.error_type) == ("FAILED", 1, "LookupError")


@MODES
def test_parity_readonly_retry(client: TbayClient, mode: str) -> None:
    client.policies["readonly"].retry_backoff = 0.05
    runs = Counter()

    def body(x: Any) -> Any:
        if runs.bump() == 1:
            raise ConnectionError("blip")
        return "ok"

    tool = make_tool(client, mode, body, policy="readonly", tool_name="t_retry")
    with pytest.raises(ConnectionError):
        call(tool, 1)
    time.sleep(0.1)
    assert call(tool, 1) == "ok"
    assert call(tool, 1) == "ok"
    assert runs.n == 2
    rows = sorted(client.executions(tool="t_retry"), key=lambda e: e.attempt)
    assert [(e.attempt, e.status) for e in rows] == [(1, "FAILED"), (2, "SUCCEEDED")]


@MODES
def test_parity_volatile(client: TbayClient, mode: str) -> None:
    runs = Counter()
    tool = make_tool(client, mode, lambda x: runs.bump(), policy="volatile", tool_name="t_volatile")
    assert [call(tool, 1) for _ in range(3)] == [1, 2, 3]
    rows = client.executions(tool="t_volatile")
    assert [e.status for e in rows] == ["SUCCEEDED"] * 3


@MODES
def test_parity_unstorable_result(client: TbayClient, mode: str) -> None:
    runs = Counter()

    def body(x: Any) -> Any:
        runs.bump()
        return threading.Lock()

    tool = make_tool(client, mode, body, tool_name="t_unstorable")
    assert hasattr(call(tool, 1), "acquire")
    with pytest.raises(ResultNotReplayable, match="t_unstorable"):
        call(tool, 1)
    assert runs.n == 1
    assert only_execution(client, "t_unstorable").replayable is False


@MODES
def test_parity_key_derivation_error(client: TbayClient, mode: str) -> None:
    runs = Counter()
    tool = make_tool(client, mode, lambda x: runs.bump(), tool_name="t_key")
    with pytest.raises(KeyDerivationError, match="'x'"):
        call(tool, object())
    assert runs.n == 0
    assert client.executions(tool="t_key") == []


@MODES
def test_parity_tenant_scope(client: TbayClient, mode: str) -> None:
    runs = Counter()
    tool = make_tool(client, mode, lambda x: runs.bump(), tool_name="t_tenant")
    with scope(tenant="acme"):
        assert call(tool, 1) == 1
        assert call(tool, 1) == 1
    with scope(tenant="globex"):
        assert call(tool, 1) == 2
    assert sorted(e.tenant for e in client.executions(tool="t_tenant")) == ["acme", "globex"]


# ---------------------------------------------------------------------------
# readonly caching and scope in coroutines
# ---------------------------------------------------------------------------


def test_async_readonly_returns_cached_value(client: TbayClient) -> None:
    runs = Counter()

    @guarded(client, policy="readonly")
    async def price(sku: str) -> dict:
        n = runs.bump()
        await asyncio.sleep(0.01)
        return {"sku": sku, "run": n}

    async def main() -> tuple[dict, dict]:
        return await price("A1"), await price("A1")

    first, second = asyncio.run(main())
    assert first == second == {"sku": "A1", "run": 1}
    assert asyncio.run(price("A1")) == first  # and from a new event loop
    assert runs.n == 1


def test_async_scope_follows_tasks(client: TbayClient) -> None:
    @guarded(client)
    async def note(text: str) -> str:
        return text

    async def main() -> None:
        async with scope(tenant="acme", agent="bot"):
            await asyncio.gather(note("a"), asyncio.create_task(note("b")))
        await note("c")

    asyncio.run(main())
    by_arg = {e.args["text"]: e for e in client.executions(tool="note")}
    assert (by_arg["a"].tenant, by_arg["b"].tenant, by_arg["c"].tenant) == ("acme", "acme", None)
    assert by_arg["b"].agent == "bot"


# ---------------------------------------------------------------------------
# execution timeout
# ---------------------------------------------------------------------------


def test_async_execution_timeout_caller_gets_error_and_row_records_the_real_outcome(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=0.1)
    runs = Counter()
    gate: dict[str, asyncio.Event] = {}

    @guarded(client, policy="slow")
    async def transcribe(file: str) -> str:
        runs.bump()
        await asyncio.wait_for(gate["release"].wait(), 10)
        return f"{file}: text"

    async def main() -> Execution:
        gate["release"] = asyncio.Event()
        with pytest.raises(ExecutionTimeout) as info:
            await transcribe("a.wav")
        assert "transcribe" in str(info.value)
        execution = only_execution(client, "transcribe")
        assert execution.id in str(info.value)
        assert execution.status == "RUNNING"  # answered before the body finished
        gate["release"].set()  # the body goes on in the background
        return await wait_until_ended(client, execution.id)

    ended = asyncio.run(main())
    assert ended.status == "SUCCEEDED"
    assert asyncio.run(transcribe("a.wav")) == "a.wav: text"  # replayed
    assert runs.n == 1


def test_async_execution_timeout_records_a_late_failure(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=0.1)
    gate: dict[str, asyncio.Event] = {}

    @guarded(client, policy="slow")
    async def upload(file: str) -> str:
        await asyncio.wait_for(gate["release"].wait(), 10)
        raise PermissionError("bucket is read-only")

    async def main() -> Execution:
        gate["release"] = asyncio.Event()
        with pytest.raises(ExecutionTimeout):
            await upload("a.bin")
        gate["release"].set()
        return await wait_until_ended(client, only_execution(client, "upload").id)

    ended = asyncio.run(main())
    assert (ended.status, ended.error_type) == ("FAILED", "PermissionError")
    with pytest.raises(ExecutionFailed, match="bucket is read-only"):
        asyncio.run(upload("a.bin"))


def test_sync_execution_timeout_caller_gets_error_and_row_records_the_real_outcome(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=0.1)
    release = threading.Event()
    runs = Counter()

    @guarded(client, policy="slow")
    def transcode(file: str) -> str:
        runs.bump()
        release.wait(10)
        return f"{file}.mp4"

    with pytest.raises(ExecutionTimeout) as info:
        transcode("a.mov")
    execution = only_execution(client, "transcode")
    assert execution.id in str(info.value)
    assert execution.status == "RUNNING"
    release.set()
    ended = asyncio.run(wait_until_ended(client, execution.id))
    assert ended.status == "SUCCEEDED"
    assert transcode("a.mov") == "a.mov.mp4"
    assert runs.n == 1


def test_execution_timeout_does_not_fire_for_a_fast_call(client: TbayClient) -> None:
    client.policies["slow"] = client.policies["mutating"].copy(name="slow", execution_timeout=5)

    @guarded(client, policy="slow")
    async def ping(host: str) -> str:
        return "pong"

    @guarded(client, policy="slow")
    def sping(host: str) -> str:
        return "pong"

    assert asyncio.run(ping("h")) == "pong"
    assert sping("h") == "pong"
    assert {e.status for e in client.executions()} == {"SUCCEEDED"}

