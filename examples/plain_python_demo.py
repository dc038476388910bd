"""tbay in plain Python: caching, idempotency, volatile calls and approvals, offline.

Run it with ``python examples/plain_python_demo.py``. It uses the default
database (``$TBAY_DB_URL``, else ``~/.tbay/db.sqlite``) and tags every call
with this run's id, so each run tells the same story; afterwards
``tbay log`` shows what was recorded.
"""

from __future__ import annotations

import time
import uuid

from tbay_core import ApprovalPending, TbayClient, guarded, scope

client = TbayClient()
RUN = uuid.uuid4().hex[:8]
ran: dict[str, int] = {"search": 0, "charge": 0, "quote": 0, "refund": 0}


@guarded(client, policy="readonly")
def search_docs(query: str, run: str) -> dict:
    """A read-only lookup: replayed from the cache for 5 minutes."""
    ran["search"] += 1
    time.sleep(0.2)  # a slow API
    return {"query": query, "hits": [f"{query} guide", f"{query} FAQ"]}


@guarded(client, policy="mutating", key_fn=lambda order_id, amount, run: (order_id, run))
def charge_card(order_id: str, amount: float, run: str) -> dict:
    """A payment: the order id is the idempotency key, so a retry never charges twice."""
    ran["charge"] += 1
    return {"order_id": order_id, "charged": amount, "receipt": uuid.uuid4().hex[:12]}


@guarded(client, policy="volatile")
def fx_quote(currency: str, run: str) -> float:
    """A live price: never cached, never deduplicated, but still audited."""
    ran["quote"] += 1
    return 1.0 + ran["quote"] / 1000


client.policies["refunds"] = client.policies["destructive"].copy(
    name="refunds", approval_mode="defer", approval_bypass_arg="amount", approval_bypass_max=50
)


@guarded(client, policy="refunds")
def refund(order_id: str, amount: float, run: str) -> str:
    """A refund: small ones go through, larger ones wait for a human."""
    ran["refund"] += 1
    return f"refunded {amount:.2f} on {order_id}"


def timed(label: str, call):  # noqa: ANN001, ANN202 - a demo helper
    started = time.perf_counter()
    value = call()
    print(f"  {label:<44} {1000 * (time.perf_counter() - started):7.2f} ms  -> {value}")
    return value


def main() -> None:
    print(f"tbay demo run {RUN}, database {client.db_url}\n")
    with scope(tenant="acme", agent="support-bot"):
        print("1. readonly: the second identical search is served from the cache")
        timed("search_docs('refund policy')  first call", lambda: search_docs("refund policy", RUN))
        timed("search_docs('refund policy')  again", lambda: search_docs("refund policy", RUN))
        print(f"     the search body ran {ran['search']} time(s)\n")

        print("2. mutating: an agent retrying a payment does not charge twice")
        first = timed("charge_card('order-42', 99.0)", lambda: charge_card("order-42", 99.0, RUN))
        again = timed("charge_card('order-42', 99.0)  retried", lambda: charge_card("order-42", 99.0, RUN))
        print(f"     same receipt: {first['receipt'] == again['receipt']}; "
              f"the card was charged {ran['charge']} time(s)\n")

        print("3. volatile: a live quote runs every time, and is still logged")
        timed("fx_quote('EUR')", lambda: fx_quote("EUR", RUN))
        timed("fx_quote('EUR')  again", lambda: fx_quote("EUR", RUN))
        print(f"     the quote body ran {ran['quote']} time(s)\n")

        print("4. approval: a refund up to 50 skips the gate, a larger one waits for a human")
        timed("refund('order-7', 20.0)", lambda: refund("order-7", 20.0, RUN))
        try:
            refund("order-8", 500.0, RUN)
        except ApprovalPending as pending:
            print(f"  refund('order-8', 500.0) is pending: execution {pending.execution_id}")
            client.approve(pending.execution_id, by="demo-operator", reason="customer verified")
            print(f"  approved (in a terminal: tbay approve {pending.execution_id})")
            timed("refund('order-8', 500.0)  called again", lambda: refund("order-8", 500.0, RUN))
        print(f"     the refund body ran {ran['refund']} time(s)\n")

    print("What was recorded (newest first):")
    for execution in client.executions(limit=8):
        print(f"  {execution.id}  {execution.tool_name:<12} {execution.status:<17} "
              f"tenant={execution.tenant} args={execution.args}")
    print("\nSee it yourself: tbay log --limit 10   |   tbay show <id>")
    client.close()


if __name__ == "__main__":
    main()
