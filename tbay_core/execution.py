"""The audit record of one execution attempt, as the client, the CLI and adapters see it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

EXECUTION_FIELDS = (
    "id",
    "tool_name",
    "tenant",
    "agent",
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
)


def to_datetime(epoch: float | None) -> datetime | None:
    """Stored times are epoch seconds (database clock); records show aware UTC datetimes."""
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclass(frozen=True)
class Execution:
    """One attempt of one guarded call: who asked, with what (redacted) arguments, and how it ended.

    A key that was retried or recovered has one ``Execution`` per attempt;
    nothing is overwritten, so the log tells the whole story.
    """

    id: str
    tool_name: str
    tenant: str | None
    agent: str | None
    status: str
    policy_name: str
    attempt: int
    args: dict[str, Any]
    error_type: str | None
    error_message: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    key: str | None = None
    replayable: bool = True
    error_traceback: str | None = None
    lease_expires_at: datetime | None = None
    approval_reason: str | None = None
    approval_deadline: datetime | None = None
    links: dict[str, Any] = field(default_factory=dict)
    approved: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds between start and finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the documented keys (times as ISO 8601 strings)."""
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime):
                data[name] = value.isoformat()
        return data
