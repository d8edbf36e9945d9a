"""The order book, pure: decisions, the state machine's apply, fills, legs and flattening.

No journal, no broker: every call returns the rows to journal and the events to publish.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.book import FINAL, DecisionIndex, SeenIds, StrategyBook
from actors.core.messages import OrderUpdate
from actors.core.order_book import OrderBook, approval_refusal, broker_busy
from actors.core.rows import DecisionRow, FillRow, OrderChangeRow, OrderRow
from protocol.messages import FillEvent, OrderEvent, OrderIntent, Reason
from protocol.reasons import ReasonCode


def book() -> OrderBook:
    return OrderBook("s1", StrategyBook(decisions=DecisionIndex()))


def buy(intent_id: str, qty: float = 10.0, price: float | None = 100.0) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id,
        symbol="AAPL",
        side="buy",
        qty=qty,
        order_type="limit" if price else "market",
        limit_price=price,
    )


def report(coid: str, status: str, filled: float = 0.0, avg: float | None = None) -> OrderUpdate:
    return OrderUpdate(
        client_order_id=coid,
        status=status,  # type: ignore[arg-type]  # the tests name statuses as text
        broker_order_id="b-" + coid,
        filled_qty=filled,
        filled_avg_price=avg,
        source="stream",
    )


def test_an_accepted_intent_is_journaled_as_a_decision_and_a_pending_order() -> None:
    b = book()
    payload, rows, record = b.accept(buy("i1"), now=1.0)
    assert record.client_order_id == "s1-i1"
    assert record.status == "pending"
    assert [type(r) for r in rows] == [DecisionRow, OrderRow]
    assert b.decisions.get("i1") == payload
    assert len(b.open) == 1
    assert b.open.open_qty() == {("AAPL", "buy"): 10.0}


def test_a_rejected_intent_is_one_decision_and_no_order() -> None:
    b = book()
    reasons = [Reason(code=ReasonCode.MAX_NOTIONAL, message="too big")]
    payload, row = b.reject(buy("i1"), reasons, now=1.0)
    assert isinstance(row, DecisionRow)
    assert not row.accepted
    assert b.decisions.get("i1") == payload
    assert not b.orders


def test_fills_count_once_however_often_the_same_state_is_reported() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    first = b.apply(report("s1-i1", "partially_filled", 4.0, 99.0), now=2.0)
    assert first is not None
    assert [type(r) for r in first.rows] == [FillRow, OrderChangeRow]
    assert [type(e) for e in first.events] == [FillEvent, OrderEvent]
    again = b.apply(report("s1-i1", "partially_filled", 4.0, 99.0), now=3.0)
    assert again is not None
    assert again.rows == []
    assert again.events == []
    assert b.positions["AAPL"].qty == 4.0
    done = b.apply(report("s1-i1", "filled", 10.0, 99.6), now=4.0)
    assert done is not None
    fill = done.rows[0]
    assert isinstance(fill, FillRow)
    assert fill.qty == pytest.approx(6.0)
    assert fill.price == pytest.approx((99.6 * 10 - 99.0 * 4) / 6)
    assert b.positions["AAPL"].qty == 10.0
    assert len(b.open) == 0  # final: out of the exposure totals


def test_an_illegal_transition_changes_nothing() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    b.apply(report("s1-i1", "filled", 10.0, 100.0), now=2.0)
    applied = b.apply(report("s1-i1", "accepted"), now=3.0)
    assert applied is not None
    assert applied.illegal == "illegal transition filled -> accepted (stream)"
    assert b.orders["s1-i1"].status == "filled"
    assert applied.rows == []


def test_submitted_is_published_but_not_journaled() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    applied = b.apply(report("s1-i1", "submitted"), now=2.0)
    assert applied is not None
    assert applied.rows == []
    assert [type(e) for e in applied.events] == [OrderEvent]


def test_a_bracket_legs_fills_move_the_position_on_the_exit_side() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    b.apply(report("s1-i1", "filled", 10.0, 100.0), now=2.0)
    leg = OrderUpdate(
        client_order_id="leg-1",
        status="filled",
        filled_qty=10.0,
        filled_avg_price=110.0,
        parent_client_order_id="s1-i1",
    )
    applied = b.apply_leg(leg, now=3.0)
    assert applied is not None
    fill = applied.rows[0]
    assert isinstance(fill, FillRow)
    assert (fill.side, fill.qty, fill.client_order_id) == ("sell", 10.0, "leg-1")
    assert b.positions["AAPL"].qty == 0.0
    assert b.realized_pnl() == pytest.approx(100.0)
    assert b.apply_leg(leg, now=4.0) is not None  # a repeat: the leg is final, nothing moves
    assert b.positions["AAPL"].qty == 0.0
    orphan = OrderUpdate(client_order_id="x", status="accepted", parent_client_order_id="s1-nope")
    assert b.apply_leg(orphan, now=5.0) is None


def test_flatten_closes_every_position_with_market_orders() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    b.apply(report("s1-i1", "filled", 10.0, 100.0), now=2.0)
    orders = b.flatten(now=3.0)
    assert len(orders) == 1
    record, row = orders[0]
    assert (record.intent.side, record.intent.qty, record.intent.order_type) == (
        "sell",
        10.0,
        "market",
    )
    assert isinstance(row, OrderRow)
    assert record.status not in FINAL
    assert record.client_order_id in b.open


def test_the_view_counts_positions_at_the_mark_and_open_orders_at_their_price() -> None:
    b = book()
    b.accept(buy("i1"), now=1.0)
    b.apply(report("s1-i1", "filled", 10.0, 100.0), now=2.0)
    b.accept(buy("i2", qty=5.0, price=90.0), now=3.0)
    view = b.view(lambda _symbol: 110.0, session_base=0.0, paused=False)
    assert view.gross_exposure == pytest.approx(10 * 110.0 + 5 * 90.0)
    assert view.session_pnl == pytest.approx(100.0)
    assert view.positions["AAPL"].pending_buy_qty == 5.0


def test_refusals_name_their_reason() -> None:
    assert approval_refusal(approved=None, timeout_s=5)[0].code is ReasonCode.APPROVAL_TIMEOUT
    assert approval_refusal(approved=False, timeout_s=5)[0].code is ReasonCode.APPROVAL_DENIED
    assert approval_refusal(approved=True, timeout_s=5) == []
    assert broker_busy(10.0, 30.0, 0.8) is None
    busy = broker_busy(25.0, 30.0, 0.8)
    assert busy is not None
    assert busy.code is ReasonCode.BROKER_BUSY


@settings(max_examples=50)
@given(st.sets(st.text(min_size=1, max_size=64), max_size=200))
def test_seen_ids_never_forget_an_id(ids: set[str]) -> None:
    seen = SeenIds(ids)
    assert all(i in seen for i in ids)


def test_a_new_intent_id_costs_no_journal_read_and_an_old_one_does() -> None:
    reads: list[str] = []

    def lookup(intent_id: str) -> bytes | None:
        reads.append(intent_id)
        return b"old" if intent_id == "old" else None

    index = DecisionIndex({}, lookup=lookup, capacity=1, seen=SeenIds(["old"]))
    assert index.get("brand-new") is None
    assert reads == []  # certainly never decided
    assert index.get("old") == b"old"
    assert reads == ["old"]
    index.put("next", b"x")
    index.put("evicts-next", b"y")  # capacity 1: "next" leaves memory, stays seen
    assert index.get("next") is None  # the journal has none here: looked up, not assumed
    assert reads == ["old", "next"]
