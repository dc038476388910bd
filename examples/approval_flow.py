"""A refund that waits for a human, who approves or rejects it from another terminal.

Run it with ``python examples/approval_flow.py``. It blocks on a refund above
the bypass threshold and prints the exact ``tbay approve`` / ``tbay reject``
command to run in a second terminal (same ``TBAY_DB_URL``). ``--auto-approve``
approves it from a background thread instead, for a non-interactive run.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from tbay_core import ApprovalRejected, ApprovalTimeout, TbayClient, guarded, scope

client = TbayClient()
client.policies["refunds"] = client.policies["destructive"].copy(
    name="refunds", approval_timeout="10m", approval_bypass_arg="amount", approval_bypass_max=50
)


@guarded(client, policy="refunds", key_fn=lambda order_id, amount: order_id)
def refund(order_id: str, amount: float) -> str:
    """Give money back: irreversible, so amounts above 50 need a human."""
    return f"refunded {amount:.2f} on {order_id}"


def approve_when_waiting(order_id: str) -> None:
    """Stand-in for the human in --auto-approve mode: approve the first waiting refund."""
    while True:
        for execution in client.pending():
            if execution.args.get("order_id") == order_id:
                time.sleep(0.5)
                client.approve(execution.id, by="auto-approver", reason="demo run")
                return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auto-approve", action="store_true", help="approve from a background thread")
    options = parser.parse_args()
    order_id = f"order-{uuid.uuid4().hex[:6]}"
    print(f"database: {client.db_url}")
    print(f"refund({order_id!r}, 20.0) -> {refund(order_id + '-small', 20.0)}  (under the threshold: no human needed)")
    if options.auto_approve:
        threading.Thread(target=approve_when_waiting, args=(order_id,), daemon=True).start()
    else:
        print("\nA refund of 500.00 needs approval. In another terminal run:")
        print("    tbay pending")
        print("    tbay approve <ID> --by you --reason 'customer verified'")
        print("or  tbay reject <ID> --by you --reason 'looks like fraud'")
        print("(the ID is shown by `tbay pending`; set TBAY_DB_URL the same way in both terminals)\n")
    started = time.perf_counter()
    try:
        with scope(tenant="acme", agent="support-bot"):
            result = refund(order_id, 500.0)
    except ApprovalRejected as rejected:
        print(f"rejected by {rejected.by}: {rejected.reason}; the refund did not run")
    except ApprovalTimeout:
        print("nobody decided within the approval timeout; the refund did not run")
    else:
        print(f"approved after {time.perf_counter() - started:.1f}s -> {result}")
    client.close()


if __name__ == "__main__":
    main()
