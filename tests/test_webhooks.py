"""Approval webhooks and redaction: what a human's endpoint receives, how it verifies it, and
that secrets never leave in clear (the log, the webhook body, ``tbay log --json``).

A real HTTP server (``http.server`` on 127.0.0.1, an ephemeral port) receives the posts. The
webhook is sent from a background thread, so every test waits for the server to receive it
(bounded by a hang guard). Dead endpoints are a closed port and a socket that accepts but
never answers. Every test runs on both stores (``db_url``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import approval_workers
import pytest
from approval_workers import call_in_thread, finish_call, start_call, wait_until

from tbay_core import ApprovalPending, TbayClient, scope, verify_webhook
from tbay_core.approvals import SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_TIMEOUT, sign

HANG_GUARD = approval_workers.HANG_GUARD
SECRET = "s3cr3t-for-webhook-tests"
CARD = "4111 1111 1111 1111"
BODY_KEYS = {"execution_id", "tool_name", "tenant", "args", "policy", "requested_at"}


# --------------------------------------------------------------------------- harness


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    message: Message
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Hook:
    """A local HTTP endpoint that records every POST it receives."""

    def __init__(self) -> None:
        self.received: queue.Queue[Received] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put(Received(self.path, dict(self.headers.items()), self.headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def next(self, timeout: float = HANG_GUARD) -> Received:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook received within {timeout:g}s (hang guard)") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def closed_url() -> str:
    """A URL nobody listens on: the port was bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def black_hole_url() -> Iterator[str]:
    """A URL that accepts the connection and then never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


@pytest.fixture
def cli(python: str, subprocess_env: dict[str, str],
        tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([python, "-m", "tbay_core.cli", *args], env=subprocess_env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        return result

    return run


def hooked(client: TbayClient, url: str, name: str = "hooked", **changes: Any) -> str:
    """A destructive policy that posts approval requests to ``url`` (defer mode unless told)."""
    changes.setdefault("approval_mode", "defer")
    client.policies[name] = client.policies["destructive"].copy(
        name=name, approval_webhook=url, **changes
    )
    return name


def pay_tool(client: TbayClient, policy: str, runs: list[Any] | None = None) -> Callable[..., Any]:
    def pay(customer: str, password: str, payment: dict, amount: float) -> str:
        if runs is not None:
            runs.append(customer)
        return f"paid {amount}"

    return client.guard(pay, policy=policy)


def pay_args(customer: str = "cus_1", password: str = "hunter2") -> tuple[Any, ...]:
    return customer, password, {"card": {"number": CARD, "holder": "Bob"}}, 120.0


def pending_id(call: Callable[[], Any]) -> str:
    with pytest.raises(ApprovalPending) as pending:
        call_in_thread(call)
    return pending.value.execution_id


def webhook_warning(caplog: pytest.LogCaptureFixture, execution_id: str) -> str | None:
    for record in list(caplog.records):
        message = record.getMessage()
        if "approval webhook" in message and execution_id in message:
            return message
    return None


# --------------------------------------------------------------------------- the body


def test_the_webhook_posts_the_documented_json_body_with_secrets_masked(client, hook):
    pay = pay_tool(client, hooked(client, hook.url))
    with scope(tenant="acme", agent="billing-bot"):
        execution_id = pending_id(lambda: pay(*pay_args()))

    got = hook.next()
    assert got.path == "/hook"
    assert got.message.get_content_type() == "application/json"
    body = got.json()
    assert set(body) >= BODY_KEYS, sorted(body)
    assert body["execution_id"] == execution_id
    assert (body["tool_name"], body["tenant"], body["policy"]) == ("pay", "acme", "hooked")
    assert body["args"] == {
        "customer": "cus_1",
        "password": "***",
        "payment": {"card": {"number": "***", "holder": "Bob"}},
        "amount": 120.0,
    }
    requested_at = datetime.fromisoformat(body["requested_at"])
    assert requested_at == client.get(execution_id).created_at
    for secret in (b"hunter2", CARD.encode(), CARD.replace(" ", "").encode()):
        assert secret not in got.body
    # No secret configured: nothing is signed.
    assert SIGNATURE_HEADER.lower() not in {name.lower() for name in got.headers}
    # The request is still waiting for a human, exactly as the webhook said.
    assert [e.id for e in client.pending()] == [execution_id]


def test_a_block_mode_request_is_approved_with_the_command_the_webhook_carries(client, hook,
                                                                               python,
                                                                               subprocess_env):
    runs: list[Any] = []
    pay = pay_tool(client, hooked(client, hook.url, approval_mode="block",
                                  approval_timeout="60s"), runs)
    thread, box = start_call(lambda: pay(*pay_args()))
    body = hook.next().json()
    assert thread.is_alive() and runs == []
    command = shlex.split(body["approve_command"])
    assert command[:2] == ["tbay", "approve"] and body["execution_id"] in command
    result = subprocess.run([python, "-m", "tbay_core.cli", *command[1:], "--by", "chatops"],
                            env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    assert finish_call(thread, box) == "paid 120.0"
    assert runs == ["cus_1"]
    assert client.get(body["execution_id"]).decided_by == "chatops"


# --------------------------------------------------------------------------- signatures


def test_a_signed_webhook_verifies_with_the_secret_from_the_environment(client, hook, monkeypatch):
    monkeypatch.setenv("TBAY_TEST_SECRET", SECRET)
    pay = pay_tool(client, hooked(client, hook.url, approval_webhook_secret="${TBAY_TEST_SECRET}"))
    pending_id(lambda: pay(*pay_args()))
    got = hook.next()

    assert verify_webhook(got.body, got.headers, SECRET)
    assert verify_webhook(got.body.decode(), got.headers, SECRET)  # str bodies too
    assert verify_webhook(got.body, {k.upper(): v for k, v in got.headers.items()}, SECRET)
    # The documented scheme, recomputed independently: v1=HMAC-SHA256(secret, "{ts}.{body}").
    stamp = got.headers[TIMESTAMP_HEADER]
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.headers[SIGNATURE_HEADER] == f"v1={expected}"
    assert SECRET not in got.body.decode() and SECRET not in json.dumps(got.headers)


def test_a_tampered_body_a_wrong_secret_or_an_old_timestamp_fail_verification(client, hook,
                                                                             monkeypatch):
    monkeypatch.setenv("TBAY_TEST_SECRET", SECRET)
    pay = pay_tool(client, hooked(client, hook.url, approval_webhook_secret="${TBAY_TEST_SECRET}"))
    pending_id(lambda: pay(*pay_args()))
    got = hook.next()
    assert verify_webhook(got.body, got.headers, SECRET)

    tampered = got.body.replace(b'"cus_1"', b'"cus_2"')
    assert tampered != got.body
    assert not verify_webhook(tampered, got.headers, SECRET)
    assert not verify_webhook(got.body, got.headers, "not-the-secret")
    assert not verify_webhook(got.body, {}, SECRET)
    assert not verify_webhook(got.body, {SIGNATURE_HEADER: got.headers[SIGNATURE_HEADER]}, SECRET)

    old = int(time.time()) - 3600  # correctly signed, but an hour old: a replayed post
    replayed = {TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(got.body, SECRET, old)}
    assert not verify_webhook(got.body, replayed, SECRET)
    assert verify_webhook(got.body, replayed, SECRET, tolerance=7200)  # only its age failed it
    # A fresh timestamp cannot be glued onto an old signature.
    restamped = {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: replayed[SIGNATURE_HEADER]}
    assert not verify_webhook(got.body, restamped, SECRET)
    assert not verify_webhook(got.body, {**got.headers, TIMESTAMP_HEADER: "soon"}, SECRET)


def test_a_secret_whose_variable_is_unset_sends_nothing_unsigned(client, hook, monkeypatch, caplog):
    monkeypatch.delenv("TBAY_TEST_SECRET", raising=False)
    caplog.set_level(logging.WARNING, logger="tbay")
    pay = pay_tool(client, hooked(client, hook.url, approval_webhook_secret="${TBAY_TEST_SECRET}"))
    execution_id = pending_id(lambda: pay(*pay_args()))  # the call itself is unaffected

    warning = wait_until(lambda: webhook_warning(caplog, execution_id), "the webhook failure warning")
    assert "TBAY_TEST_SECRET" in warning
    assert hook.received.empty()  # never an unsigned post
    assert [e.id for e in client.pending()] == [execution_id]


# --------------------------------------------------------------------------- dead endpoints


def test_a_closed_port_neither_breaks_nor_delays_a_defer_call(client, closed_url, caplog):
    caplog.set_level(logging.WARNING, logger="tbay")
    pay = pay_tool(client, hooked(client, closed_url))
    execution_id = pending_id(lambda: pay(*pay_args()))
    assert client.get(execution_id).status == "WAITING_APPROVAL"
    wait_until(lambda: webhook_warning(caplog, execution_id), "the webhook failure to be logged")
    # Asking again still answers at once, with the same request.
    assert pending_id(lambda: pay(*pay_args())) == execution_id


def test_a_closed_port_leaves_a_block_mode_call_approvable(client, closed_url):
    runs: list[Any] = []
    pay = pay_tool(client, hooked(client, closed_url, approval_mode="block", approval_timeout="60s"),
                   runs)
    thread, box = start_call(lambda: pay(*pay_args()))
    (waiting,) = wait_until(client.pending, "the call to wait for approval")
    client.approve(waiting.id, by="ops")
    assert finish_call(thread, box) == "paid 120.0"
    assert runs == ["cus_1"]


def test_an_endpoint_that_never_answers_does_not_hold_up_the_call(client, black_hole_url):
    runs: list[Any] = []
    pay = pay_tool(client, hooked(client, black_hole_url), runs)
    # The hang guard is shorter than the webhook's own timeout: the call cannot have waited on it.
    with pytest.raises(ApprovalPending) as pending:
        call_in_thread(lambda: pay(*pay_args()), timeout=WEBHOOK_TIMEOUT / 2)
    client.approve(pending.value.execution_id)
    assert call_in_thread(lambda: pay(*pay_args()), timeout=WEBHOOK_TIMEOUT / 2) == "paid 120.0"
    assert runs == ["cus_1"]


def test_a_malformed_http_answer_is_logged_not_raised(client, caplog):
    """Found in review: http.client.HTTPException (BadStatusLine) escaped the webhook thread
    as an unhandled exception instead of being logged."""
    caplog.set_level(logging.WARNING, logger="tbay")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def answer_garbage() -> None:
        with contextlib.suppress(OSError):
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    server = threading.Thread(target=answer_garbage, daemon=True)
    server.start()
    try:
        pay = pay_tool(client, hooked(client, f"http://127.0.0.1:{sock.getsockname()[1]}/hook"))
        execution_id = pending_id(lambda: pay(*pay_args()))
        server.join(HANG_GUARD)

        def settled() -> bool:
            busy = any(t.name == "tbay-webhook" and t.is_alive() for t in threading.enumerate())
            return webhook_warning(caplog, execution_id) is not None or not busy

        wait_until(settled, "the webhook thread to finish")
        assert webhook_warning(caplog, execution_id) is not None
    finally:
        sock.close()


# --------------------------------------------------------------------------- redaction


TRANSFER_ARGS: dict[str, Any] = {
    "user": "bob",
    "password": "hunter2",
    "bank": {"iban": "DE89370400440532013000", "name": "Bob"},
    "order": {"note": "gift for alice", "id": "o-1"},
    "orders": [{"memo": "memo-one", "sku": "a"}, {"memo": "memo-two", "sku": "b"}],
    "internal_ref": "ref-0099",
    "note": "public note",
    "remark": "pay with 4111-1111-1111-1111 please",
    "extra": {"api_key": "sk-live-123", "nested": {"Authorization": "Bearer abc.def"}},
}
TRANSFER_REDACTED: dict[str, Any] = {
    "user": "bob",
    "password": "***",
    "bank": {"iban": "***", "name": "Bob"},  # a name in redact_args, at any depth
    "order": {"note": "***", "id": "o-1"},  # a dotted path from the top
    "orders": [{"memo": "***", "sku": "a"}, {"memo": "***", "sku": "b"}],  # through a list
    "internal_ref": "***",  # redact_patterns
    "note": "public note",  # "order.note" does not mask a top-level "note"
    "remark": "pay with *** please",  # a card number inside text
    "extra": {"api_key": "***", "nested": {"Authorization": "***"}},
}
CLEAR_SECRETS = ("hunter2", "DE89370400440532013000", "gift for alice", "memo-one", "memo-two",
                 "ref-0099", "4111-1111-1111-1111", "sk-live-123", "abc.def")


def transfer_tool(client: TbayClient, url: str, runs: list[Any]) -> Callable[..., Any]:
    name = hooked(client, url, redact_args=["iban", "order.note", "orders.memo"],
                  redact_patterns=["^internal_"])

    def transfer(user: str, password: str, bank: dict, order: dict, orders: list,
                 internal_ref: str, note: str, remark: str, extra: dict) -> str:
        runs.append(password)
        return "sent"

    return client.guard(transfer, policy=name)


def test_secrets_are_masked_in_the_log_the_webhook_and_tbay_log_json(client, hook, cli):
    runs: list[Any] = []
    transfer = transfer_tool(client, hook.url, runs)
    execution_id = pending_id(lambda: transfer(**TRANSFER_ARGS))

    assert client.get(execution_id).args == TRANSFER_REDACTED
    got = hook.next()
    assert got.json()["args"] == TRANSFER_REDACTED
    out = cli("log", "--json", "--tool", "transfer").stdout
    (logged,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert (logged["id"], logged["args"]) == (execution_id, TRANSFER_REDACTED)
    shown = cli("show", execution_id, "--json").stdout
    for secret in CLEAR_SECRETS:
        assert secret not in got.body.decode(), secret
        assert secret not in out and secret not in shown, secret


def test_keys_still_see_the_real_values_behind_the_masks(client, hook):
    runs: list[Any] = []
    transfer = transfer_tool(client, hook.url, runs)
    first = pending_id(lambda: transfer(**TRANSFER_ARGS))
    other_password = pending_id(lambda: transfer(**{**TRANSFER_ARGS, "password": "letmein"}))
    other_iban = pending_id(lambda: transfer(**{**TRANSFER_ARGS,
                                                "bank": {"iban": "GB29NWBK60161331926819",
                                                         "name": "Bob"}}))
    assert len({first, other_password, other_iban}) == 3  # same masks, different calls
    assert pending_id(lambda: transfer(**TRANSFER_ARGS)) == first  # the very same call
    for execution_id in (first, other_password, other_iban):
        assert client.get(execution_id).args["password"] == "***"
        assert client.get(execution_id).args["bank"]["iban"] == "***"
    bodies = [hook.next() for _ in range(3)]
    assert {body.json()["execution_id"] for body in bodies} == {first, other_password, other_iban}

    client.approve(other_password)
    assert transfer(**{**TRANSFER_ARGS, "password": "letmein"}) == "sent"
    assert runs == ["letmein"]  # the function got the real value
