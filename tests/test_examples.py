"""The runnable examples do what the README says, offline, in a fresh process.

`examples/plain_python_demo.py` is the first thing a new user runs (README quick
start), so it is run here exactly like that: a separate interpreter, a temp
HOME, and either ``TBAY_DB_URL`` or the default database under ``~/.tbay``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tbay_core import TbayClient

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "examples" / "plain_python_demo.py"
DEMO_TIMEOUT = 120  # generous: the demo itself takes well under a second
TOOLS = {"search_docs", "charge_card", "fx_quote", "refund"}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A real SQLite file (overrides conftest's store-parametrised ``db_url``): the CLI and the demo
    are exercised on the embedded default store; ``client`` and ``subprocess_env`` follow it."""
    return f"sqlite:///{tmp_path / 'tbay.db'}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def run_demo(python: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [python, str(DEMO)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"demo exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def assert_story(out: str) -> str:
    """The demo's printed story; returns the id of the refund that waited for approval."""
    assert "the search body ran 1 time(s)" in out, out
    assert "same receipt: True" in out, out
    assert "the card was charged 1 time(s)" in out, out
    assert "the quote body ran 2 time(s)" in out, out
    pending = re.search(r"refund\('order-8', 500\.0\) is pending: execution ([0-9a-f]+)", out)
    assert pending, out
    execution_id = pending.group(1)
    assert f"approved (in a terminal: tbay approve {execution_id})" in out, out
    assert re.search(
        r"refund\('order-8', 500\.0\)\s+called again .*-> refunded 500\.00 on order-8", out
    ), out
    assert "the refund body ran 2 time(s)" in out, out
    return execution_id


def assert_recorded(db_url: str, approved_id: str, runs: int = 1) -> None:
    with TbayClient(db_url) as client:
        rows = client.executions(limit=None)
        assert {row.tool_name for row in rows} == TOOLS
        by_tool = {tool: [row for row in rows if row.tool_name == tool] for tool in TOOLS}
        assert len(by_tool["search_docs"]) == runs
        assert len(by_tool["charge_card"]) == runs
        assert len(by_tool["fx_quote"]) == 2 * runs
        assert len(by_tool["refund"]) == 2 * runs
        assert all(row.status == "SUCCEEDED" for row in rows), [
            (r.tool_name, r.status) for r in rows
        ]
        assert all(row.tenant == "acme" and row.agent == "support-bot" for row in rows)
        approved = client.get(approved_id)
        assert approved.tool_name == "refund"
        assert approved.status == "SUCCEEDED"
        assert (approved.decided_by, approved.decision_reason) == (
            "demo-operator",
            "customer verified",
        )
        assert approved.args["order_id"] == "order-8" and approved.args["amount"] == 500.0


def test_demo_with_tbay_db_url(
    python: str, subprocess_env: dict[str, str], db_url: str, home: Path, tmp_path: Path
) -> None:
    env = {**subprocess_env, "HOME": str(home)}
    out = run_demo(python, env, tmp_path)
    assert db_url in out.splitlines()[0]
    approved_id = assert_story(out)
    assert_recorded(db_url, approved_id)
    assert not (home / ".tbay").exists(), (
        "TBAY_DB_URL was ignored: the default database was created"
    )

    # README: "After the demo, tbay log shows what was recorded."
    log = subprocess.run(
        [python, "-m", "tbay_core.cli", "log", "--limit", "10"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    assert log.returncode == 0, log.stderr
    for tool in TOOLS:
        assert tool in log.stdout
    assert approved_id in log.stdout


def test_demo_tells_the_same_story_when_run_again(
    python: str, subprocess_env: dict[str, str], db_url: str, home: Path, tmp_path: Path
) -> None:
    env = {**subprocess_env, "HOME": str(home)}
    first = assert_story(run_demo(python, env, tmp_path))
    second = assert_story(run_demo(python, env, tmp_path))
    assert first != second
    assert_recorded(db_url, second, runs=2)


def test_demo_without_tbay_db_url_uses_the_default_database_under_home(
    python: str, subprocess_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    env = {key: value for key, value in subprocess_env.items() if key != "TBAY_DB_URL"}
    env["HOME"] = str(home)
    out = run_demo(python, env, tmp_path)
    approved_id = assert_story(out)

    default_db = home / ".tbay" / "db.sqlite"
    assert default_db.is_file(), f"no default database at {default_db}"
    assert "~/.tbay/db.sqlite" in out.splitlines()[0]
    assert_recorded(f"sqlite:///{default_db}", approved_id)
    # nothing was written next to the working directory instead
    assert not list(tmp_path.glob("*.sqlite")) and not list(tmp_path.glob("*.db"))


def test_approval_flow_example_blocks_until_approved(
    python: str, subprocess_env: dict[str, str], home: Path, tmp_path: Path, db_url: str
) -> None:
    """`examples/approval_flow.py --auto-approve`: the refund above the threshold waits, then runs once."""
    env = {**subprocess_env, "HOME": str(home)}
    result = subprocess.run(
        [python, str(REPO_ROOT / "examples" / "approval_flow.py"), "--auto-approve"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=DEMO_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(under the threshold: no human needed)" in result.stdout
    assert re.search(r"approved after [0-9.]+s -> refunded 500\.00 on order-", result.stdout), result.stdout
    with TbayClient(db_url) as client:
        refunds = client.executions(tool="refund")
        assert sorted(e.status for e in refunds) == ["SUCCEEDED", "SUCCEEDED"]
        approved = [e for e in refunds if e.decided_by]
        assert [e.decided_by for e in approved] == ["auto-approver"]
