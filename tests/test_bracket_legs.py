"""The legs of our brackets: known by the broker's ids, kept when they beat their parent."""

from __future__ import annotations

from actors.core.bracket_legs import EARLY_LEGS, Leg, LegBook, LegRoute
from actors.core.order_sync import BrokerOrder, TrackedOrder
from protocol.messages import OrderIntent, OrderStatus

INTENT = OrderIntent(
    intent_id="i1",
    symbol="AAPL",
    side="buy",
    qty=1.0,
    order_type="limit",
    limit_price=100.0,
    order_class="bracket",
    take_profit=110.0,
    stop_loss=90.0,
)


def parent(status: OrderStatus = "accepted") -> TrackedOrder:
    return TrackedOrder("s1", "p1", status, INTENT, accepted_at=1.0)


def leg_event(leg_id: str, status: OrderStatus = "accepted") -> BrokerOrder:
    return BrokerOrder(f"uuid-{leg_id}", leg_id, status, bracket=True)


def test_a_bracket_of_ours_wants_its_legs_once() -> None:
    book = LegBook()
    order = BrokerOrder("s1-i1", "p1", "accepted", bracket=True)
    assert book.wants_legs(order, parent())
    assert not book.wants_legs(order, None)
    assert not book.wants_legs(BrokerOrder("s1-i1", "p1", "accepted"), parent())
    book.know_parent("s1-i1")
    assert not book.wants_legs(order, parent())


def test_a_leg_that_beats_its_parents_answer_is_kept_then_handed_over() -> None:
    book = LegBook()
    early = leg_event("l1", "filled")
    assert book.route(early, None, ours=False) is LegRoute.HELD
    book.know_parent("s1-i1")
    assert book.add("l1", Leg("s1", "s1-i1")) == early
    assert book.add("l2", Leg("s1", "s1-i1")) is None
    assert book.route(leg_event("l1"), None, ours=False) is LegRoute.LEG


def test_orders_that_are_not_legs_go_the_usual_way() -> None:
    book = LegBook()
    assert book.route(BrokerOrder("s1-a", "b1", "accepted"), None, ours=True) is LegRoute.ORDER
    assert book.route(BrokerOrder("x", "b2", "accepted"), None, ours=False) is LegRoute.ORDER
    ours = BrokerOrder("s1-i1", "p1", "filled", bracket=True)
    assert book.route(ours, parent("submitted"), ours=True) is LegRoute.ORDER
    assert book.route(ours, parent("accepted"), ours=True) is LegRoute.PARENT


def test_early_legs_are_bounded_oldest_first() -> None:
    book = LegBook()
    for n in range(EARLY_LEGS + 1):
        book.route(leg_event(f"l{n}"), None, ours=False)
    assert book.add("l0", Leg("s1", "p")) is None  # dropped
    assert book.add(f"l{EARLY_LEGS}", Leg("s1", "p")) is not None


def test_the_parent_is_forgotten_when_its_last_leg_ends() -> None:
    book = LegBook()
    order = BrokerOrder("s1-i1", "p1", "accepted", bracket=True)
    book.know_parent("s1-i1")
    book.add("l1", Leg("s1", "s1-i1"))
    book.add("l2", Leg("s1", "s1-i1"))
    book.end("l1")
    assert "l1" not in book
    assert not book.wants_legs(order, parent())
    book.end("l2")
    assert book.wants_legs(order, parent())


def test_legs_are_cancelled_once_their_entry_is_more_than_accepted() -> None:
    book = LegBook()
    book.add("l1", Leg("s1", "s1-open"))
    book.add("l2", Leg("s1", "s1-filled"))
    book.add("l3", Leg("s1", "s1-gone"))
    book.add("l4", Leg("s2", "s2-filled"))
    tracked = {"s1-open": parent("accepted"), "s1-filled": parent("partially_filled")}
    assert [leg_id for leg_id, _ in book.cancellable("s1", tracked)] == ["l2", "l3"]
