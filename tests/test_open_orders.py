"""The open orders' exposure totals: kept up to date, equal to walking every order."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.open_orders import OpenOrders
from protocol.messages import OrderIntent

SYMBOLS = ("AAPL", "MSFT", "NVDA")
MARK = 50.0


@dataclass
class Order:
    client_order_id: str
    intent: OrderIntent
    filled_qty: float = 0.0


def order(n: int, symbol: str, side: str, qty: float | None, price: float | None) -> Order:
    intent = OrderIntent(
        intent_id=f"i{n}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        qty=qty,
        notional=None if qty is not None else 100.0,
        order_type="market" if price is None or qty is None else "limit",
        limit_price=price if qty is not None else None,
    )
    return Order(f"s-i{n}", intent)


def walked(orders: list[Order]) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Open quantity and pending opening notional by walking every order (flat books)."""
    qty: dict[tuple[str, str], float] = {}
    pending: dict[str, float] = {}
    for o in orders:
        i = o.intent
        if i.qty is None:
            pending[i.symbol] = pending.get(i.symbol, 0.0) + (i.notional or 0.0)
            continue
        rest = i.qty - o.filled_qty
        qty[(i.symbol, i.side)] = qty.get((i.symbol, i.side), 0.0) + rest
        pending[i.symbol] = pending.get(i.symbol, 0.0) + rest * (i.limit_price or MARK)
    return {k: v for k, v in qty.items() if v > 0}, {k: v for k, v in pending.items() if v > 0}


steps = st.lists(
    st.tuples(
        st.sampled_from(["open", "fill", "end"]),
        st.integers(0, 30),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "sell"]),
        st.one_of(st.none(), st.integers(1, 9).map(float)),
        st.one_of(st.none(), st.sampled_from([10.0, 20.5, 99.0])),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(steps)
def test_totals_equal_a_walk_of_every_open_order(
    ops: list[tuple[str, int, str, str, float | None, float | None]],
) -> None:
    book: OpenOrders[Order] = OpenOrders()
    live: dict[str, Order] = {}
    for n, (op, pick, symbol, side, qty, price) in enumerate(ops):
        if op == "open" or not live:
            o = order(n, symbol, side, qty, price)
            book.add(o)
            live[o.client_order_id] = o
            continue
        o = live[sorted(live)[pick % len(live)]]
        if op == "fill" and o.intent.qty is not None and o.filled_qty < o.intent.qty:
            o.filled_qty = min(o.intent.qty, o.filled_qty + 1.0)
            book.refill(o)
        else:
            assert book.remove(o.client_order_id) is o
            del live[o.client_order_id]
    open_qty, pending = walked(list(live.values()))
    assert len(book) == len(live)
    assert book.symbols() == {o.intent.symbol for o in live.values()}
    assert book.open_qty().keys() == open_qty.keys()
    for key, value in open_qty.items():
        assert abs(book.open_qty()[key] - value) < 1e-6
    got = book.pending_opening(lambda _s: 0.0, lambda _s: MARK)
    assert got.keys() == pending.keys()
    for symbol, value in pending.items():
        assert abs(got[symbol] - value) < 1e-6


def test_a_short_is_covered_once_by_all_the_buys_together() -> None:
    book: OpenOrders[Order] = OpenOrders()
    for n in range(3):
        book.add(order(n, "AAPL", "buy", 10.0, 10.0))
    # Short 10: the three buys of 10 cover it once; 20 shares would open a long.
    # (Counting each buy as covering the whole short, as a per-order walk did, saw 0.)
    assert book.pending_opening(lambda _s: -10.0, lambda _s: MARK) == {"AAPL": 200.0}
    # Long 10: sells reduce it first; buys add to it in full.
    book.add(order(9, "AAPL", "sell", 15.0, 10.0))
    assert book.pending_opening(lambda _s: 10.0, lambda _s: MARK) == {"AAPL": 300.0 + 50.0}


def test_the_last_order_gone_leaves_exact_zeroes() -> None:
    book: OpenOrders[Order] = OpenOrders()
    a = order(1, "AAPL", "buy", 3.0, 0.1)
    b = order(2, "AAPL", "buy", 7.0, 0.2)
    book.add(a)
    book.add(b)
    a.filled_qty = 1.0
    book.refill(a)
    book.remove(a.client_order_id)
    book.remove(b.client_order_id)
    assert book.open_qty() == {}
    assert book.pending_opening(lambda _s: 0.0, lambda _s: MARK) == {}
    assert book.symbols() == set()
    assert book.remove("nobody") is None
