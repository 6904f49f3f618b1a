"""A small shop on eventstore: orders as aggregates, a revenue read model kept
by a persistent subscription, and a compaction in the middle.

    python examples/shop.py DATA_DIR

Orders are placed, filled, paid and shipped through commands that refuse
what the rules forbid. A revenue projection follows the global log (catching
up, then live), saving its state and position together. Halfway, the old
events are compacted into an ESDB file; the projection carries on from the
cold tier to the hot one, and at the end it is checked against a fold over
the whole log.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Self

from eventstore import EventStore
from eventstore.aggregates import Aggregate, Repository, applies
from eventstore.errors import WrongExpectedVersion
from eventstore.events import Event
from eventstore.subscriptions import Projection


class OrderError(Exception):
    """A command the order's rules refuse."""


class Order(Aggregate):
    stream_prefix = "order-"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.customer = ""
        self.items: list[dict[str, Any]] = []
        self.status = "new"

    @property
    def total_cents(self) -> int:
        return sum(item["price_cents"] * item["qty"] for item in self.items)

    # -- commands: check the rules, then record what happened --------------

    @classmethod
    def place(cls, order_id: str, customer: str) -> Self:
        if not customer:
            raise OrderError("an order needs a customer")
        order = cls(order_id)
        order.record("OrderPlaced", {"customer": customer}, indexes={"customer": customer})
        return order

    def add_item(self, sku: str, qty: int, price_cents: int) -> None:
        if self.status != "placed":
            raise OrderError(f"order {self.id} is {self.status}: items can no longer be added")
        if qty < 1 or price_cents < 0:
            raise OrderError(f"bad line for {sku}: qty {qty}, price {price_cents}")
        self.record("ItemAdded", {"sku": sku, "qty": qty, "price_cents": price_cents})

    def pay(self, amount_cents: int) -> None:
        if self.status != "placed":
            raise OrderError(f"order {self.id} is {self.status}: it cannot be paid")
        if not self.items:
            raise OrderError(f"order {self.id} is empty: nothing to pay")
        if amount_cents != self.total_cents:
            raise OrderError(f"order {self.id} costs {self.total_cents} cents, not {amount_cents}")
        self.record("OrderPaid", {"customer": self.customer, "amount_cents": amount_cents})

    def ship(self) -> None:
        if self.status != "paid":
            raise OrderError(f"order {self.id} is {self.status}: only paid orders ship")
        self.record("order.shipped")

    # -- events: change the state, never refuse -----------------------------

    def apply_OrderPlaced(self, data: Any) -> None:
        self.customer = data["customer"]
        self.status = "placed"

    def apply_ItemAdded(self, data: Any) -> None:
        self.items.append(data)

    def apply_OrderPaid(self, data: Any) -> None:
        self.status = "paid"

    @applies("order.shipped")
    def _shipped(self, data: Any) -> None:
        self.status = "shipped"


# -- the revenue read model ------------------------------------------------------


def revenue_empty() -> dict[str, Any]:
    return {"cents": 0, "orders": 0, "by_customer": {}}


def revenue_apply(state: dict[str, Any], event: Event) -> dict[str, Any]:
    amount = event.data["amount_cents"]
    state["cents"] += amount
    state["orders"] += 1
    by = state["by_customer"]
    by[event.data["customer"]] = by.get(event.data["customer"], 0) + amount
    return state


def revenue(
    store: EventStore,
    apply: Callable[[dict[str, Any], Event], dict[str, Any]] = revenue_apply,
) -> Projection[dict[str, Any]]:
    return Projection(store, "revenue", apply, revenue_empty, types=["OrderPaid"], save_every=10)


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


CUSTOMERS = ["ada", "bob", "cy", "dee"]
SKUS = {"mug": 850, "tea": 1299, "pot": 3450, "spoon": 199}


def trade(repo: Repository[Order], rnd: random.Random, first: int, n: int) -> list[Any]:
    """Place n orders, fill them, pay most and ship some. Returns the ids of
    the OrderPaid events appended."""
    paid = []
    for k in range(first, first + n):
        order = Order.place(f"{k:04d}", rnd.choice(CUSTOMERS))
        for _ in range(rnd.randint(1, 4)):
            sku = rnd.choice(sorted(SKUS))
            order.add_item(sku, rnd.randint(1, 3), SKUS[sku])
        repo.save(order)
        if rnd.random() < 0.8:
            order.pay(order.total_cents)
            result = repo.save(order)
            assert result is not None
            paid.append(result.ids[-1])
            if rnd.random() < 0.5:
                repo.update(order.id, Order.ship)
    return paid


def main(path: str) -> None:
    rnd = random.Random(7)
    with EventStore.open(path) as store:
        orders = Repository(store, Order, snapshot_every=20)

        trade(orders, rnd, 1, 30)
        print(f"placed 30 orders: {store.last_seq} events")

        # The rules refuse invalid commands, and nothing is recorded.
        settled = _filled("0099")
        settled.pay(settled.total_cents)
        orders.save(settled)
        refuse("pay an empty order", lambda: Order.place("x", "ada").pay(0))
        refuse("add to a paid order", lambda: orders.get("0099").add_item("mug", 1, 850))
        refuse("ship an unpaid order", lambda: Order.place("y", "bob").ship())
        refuse("pay the wrong amount", lambda: _filled("z").pay(1))
        refuse("place without a customer", lambda: Order.place("w", ""))
        print(f"order 0099 is still {orders.get('0099').status} at v{orders.get('0099').version}")

        # Two clerks edit one order at once: the second save is refused, and
        # Repository.update reloads and reruns the command.
        open_order = Order.place("0100", "cy")
        orders.save(open_order)
        clerk_a, clerk_b = orders.get("0100"), orders.get("0100")
        clerk_a.add_item("tea", 1, SKUS["tea"])
        clerk_b.add_item("pot", 1, SKUS["pot"])
        orders.save(clerk_a)
        try:
            orders.save(clerk_b)
        except WrongExpectedVersion as exc:
            print(f"conflict: {exc}")
        orders.update("0100", lambda o: o.add_item("pot", 1, SKUS["pot"]))
        print(f"order 0100 after the retry: {[i['sku'] for i in orders.get('0100').items]}")

        proj = revenue(store)
        n = proj.catch_up()
        print(f"revenue after catching up on {n} payments: {money(proj.state['cents'])}")
        proj.close()
        trade(orders, rnd, 200, 10)  # the projection is now behind: it resumes in the cold tier
        print("placed 10 more orders while the projection was stopped")

        if hasattr(store, "compact"):
            done = store.compact(before=datetime.now(UTC))
            print(f"compacted {done.events} events into {len(done.files)} ESDB file(s)")
        else:  # pragma: no cover - until tiering lands
            print("compaction not available in this build")

    # Reopen: the projection resumes from its checkpoint and follows the log live.
    with EventStore.open(path) as store:
        orders = Repository(store, Order, snapshot_every=20)
        progress = threading.Condition()
        applied: list[Any] = [None]  # id of the last payment applied

        def apply_and_tell(state: dict[str, Any], event: Event) -> dict[str, Any]:
            state = revenue_apply(state, event)
            with progress:
                applied[0] = event.id
                progress.notify_all()
            return state

        proj = revenue(store, apply_and_tell)
        print(f"revenue resumed from its checkpoint: {money(proj.state['cents'])}")
        runner = threading.Thread(target=proj.run)
        runner.start()
        paid = trade(orders, rnd, 31, 30)
        with progress:  # until the projection has applied the last payment
            progress.wait_for(lambda: applied[0] == paid[-1], timeout=30)
        proj.close()
        runner.join()

        expected = revenue_empty()
        for event in store.read_all(types=["OrderPaid"]):
            expected = revenue_apply(expected, event)
        print(
            f"revenue live after 30 more orders: {money(proj.state['cents'])} "
            f"from {proj.state['orders']} payments"
        )
        print(f"projection exact: {proj.state == expected}")
        print(f"saved with its position: {store.get_checkpoint('revenue')['state'] == expected}")
        print(
            "by customer: "
            + ", ".join(f"{c} {money(v)}" for c, v in sorted(expected["by_customer"].items()))
        )
        first = orders.get("0001")
        print(
            f"order 0001 (cold tier): {first.status}, {money(first.total_cents)}, v{first.version}"
        )


def refuse(what: str, command: Callable[[], object]) -> None:
    try:
        command()
    except OrderError as exc:
        print(f"refused ({what}): {exc}")
    else:
        raise AssertionError(f"{what} was not refused")


def _filled(order_id: str) -> Order:
    order = Order.place(order_id, "dee")
    order.add_item("mug", 2, SKUS["mug"])
    return order


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
