"""Approval webhooks: tell a human (or their chat bot) that a call waits, and let receivers verify it.

The POST is sent from a background thread, best effort: the guarded call never
waits on it and an unreachable URL is logged, never raised. When the policy has
a secret, the body is signed Stripe-style: ``X-Tbay-Timestamp`` carries the
Unix time and ``X-Tbay-Signature`` is ``v1=`` + HMAC-SHA256(secret,
``"{timestamp}.{body}"``), so a receiver can reject forged and replayed posts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .policy import Policy

if TYPE_CHECKING:
    from .client import TbayClient

log = logging.getLogger("tbay")

SIGNATURE_HEADER = "X-Tbay-Signature"
TIMESTAMP_HEADER = "X-Tbay-Timestamp"
WEBHOOK_TIMEOUT = 5.0


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str,
                   tolerance: float = 300) -> bool:
    """True when ``body`` carries a valid tbay signature made with ``secret`` within ``tolerance`` seconds.

    ``headers`` may use any capitalisation (HTTP headers are case-insensitive).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not stamp:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(raw, secret, timestamp), signature)


def send_approval_webhook(client: TbayClient, execution_id: str, policy: Policy) -> threading.Thread:
    """POST the approval request in a background thread; returns the thread (tests join it)."""
    thread = threading.Thread(
        target=_deliver, args=(client, execution_id, policy), name="tbay-webhook", daemon=True
    )
    thread.start()
    return thread


def _deliver(client: TbayClient, execution_id: str, policy: Policy) -> None:
    url = policy.approval_webhook
    assert url is not None
    try:
        execution = client.get(execution_id)
        body = json.dumps({
            "execution_id": execution.id,
            "tool_name": execution.tool_name,
            "tenant": execution.tenant,
            "agent": execution.agent,
            "args": execution.args,
            "policy": policy.name,
            "reason": execution.approval_reason,
            "requested_at": execution.created_at.isoformat() if execution.created_at else None,
            "approval_deadline": (
                execution.approval_deadline.isoformat() if execution.approval_deadline else None
            ),
            "approve_command": f"tbay approve {execution.id}",
            "reject_command": f"tbay reject {execution.id} --reason '...'",
        }, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "tbay-webhook"}
        secret = policy.resolved_webhook_secret()
        if secret:
            timestamp = int(time.time())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(body, secret, timestamp)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read()
    except Exception as exc:  # noqa: BLE001 - best effort: a webhook never breaks or slows a call
        log.warning("tbay: approval webhook %s for execution %s failed: %s", url, execution_id, exc)
