"""The operator's command line: see what agents did and steer what they may do.

Every command takes ``--db-url`` (default ``$TBAY_DB_URL``, else the default
SQLite file); listings take ``--json`` for one JSON object per line. Errors
print one readable line and exit non-zero.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar

import click

from .client import DEFAULT_DB_URL, TbayClient
from .decide import STATUSES
from .errors import StoreError, TbayError
from .execution import EXECUTION_FIELDS, Execution
from .policy import Policy, load_policies
from .store.sqlite import sqlite_path_from_url

F = TypeVar("F", bound=Callable[..., Any])


class _Context:
    def __init__(self, db_url: str | None, policy_file: str | None):
        self.db_url = db_url
        self.policy_file = policy_file
        self.may_create = False  # only `pause` may start a database: an operator can stop agents first
        self._client: TbayClient | None = None

    @property
    def client(self) -> TbayClient:
        if self._client is None:
            url = self.db_url or os.environ.get("TBAY_DB_URL") or DEFAULT_DB_URL
            if url.startswith("sqlite:") and not self.may_create:
                path = sqlite_path_from_url(url)
                if not os.path.exists(path):
                    raise StoreError(
                        f"no tbay database at {path} (from {url}); check --db-url or TBAY_DB_URL "
                        "(it is created by the first guarded call)"
                    )
            self._client = TbayClient(url, policy_file=self.policy_file)
        return self._client


def _friendly(command: F) -> F:
    """Turn tbay errors into one line on stderr and exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TbayError as exc:
            raise click.ClickException(str(exc)) from None

    return run  # type: ignore[return-value]


@click.group()
@click.option("--db-url", envvar="TBAY_DB_URL", default=None, metavar="URL",
              help="Database URL (sqlite:///path.db or postgresql://...). Default: $TBAY_DB_URL, "
                   "else sqlite:///~/.tbay/db.sqlite.")
@click.option("--policy-file", envvar="TBAY_POLICY_FILE", default=None, metavar="FILE",
              help="Policy YAML file (default: $TBAY_POLICY_FILE, else the built-in policies).")
@click.pass_context
def main(ctx: click.Context, db_url: str | None, policy_file: str | None) -> None:
    """tbay: see and control what your AI agents' tool calls did.

    Every guarded tool call is recorded as an execution. Use `tbay log` to list
    them, `tbay show ID` for one, and the approval commands to let a waiting
    call run or stop it.
    """
    ctx.obj = _Context(db_url, policy_file)
    ctx.call_on_close(lambda: ctx.obj._client.close() if ctx.obj._client else None)


# ---------------------------------------------------------------------- reading


def _short_time(execution: Execution) -> str:
    return execution.created_at.strftime("%Y-%m-%d %H:%M:%S") if execution.created_at else "-"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def _print_executions(executions: Iterable[Execution], as_json: bool) -> None:
    executions = list(executions)
    if as_json:
        for execution in executions:
            data = execution.to_json_dict()
            click.echo(json.dumps({name: data[name] for name in (*EXECUTION_FIELDS, *data) if name in data},
                                  sort_keys=False, default=str))
        return
    if not executions:
        click.echo("no executions")
        return
    rows = []
    for execution in executions:
        duration = execution.duration
        outcome = execution.error_type or ""
        rows.append([
            execution.id, _short_time(execution), execution.tool_name, execution.status,
            str(execution.attempt), execution.tenant or "-", execution.policy_name,
            f"{duration * 1000:.1f}ms" if duration is not None else "-", outcome,
        ])
    click.echo(_table(rows, ["ID", "CREATED (UTC)", "TOOL", "STATUS", "ATTEMPT", "TENANT", "POLICY",
                             "DURATION", "ERROR"]))


@main.command()
@click.option("--tool", help="Only executions of this tool.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only this status.")
@click.option("--tenant", help="Only this tenant.")
@click.option("--limit", type=click.IntRange(1, 2**63 - 1), default=50, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@_friendly
def log(obj: _Context, tool: str | None, status: str | None, tenant: str | None, limit: int,
        as_json: bool) -> None:
    """List executions, newest first."""
    _print_executions(
        obj.client.executions(tool=tool, status=status.upper() if status else None, tenant=tenant,
                              limit=limit),
        as_json,
    )


@main.command()
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the execution as one JSON object.")
@click.pass_obj
@_friendly
def show(obj: _Context, execution_id: str, as_json: bool) -> None:
    """Show one execution in full: arguments (redacted), outcome, approval and links."""
    execution = obj.client.get(execution_id)
    data = execution.to_json_dict()
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    for name, value in data.items():
        if value is None or value == {} or name == "error_traceback":
            continue
        if isinstance(value, dict):
            value = json.dumps(value, indent=2, sort_keys=True, default=str).replace("\n", "\n  ")
        click.echo(f"{name}: {value}")
    if execution.error_traceback:
        click.echo("traceback:\n" + execution.error_traceback.rstrip())


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@_friendly
def pending(obj: _Context, as_json: bool) -> None:
    """List executions waiting for a human decision."""
    waiting = obj.client.pending()
    if as_json or waiting:
        _print_executions(waiting, as_json)
    else:
        click.echo("nothing waits for approval")


# ---------------------------------------------------------------------- steering


@main.command()
@click.argument("execution_id")
@click.option("--by", help="Who approves (recorded in the log).")
@click.option("--reason", help="Why (recorded in the log).")
@click.pass_obj
@_friendly
def approve(obj: _Context, execution_id: str, by: str | None, reason: str | None) -> None:
    """Approve a waiting execution so it runs (once)."""
    execution = obj.client.approve(execution_id, by=by, reason=reason)
    click.echo(f"approved {execution.id} ({execution.tool_name})")


@main.command()
@click.argument("execution_id")
@click.option("--by", help="Who rejects (recorded in the log).")
@click.option("--reason", help="Why; the caller receives it.")
@click.pass_obj
@_friendly
def reject(obj: _Context, execution_id: str, by: str | None, reason: str | None) -> None:
    """Reject a waiting execution: it never runs and the caller gets the reason."""
    execution = obj.client.reject(execution_id, by=by, reason=reason)
    click.echo(f"rejected {execution.id} ({execution.tool_name})")


@main.command()
@click.argument("execution_id")
@click.pass_obj
@_friendly
def forget(obj: _Context, execution_id: str) -> None:
    """Release an execution's key: the next identical call runs fresh instead of replaying."""
    if obj.client.forget(execution_id):
        click.echo(f"forgot {execution_id}: the next identical call runs fresh")
    else:
        click.echo(f"{execution_id} no longer held its key (already forgotten, expired or superseded)")


@main.command()
@click.option("--tool", help="Pause only this tool (default: every tool).")
@click.option("--reason", help="Shown to callers and agents.")
@click.option("--by", help="Who paused (recorded).")
@click.pass_obj
@_friendly
def pause(obj: _Context, tool: str | None, reason: str | None, by: str | None) -> None:
    """Kill switch: refuse new executions (stored results are still replayed)."""
    obj.may_create = True
    obj.client.pause(tool, reason=reason, by=by)
    click.echo(f"paused {tool or 'every tool'}")


@main.command()
@click.option("--tool", help="Resume only this tool (default: lift the global pause).")
@click.pass_obj
@_friendly
def resume(obj: _Context, tool: str | None) -> None:
    """Lift a pause."""
    obj.client.resume(tool)
    click.echo(f"resumed {tool or 'every tool'}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@_friendly
def stats(obj: _Context, as_json: bool) -> None:
    """Per tool: executions, replays, failures, p50/p95 duration, pending approvals, paused."""
    rows = obj.client.stats()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no executions")
        return

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}ms"

    click.echo(_table(
        [[r["tool"], str(r["executions"]), str(r["succeeded"]), str(r["failed"]), str(r["replays"]),
          str(r["pending"]), ms(r["p50_seconds"]), ms(r["p95_seconds"]), "yes" if r["paused"] else "no"]
         for r in rows],
        ["TOOL", "EXECUTIONS", "SUCCEEDED", "FAILED", "REPLAYS", "PENDING", "P50", "P95", "PAUSED"],
    ))


@main.command()
@click.option("--older-than", required=True, metavar="DURATION",
              help="Delete ended executions older than this (30d, 12h, seconds).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.pass_obj
@_friendly
def purge(obj: _Context, older_than: str, dry_run: bool) -> None:
    """Delete old ended executions and expired cache rows (never a result a live key replays)."""
    count = obj.client.purge(older_than, dry_run=dry_run)
    click.echo(f"{'would delete' if dry_run else 'deleted'} {count} execution(s)")


@main.command()
@click.option("--check", "check_file", metavar="FILE", help="Validate a policy file and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@_friendly
def policies(obj: _Context, check_file: str | None, as_json: bool) -> None:
    """List the policies in force (built-ins plus the policy file), or --check a file."""
    if check_file:
        loaded = load_policies(check_file)
        click.echo(f"{check_file}: OK ({len(loaded)} policies: {', '.join(sorted(loaded))})")
        return
    loaded = load_policies(obj.policy_file)
    for name, policy in sorted(loaded.items()):
        fields = dataclasses.asdict(policy)
        if as_json:
            click.echo(json.dumps(fields, default=str))
        else:
            defaults = dataclasses.asdict(Policy(name=name))
            summary = ", ".join(f"{k}={v}" for k, v in fields.items() if v != defaults[k])
            click.echo(f"{name}: {summary or 'defaults (kept forever, no approval)'}")


def run() -> None:
    """Entry point for ``python -m tbay_core.cli``."""
    main(prog_name="tbay")


if __name__ == "__main__":
    run()
