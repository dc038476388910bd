"""The `tbay` command as an operator uses it: a real CLI process on a real SQLite file.

Every test fills a database through a :class:`TbayClient` in the test process
(successes, a failure, volatile calls, a tenant, approvals waiting in defer
mode), then runs ``python -m tbay_core.cli`` in a subprocess against that file
and checks what the operator sees, and what the agent side sees afterwards.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tbay_core import (
    ApprovalPending,
    ApprovalRejected,
    TbayClient,
    ToolPaused,
    scope,
)
from tbay_core.redact import MASK

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = REPO_ROOT / "policy.example.yaml"
SECRET = "hunter2-very-secret"
CLI_TIMEOUT = 60

JSON_KEYS = {
    "id",
    "tool_name",
    "tenant",
    "status",
    "policy_name",
    "attempt",
    "args",
    "error_type",
    "error_message",
    "created_at",
    "started_at",
    "finished_at",
    "decided_by",
    "decision_reason",
}
SUBCOMMANDS = [
    "log",
    "show",
    "pending",
    "approve",
    "reject",
    "forget",
    "pause",
    "resume",
    "stats",
    "purge",
    "policies",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(subprocess_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The child environment with HOME moved to a temp dir, so nothing touches the real ~/.tbay."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(subprocess_env)
    env["HOME"] = str(home)
    return env


@pytest.fixture
def tbay(
    python: str, cli_env: dict[str, str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m tbay_core.cli ARGS`` against the test's database."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "tbay_core.cli", *args],
            env=cli_env if env is None else env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a CLI run succeeded and return its stdout."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert a CLI run failed with one readable line on stderr (no traceback); return that line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"expected failure, got exit 0\nstdout:\n{result.stdout}"
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def table_rows(stdout: str) -> list[str]:
    """The data rows of a `tbay log` table (the header line dropped)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines and lines[0].split()[0] == "ID", stdout
    return lines[1:]


@dataclass
class Populated:
    """What the test process put in the database, and the guarded functions to call again."""

    client: TbayClient
    ran: dict[str, int]
    tools: dict[str, Callable[..., Any]]
    ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def populated(client: TbayClient) -> Populated:
    """A database with every kind of outcome the log must show."""
    ran = {"lookup": 0, "charge": 0, "explode": 0, "quote": 0, "refund": 0}

    def lookup(query: str) -> dict:
        ran["lookup"] += 1
        return {"query": query, "hits": 3}

    def charge(order_id: str, amount: float, password: str) -> str:
        ran["charge"] += 1
        return f"charged {amount} on {order_id}"

    def explode(x: int) -> int:
        ran["explode"] += 1
        raise ValueError(f"boom {x}")

    def quote(currency: str) -> float:
        ran["quote"] += 1
        return 1.0 + ran["quote"]

    def refund(order_id: str, amount: float) -> str:
        ran["refund"] += 1
        return f"refunded {amount} on {order_id}"

    client.policies["refunds"] = client.policies["destructive"].copy(
        name="refunds", approval_mode="defer"
    )
    tools = {
        "lookup": client.guard(lookup, policy="readonly"),
        "charge": client.guard(charge, policy="mutating"),
        "explode": client.guard(explode, policy="mutating"),
        "quote": client.guard(quote, policy="volatile"),
        "refund": client.guard(refund, policy="refunds"),
    }
    pop = Populated(client, ran, tools)

    assert tools["lookup"]("tbay") == {"query": "tbay", "hits": 3}
    assert tools["charge"]("order-1", 10.0, SECRET) == "charged 10.0 on order-1"
    with pytest.raises(ValueError, match="boom 42"):
        tools["explode"](42)
    tools["quote"]("EUR")
    tools["quote"]("EUR")
    with scope(tenant="acme", agent="support-bot"):
        tools["lookup"]("acme docs")
    with pytest.raises(ApprovalPending) as first:
        tools["refund"]("order-7", 500.0)
    with pytest.raises(ApprovalPending) as second:
        tools["refund"]("order-8", 900.0)

    def only(tool: str, **filters: Any) -> str:
        rows = client.executions(tool=tool, **filters)
        assert len(rows) == 1, rows
        return rows[0].id

    pop.ids = {
        "lookup": next(e.id for e in client.executions(tool="lookup") if e.tenant is None),
        "lookup_acme": only("lookup", tenant="acme"),
        "charge": only("charge"),
        "explode": only("explode"),
        "refund_7": first.value.execution_id,
        "refund_8": second.value.execution_id,
    }
    pop.ids["quotes"] = ",".join(e.id for e in client.executions(tool="quote"))
    assert len(client.executions(tool="quote")) == 2
    return pop


# ---------------------------------------------------------------------------
# python -m tbay_core.cli, --help
# ---------------------------------------------------------------------------


def test_module_entry_point_runs_main(tbay: Callable[..., Any]) -> None:
    out = ok(tbay("--help"))
    assert "Usage: tbay" in out
    for command in SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_help_describes_it(tbay: Callable[..., Any], command: str) -> None:
    out = ok(tbay(command, "--help"))
    assert f"Usage: tbay {command}" in out
    # a real description line, not just the usage line
    description = [
        line for line in out.splitlines()[1:] if line.strip() and not line.strip().startswith("-")
    ]
    assert description and len(description[0].split()) >= 2, out


# ---------------------------------------------------------------------------
# tbay log
# ---------------------------------------------------------------------------


def test_log_prints_a_readable_table(tbay: Callable[..., Any], populated: Populated) -> None:
    out = ok(tbay("log"))
    header = out.splitlines()[0]
    for column in ("ID", "TOOL", "STATUS", "TENANT", "POLICY"):
        assert column in header
    rows = table_rows(out)
    assert len(rows) == 8  # 2 lookups, charge, explode, 2 quotes, 2 refunds
    ids = {row.split()[0] for row in rows}
    expected = {v for k, v in populated.ids.items() if k != "quotes"} | set(
        populated.ids["quotes"].split(",")
    )
    assert ids == expected
    by_id = {row.split()[0]: row for row in rows}
    assert (
        "explode" in by_id[populated.ids["explode"]] and "FAILED" in by_id[populated.ids["explode"]]
    )
    assert "ValueError" in by_id[populated.ids["explode"]]
    assert "SUCCEEDED" in by_id[populated.ids["charge"]]
    assert "WAITING_APPROVAL" in by_id[populated.ids["refund_7"]]
    assert "acme" in by_id[populated.ids["lookup_acme"]]
    assert SECRET not in out


def test_log_filters(tbay: Callable[..., Any], populated: Populated) -> None:
    ids = populated.ids

    quotes = json_lines(ok(tbay("log", "--tool", "quote", "--json")))
    assert {row["id"] for row in quotes} == set(ids["quotes"].split(","))
    assert {row["policy_name"] for row in quotes} == {"volatile"}

    failed = json_lines(ok(tbay("log", "--status", "FAILED", "--json")))
    assert [row["id"] for row in failed] == [ids["explode"]]
    assert json_lines(ok(tbay("log", "--status", "failed", "--json"))) == failed  # case-insensitive

    waiting = json_lines(ok(tbay("log", "--status", "WAITING_APPROVAL", "--json")))
    assert {row["id"] for row in waiting} == {ids["refund_7"], ids["refund_8"]}

    acme = json_lines(ok(tbay("log", "--tenant", "acme", "--json")))
    assert [(row["id"], row["tenant"]) for row in acme] == [(ids["lookup_acme"], "acme")]

    both = json_lines(ok(tbay("log", "--tool", "lookup", "--status", "SUCCEEDED", "--json")))
    assert {row["id"] for row in both} == {ids["lookup"], ids["lookup_acme"]}

    newest_two = json_lines(ok(tbay("log", "--limit", "2", "--json")))
    assert [row["id"] for row in newest_two] == [ids["refund_8"], ids["refund_7"]]
    assert len(table_rows(ok(tbay("log", "--limit", "3")))) == 3

    assert ok(tbay("log", "--tool", "no_such_tool")).strip() == "no executions"
    assert ok(tbay("log", "--tool", "no_such_tool", "--json")).strip() == ""


def test_log_rejects_an_unknown_status(tbay: Callable[..., Any], populated: Populated) -> None:
    result = tbay("log", "--status", "DONE")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "DONE" in result.stderr


def test_log_limit_beyond_sqlite_range_is_a_clean_error(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    result = tbay("log", "--limit", str(10**20))
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "--limit" in result.stderr


def test_log_negative_limit_is_refused(tbay: Callable[..., Any], populated: Populated) -> None:
    result = tbay("log", "--limit", "-1")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr


def test_log_json_has_documented_keys_and_redacted_args(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    out = ok(tbay("log", "--json"))
    rows = json_lines(out)
    assert len(rows) == 8
    for row in rows:
        assert set(row) >= JSON_KEYS, JSON_KEYS - set(row)
        assert isinstance(row["args"], dict)
        assert isinstance(row["attempt"], int)
    by_id = {row["id"]: row for row in rows}

    charge = by_id[populated.ids["charge"]]
    assert charge["tool_name"] == "charge"
    assert charge["status"] == "SUCCEEDED"
    assert charge["policy_name"] == "mutating"
    assert charge["args"] == {"order_id": "order-1", "amount": 10.0, "password": MASK}
    assert charge["created_at"] and charge["started_at"] and charge["finished_at"]
    assert SECRET not in out

    explode = by_id[populated.ids["explode"]]
    assert explode["status"] == "FAILED"
    assert explode["error_type"] == "ValueError"
    assert "boom 42" in explode["error_message"]

    refund = by_id[populated.ids["refund_7"]]
    assert refund["status"] == "WAITING_APPROVAL"
    assert refund["started_at"] is None and refund["finished_at"] is None
    assert refund["args"] == {"order_id": "order-7", "amount": 500.0}

    assert by_id[populated.ids["lookup_acme"]]["tenant"] == "acme"
    assert by_id[populated.ids["lookup_acme"]]["agent"] == "support-bot"
    assert by_id[populated.ids["lookup"]]["tenant"] is None


# ---------------------------------------------------------------------------
# tbay show
# ---------------------------------------------------------------------------


def test_show_prints_a_failure_with_its_traceback(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    execution_id = populated.ids["explode"]
    out = ok(tbay("show", execution_id))
    assert execution_id in out
    assert "explode" in out and "FAILED" in out
    assert "ValueError" in out and "boom 42" in out
    assert "traceback:" in out
    assert "Traceback (most recent call last)" in out
    assert 'raise ValueError(f"boom {x}")' in out  # the user's line, from the stored traceback


def test_show_success_masks_secrets(tbay: Callable[..., Any], populated: Populated) -> None:
    execution_id = populated.ids["charge"]
    out = ok(tbay("show", execution_id))
    assert execution_id in out and "charge" in out and "SUCCEEDED" in out
    assert "order-1" in out and MASK in out
    assert SECRET not in out
    assert "traceback" not in out.lower()


def test_show_json(tbay: Callable[..., Any], populated: Populated) -> None:
    execution_id = populated.ids["explode"]
    data = json.loads(ok(tbay("show", execution_id, "--json")))
    assert set(data) >= JSON_KEYS
    assert data["id"] == execution_id
    assert data["status"] == "FAILED"
    assert data["error_type"] == "ValueError"
    assert "boom 42" in data["error_traceback"]
    assert data == populated.client.get(execution_id).to_json_dict()

    charge = json.loads(ok(tbay("show", populated.ids["charge"], "--json")))
    assert charge["args"]["password"] == MASK


# ---------------------------------------------------------------------------
# choosing the database
# ---------------------------------------------------------------------------


def test_db_url_option_and_environment_select_the_database(
    tbay: Callable[..., Any],
    populated: Populated,
    cli_env: dict[str, str],
    db_url: str,
    tmp_path: Path,
) -> None:
    expected = populated.ids["explode"]
    no_env = {k: v for k, v in cli_env.items() if k != "TBAY_DB_URL"}

    by_option = json_lines(
        ok(tbay("--db-url", db_url, "log", "--status", "FAILED", "--json", env=no_env))
    )
    assert [row["id"] for row in by_option] == [expected]

    by_env = json_lines(ok(tbay("log", "--status", "FAILED", "--json", env=cli_env)))
    assert [row["id"] for row in by_env] == [expected]

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    TbayClient(other_url).close()  # an empty tbay database (a missing file is an error of its own)
    # the option wins over the environment...
    winner = json_lines(
        ok(tbay("--db-url", db_url, "log", "--json", env={**cli_env, "TBAY_DB_URL": other_url}))
    )
    assert len(winner) == 8
    # ...and each really reads its own file
    assert ok(tbay("log", env={**cli_env, "TBAY_DB_URL": other_url})).strip() == "no executions"
    missing = tbay("--db-url", other_url, "show", expected, env=no_env)
    clean_error(missing, expected)

    # nothing fell back to the default database under HOME
    assert not (Path(cli_env["HOME"]) / ".tbay").exists()


@pytest.mark.parametrize("command", ["show", "approve", "reject", "forget"])
def test_unknown_execution_id_is_one_clear_line(
    tbay: Callable[..., Any], populated: Populated, command: str
) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    line = clean_error(tbay(command, unknown), unknown)
    assert "no execution" in line.lower()


@pytest.mark.parametrize(
    "url", ["mysql://x", "sqlite:///", "sqlite://relative.db", "sqlite:///:memory:"]
)
def test_bad_database_url_is_one_clear_line(
    tbay: Callable[..., Any], cli_env: dict[str, str], url: str
) -> None:
    clean_error(tbay("--db-url", url, "log"))
    clean_error(tbay("log", env={**cli_env, "TBAY_DB_URL": url}))


def test_a_file_that_is_not_a_database_is_one_clear_line(
    tbay: Callable[..., Any], tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not SQLite\n" * 100)
    clean_error(tbay("--db-url", f"sqlite:///{bogus}", "log"), "notes.txt")


def test_a_database_password_never_reaches_the_error(tbay: Callable[..., Any]) -> None:
    result = tbay("--db-url", "postgresql://tbay:s3cr3t-pw@127.0.0.1:1/tbay", "log")
    clean_error(result)
    assert "s3cr3t-pw" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# approvals
# ---------------------------------------------------------------------------


def test_pending_then_approve_lets_the_call_run_once(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    client, refund = populated.client, populated.tools["refund"]
    execution_id = populated.ids["refund_7"]

    pending_out = ok(tbay("pending"))
    assert execution_id in pending_out and populated.ids["refund_8"] in pending_out
    assert "refund" in pending_out and "WAITING_APPROVAL" in pending_out
    assert populated.ids["charge"] not in pending_out
    pending_rows = json_lines(ok(tbay("pending", "--json")))
    assert {row["id"] for row in pending_rows} == {execution_id, populated.ids["refund_8"]}

    # still pending for the agent until a human decides
    with pytest.raises(ApprovalPending):
        refund("order-7", 500.0)
    assert populated.ran["refund"] == 0

    out = ok(tbay("approve", execution_id, "--by", "alice", "--reason", "ok"))
    assert execution_id in out
    approved = client.get(execution_id)
    assert (approved.decided_by, approved.decision_reason) == ("alice", "ok")
    assert execution_id not in ok(tbay("pending"))

    # a second decision before the call runs is refused and changes nothing
    clean_error(tbay("approve", execution_id, "--by", "mallory", "--reason", "again"), execution_id)
    clean_error(tbay("reject", execution_id, "--by", "mallory", "--reason", "no"), execution_id)
    unchanged = client.get(execution_id)
    assert (unchanged.status, unchanged.decided_by, unchanged.decision_reason) == (
        "WAITING_APPROVAL",
        "alice",
        "ok",
    )

    # the same call made again runs, once
    assert refund("order-7", 500.0) == "refunded 500.0 on order-7"
    assert populated.ran["refund"] == 1
    assert refund("order-7", 500.0) == "refunded 500.0 on order-7"
    assert populated.ran["refund"] == 1
    done = client.get(execution_id)
    assert done.status == "SUCCEEDED"

    # approving an ended execution is an error, never a silent no-op
    clean_error(tbay("approve", execution_id, "--by", "mallory", "--reason", "late"), execution_id)
    after = client.get(execution_id)
    assert after == done
    shown = json.loads(ok(tbay("show", execution_id, "--json")))
    assert (shown["status"], shown["decided_by"], shown["decision_reason"]) == (
        "SUCCEEDED",
        "alice",
        "ok",
    )


def test_reject_gives_the_caller_the_reason(tbay: Callable[..., Any], populated: Populated) -> None:
    client, refund = populated.client, populated.tools["refund"]
    execution_id = populated.ids["refund_8"]

    out = ok(tbay("reject", execution_id, "--by", "bob", "--reason", "too big"))
    assert execution_id in out

    with pytest.raises(ApprovalRejected) as rejected:
        refund("order-8", 900.0)
    assert rejected.value.reason == "too big"
    assert rejected.value.by == "bob"
    assert populated.ran["refund"] == 0

    row = client.get(execution_id)
    assert (row.status, row.decided_by, row.decision_reason) == ("REJECTED", "bob", "too big")
    assert execution_id not in ok(tbay("pending"))
    # a late approve of the rejected call changes nothing
    clean_error(tbay("approve", execution_id, "--by", "mallory"), execution_id)
    assert client.get(execution_id) == row
    # the other request still waits, untouched
    assert client.get(populated.ids["refund_7"]).status == "WAITING_APPROVAL"


def test_pending_says_so_when_nothing_waits(tbay: Callable[..., Any], populated: Populated) -> None:
    ok(tbay("reject", populated.ids["refund_7"], "--reason", "no"))
    ok(tbay("reject", populated.ids["refund_8"], "--reason", "no"))
    assert ok(tbay("pending")).strip() == "nothing waits for approval"
    assert ok(tbay("pending", "--json")).strip() == ""


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_cli_decision_releases_a_caller_blocked_in_another_process(
    tbay: Callable[..., Any], client: TbayClient, decision: str
) -> None:
    """Block mode: the caller waits in this process; the operator decides from a separate CLI process."""
    ran = []

    def wire(amount: float) -> str:
        ran.append(amount)
        return f"wired {amount}"

    client.policies["gate"] = client.policies["destructive"].copy(
        name="gate", approval_timeout="60s"
    )
    guarded_wire = client.guard(wire, policy="gate")
    outcome: dict[str, Any] = {}

    def caller() -> None:
        try:
            outcome["value"] = guarded_wire(250.0)
        except BaseException as exc:  # reported to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not client.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    (waiting,) = client.pending()
    assert thread.is_alive() and not ran

    ok(tbay(decision, waiting.id, "--by", "carol", "--reason", "checked"))
    thread.join(20)
    assert not thread.is_alive(), "the blocked caller was not released by the CLI decision"
    if decision == "approve":
        assert outcome == {"value": "wired 250.0"} and ran == [250.0]
        assert client.get(waiting.id).status == "SUCCEEDED"
    else:
        assert isinstance(outcome.get("error"), ApprovalRejected), outcome
        assert outcome["error"].reason == "checked" and outcome["error"].by == "carol"
        assert not ran


def test_pending_omits_requests_whose_approval_timed_out(
    tbay: Callable[..., Any], client: TbayClient
) -> None:
    client.policies["hasty"] = client.policies["destructive"].copy(
        name="hasty", approval_mode="defer", approval_timeout="100ms"
    )
    hasty = client.guard(lambda amount: amount, policy="hasty", tool_name="hasty_refund")
    with pytest.raises(ApprovalPending) as pending:
        hasty(5.0)
    time.sleep(0.3)
    # the request can no longer be approved...
    clean_error(tbay("approve", pending.value.execution_id), pending.value.execution_id)
    # ...so it must not be offered as waiting (checked on a fresh request, untouched by approve)
    with pytest.raises(ApprovalPending) as again:
        hasty(6.0)
    time.sleep(0.3)
    assert again.value.execution_id not in ok(tbay("pending"))


# ---------------------------------------------------------------------------
# forget
# ---------------------------------------------------------------------------


def test_forget_makes_the_next_identical_call_run_fresh(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    charge = populated.tools["charge"]
    assert charge("order-1", 10.0, SECRET) == "charged 10.0 on order-1"
    assert populated.ran["charge"] == 1  # replayed

    out = ok(tbay("forget", populated.ids["charge"]))
    assert populated.ids["charge"] in out

    assert charge("order-1", 10.0, SECRET) == "charged 10.0 on order-1"
    assert populated.ran["charge"] == 2
    assert len(populated.client.executions(tool="charge")) == 2
    assert charge("order-1", 10.0, SECRET) == "charged 10.0 on order-1"
    assert populated.ran["charge"] == 2  # the fresh result is replayed in turn

    # forgetting twice is not an error, and says the key is gone
    again = ok(tbay("forget", populated.ids["charge"]))
    assert populated.ids["charge"] in again


def test_forget_rearms_a_replayed_failure(tbay: Callable[..., Any], populated: Populated) -> None:
    from tbay_core import ExecutionFailed

    explode = populated.tools["explode"]
    with pytest.raises(ExecutionFailed):
        explode(42)
    assert populated.ran["explode"] == 1
    ok(tbay("forget", populated.ids["explode"]))
    with pytest.raises(ValueError, match="boom 42"):
        explode(42)
    assert populated.ran["explode"] == 2


def test_forget_a_rejection_lets_the_call_ask_again(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    refund, rejected_id = populated.tools["refund"], populated.ids["refund_8"]
    ok(tbay("reject", rejected_id, "--reason", "too big"))
    with pytest.raises(ApprovalRejected):
        refund("order-8", 900.0)
    ok(tbay("forget", rejected_id))
    with pytest.raises(ApprovalPending) as asked_again:
        refund("order-8", 900.0)
    assert asked_again.value.execution_id != rejected_id
    assert asked_again.value.execution_id in ok(tbay("pending"))
    assert populated.ran["refund"] == 0


def test_forget_refuses_a_waiting_execution(tbay: Callable[..., Any], populated: Populated) -> None:
    execution_id = populated.ids["refund_7"]
    clean_error(tbay("forget", execution_id), execution_id)
    assert populated.client.get(execution_id).status == "WAITING_APPROVAL"


# ---------------------------------------------------------------------------
# pause / resume / stats
# ---------------------------------------------------------------------------


def test_pause_and_resume_one_tool(tbay: Callable[..., Any], populated: Populated) -> None:
    lookup, charge = populated.tools["lookup"], populated.tools["charge"]
    ok(tbay("pause", "--tool", "lookup", "--reason", "maintenance", "--by", "ops"))

    with pytest.raises(ToolPaused) as paused:
        lookup("new query")
    assert paused.value.reason == "maintenance"
    assert paused.value.by == "ops"
    assert lookup("tbay") == {"query": "tbay", "hits": 3}  # a stored result is still replayed
    assert charge("order-2", 1.0, "x") == "charged 1.0 on order-2"  # other tools are not paused
    ran_before = populated.ran["lookup"]

    stats = {row["tool"]: row for row in json_lines(ok(tbay("stats", "--json")))}
    assert stats["lookup"]["paused"] is True
    assert stats["charge"]["paused"] is False

    ok(tbay("resume", "--tool", "lookup"))
    assert lookup("new query") == {"query": "new query", "hits": 3}
    assert populated.ran["lookup"] == ran_before + 1
    stats = {row["tool"]: row for row in json_lines(ok(tbay("stats", "--json")))}
    assert stats["lookup"]["paused"] is False


def test_pause_without_a_tool_stops_every_tool(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    ok(tbay("pause", "--reason", "incident"))
    with pytest.raises(ToolPaused):
        populated.tools["charge"]("order-3", 1.0, "x")
    with pytest.raises(ToolPaused):
        populated.tools["quote"]("USD")
    assert all(row["paused"] for row in json_lines(ok(tbay("stats", "--json"))))
    ok(tbay("resume"))
    assert populated.tools["charge"]("order-3", 1.0, "x") == "charged 1.0 on order-3"


def test_stats_counts_per_tool(tbay: Callable[..., Any], populated: Populated) -> None:
    rows = json_lines(ok(tbay("stats", "--json")))
    stats = {row["tool"]: row for row in rows}
    assert set(stats) == {"lookup", "charge", "explode", "quote", "refund"}
    for row in rows:
        assert {"executions", "failed", "pending", "paused"} <= set(row)
    assert stats["lookup"]["executions"] == 2 and stats["lookup"]["failed"] == 0
    assert stats["quote"]["executions"] == 2
    assert stats["explode"]["executions"] == 1 and stats["explode"]["failed"] == 1
    assert stats["charge"]["succeeded"] == 1
    assert stats["refund"]["pending"] == 2 and stats["refund"]["executions"] == 2
    assert not any(row["paused"] for row in rows)

    text = ok(tbay("stats"))
    header = text.splitlines()[0]
    for column in ("TOOL", "EXECUTIONS", "FAILED", "PENDING", "PAUSED"):
        assert column in header
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert set(lines) == set(stats)
    assert lines["explode"][1] == "1"


def test_stats_shows_a_paused_tool_that_never_ran(
    tbay: Callable[..., Any], populated: Populated
) -> None:
    ok(tbay("pause", "--tool", "send_email", "--reason", "spam wave"))
    stats = {row["tool"]: row for row in json_lines(ok(tbay("stats", "--json")))}
    assert stats["send_email"]["paused"] is True


# ---------------------------------------------------------------------------
# purge
# ---------------------------------------------------------------------------


def test_purge_deletes_expired_readonly_rows_but_keeps_live_results(
    tbay: Callable[..., Any], client: TbayClient
) -> None:
    ran = {"quick": 0, "slow": 0, "pay": 0}

    def quick(q: str) -> str:
        ran["quick"] += 1
        return q

    def slow(q: str) -> str:
        ran["slow"] += 1
        return q

    def pay(order: str) -> str:
        ran["pay"] += 1
        return f"paid {order}"

    client.policies["quick"] = client.policies["readonly"].copy(name="quick", cache_ttl=0.05)
    quick_g = client.guard(quick, policy="quick")
    slow_g = client.guard(slow, policy="readonly")  # 5 minute TTL: still live
    pay_g = client.guard(pay, policy="mutating")  # kept forever
    quick_g("a")
    slow_g("b")
    pay_g("o-1")
    time.sleep(0.2)
    assert len(client.executions()) == 3

    dry = ok(tbay("purge", "--older-than", "0s", "--dry-run"))
    assert "would delete 1 execution" in dry
    assert len(client.executions()) == 3  # nothing deleted
    young = ok(tbay("purge", "--older-than", "1h", "--dry-run"))
    assert "would delete 0 execution" in young

    done = ok(tbay("purge", "--older-than", "0s"))
    assert "deleted 1 execution" in done
    remaining = {e.tool_name for e in client.executions()}
    assert remaining == {"slow", "pay"}

    # the live results still replay; the expired one runs fresh
    assert pay_g("o-1") == "paid o-1" and ran["pay"] == 1
    assert slow_g("b") == "b" and ran["slow"] == 1
    assert quick_g("a") == "a" and ran["quick"] == 2

    assert "would delete 0 execution" in ok(tbay("purge", "--older-than", "1h", "--dry-run"))


def test_purge_rejects_a_bad_duration(tbay: Callable[..., Any], populated: Populated) -> None:
    clean_error(tbay("purge", "--older-than", "soon"), "soon")
    assert len(populated.client.executions()) == 8


# ---------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------


def test_policies_lists_the_builtins(tbay: Callable[..., Any]) -> None:
    out = ok(tbay("policies"))
    names = {line.split(":")[0] for line in out.splitlines() if line.strip()}
    assert {"readonly", "mutating", "destructive", "volatile"} <= names
    as_json = {row["name"]: row for row in json_lines(ok(tbay("policies", "--json")))}
    assert {"readonly", "mutating", "destructive", "volatile"} <= set(as_json)
    assert as_json["readonly"]["cache_ttl"] == 300.0
    assert as_json["destructive"]["approval_required"] is True
    assert as_json["volatile"]["idempotent"] is False


def test_policies_text_shows_what_sets_each_builtin_apart(tbay: Callable[..., Any]) -> None:
    lines = {line.split(":")[0]: line for line in ok(tbay("policies")).splitlines() if line.strip()}
    assert "idempotent=False" in lines["volatile"]
    assert "cache_ttl=300" in lines["readonly"]
    assert "approval_required=True" in lines["destructive"]


def test_policies_with_a_policy_file_lists_its_policies(tbay: Callable[..., Any]) -> None:
    out = ok(tbay("--policy-file", str(EXAMPLE_POLICY), "policies"))
    assert any(line.startswith("all_fields_reference:") for line in out.splitlines())
    assert any(
        line.startswith("readonly:") and "cache_ttl=600.0" in line for line in out.splitlines()
    )


def test_policies_check_accepts_the_example_file(tbay: Callable[..., Any]) -> None:
    out = ok(tbay("policies", "--check", str(EXAMPLE_POLICY)))
    assert "OK" in out and "policy.example.yaml" in out


@pytest.mark.parametrize(
    "text",
    [
        "policies:\n  broken: [\n",  # not YAML
        "policies:\n  fast:\n    cache_tll: 5m\n",  # unknown field
        "policies:\n  fast:\n    cache_ttl: soon\n",  # bad duration
        "policies:\n  fast:\n    idempotent: false\n    cache_ttl: 5m\n",  # contradiction
    ],
)
def test_policies_check_rejects_a_malformed_file(
    tbay: Callable[..., Any], tmp_path: Path, text: str
) -> None:
    path = tmp_path / "my_policies.yaml"
    path.write_text(text)
    clean_error(tbay("policies", "--check", str(path)), "my_policies.yaml")


def test_policies_check_of_a_missing_file(tbay: Callable[..., Any], tmp_path: Path) -> None:
    clean_error(tbay("policies", "--check", str(tmp_path / "absent.yaml")), "absent.yaml")


def test_a_mistyped_sqlite_path_is_an_error_not_a_new_empty_database(
    python: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    typo = tmp_path / "typo.db"
    for command in (["log"], ["pending"], ["stats"], ["show", "abc"]):
        result = subprocess.run(
            [python, "-m", "tbay_core.cli", "--db-url", f"sqlite:///{typo}", *command],
            env=subprocess_env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode != 0
        assert "no tbay database at" in result.stderr and "Traceback" not in result.stderr
    assert not typo.exists()
    paused = subprocess.run(
        [python, "-m", "tbay_core.cli", "--db-url", f"sqlite:///{typo}", "pause", "--reason", "incident"],
        env=subprocess_env, capture_output=True, text=True, timeout=60,
    )
    assert paused.returncode == 0, paused.stderr  # an operator may stop agents before any call
    assert typo.exists()
