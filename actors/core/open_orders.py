"""A strategy's unfinished orders, with their exposure totals kept up to date.

Every decision reads what the open orders commit: the unfilled quantity per symbol and
side, and the notional that would open or grow a position. Walking the open orders for
that costs time in proportion to them (12.8% of the daemon's CPU with 1,000 open); here
each order's share is added when it opens, moved when it fills and taken away when it
ends, so a view costs time in proportion to the symbols, whatever the number of orders.

Pure: no I/O, no clock, no anyio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from protocol.messages import OrderIntent


class OpenOrder(Protocol):
    """What the totals read of an order."""

    @property
    def client_order_id(self) -> str:
        """The order's id."""
        ...

    @property
    def intent(self) -> OrderIntent:
        """What the strategy asked for."""
        ...

    @property
    def filled_qty(self) -> float:
        """Shares filled so far."""
        ...


T = TypeVar("T", bound="OpenOrder")


@dataclass
class _Share:
    """One order's part of its (symbol, side) totals."""

    qty: float = 0.0
    """Unfilled shares of a quantity order."""
    priced_value: float = 0.0
    """Unfilled shares times the order's own price (limit, else stop)."""
    unpriced_qty: float = 0.0
    """Unfilled shares of an order with no price of its own (a market order)."""
    notional: float = 0.0
    """A notional order's amount (it fills in one go)."""

    def add(self, other: _Share, sign: float) -> None:
        self.qty += sign * other.qty
        self.priced_value += sign * other.priced_value
        self.unpriced_qty += sign * other.unpriced_qty
        self.notional += sign * other.notional


@dataclass
class _Totals:
    share: _Share
    count: int = 0


def _share_of(order: OpenOrder) -> _Share:
    intent = order.intent
    if intent.qty is None:
        return _Share(notional=intent.notional or 0.0)
    remaining = max(0.0, intent.qty - order.filled_qty)
    price = intent.limit_price or intent.stop_price
    if price:
        return _Share(qty=remaining, priced_value=remaining * price)
    return _Share(qty=remaining, unpriced_qty=remaining)


class OpenOrders(Generic[T]):
    """Unfinished orders by ``client_order_id``, with totals by (symbol, side).

    Call :meth:`add` when an order opens, :meth:`refill` after its ``filled_qty``
    changed and :meth:`remove` when it ends.
    """

    def __init__(self) -> None:
        """Empty."""
        self._orders: dict[str, T] = {}
        self._shares: dict[str, _Share] = {}
        self._totals: dict[tuple[str, str], _Totals] = {}

    def __len__(self) -> int:
        """Open orders."""
        return len(self._orders)

    def __contains__(self, client_order_id: object) -> bool:
        """Whether ``client_order_id`` is open."""
        return client_order_id in self._orders

    def __iter__(self) -> Iterator[str]:
        """The open orders' ids."""
        return iter(self._orders)

    def values(self) -> list[T]:
        """The open orders (a copy: safe to change the set while walking it)."""
        return list(self._orders.values())

    def get(self, client_order_id: str) -> T | None:
        """The open order ``client_order_id``, if it is open."""
        return self._orders.get(client_order_id)

    def add(self, order: T) -> None:
        """``order`` is open (again: its share is replaced)."""
        self.remove(order.client_order_id)
        share = _share_of(order)
        self._orders[order.client_order_id] = order
        self._shares[order.client_order_id] = share
        key = (order.intent.symbol, order.intent.side)
        totals = self._totals.setdefault(key, _Totals(_Share()))
        totals.share.add(share, 1.0)
        totals.count += 1

    def refill(self, order: T) -> None:
        """``order``'s filled quantity changed: move its share."""
        if order.client_order_id in self._orders:
            self.add(order)

    def remove(self, client_order_id: str) -> T | None:
        """The order ended: take its share away. Returns it if it was open."""
        order = self._orders.pop(client_order_id, None)
        if order is None:
            return None
        share = self._shares.pop(client_order_id)
        key = (order.intent.symbol, order.intent.side)
        totals = self._totals[key]
        totals.count -= 1
        if totals.count == 0:
            del self._totals[key]  # exactly zero again, whatever the rounding on the way
        else:
            totals.share.add(share, -1.0)
        return order

    def symbols(self) -> set[str]:
        """Symbols with an open order."""
        return {symbol for symbol, _side in self._totals}

    def open_qty(self) -> dict[tuple[str, str], float]:
        """Unfilled shares of open quantity orders, by (symbol, side)."""
        return {key: max(0.0, t.share.qty) for key, t in self._totals.items() if t.share.qty > 0}

    def pending_opening(
        self, held: Callable[[str], float], mark: Callable[[str], float]
    ) -> dict[str, float]:
        """Notional of open orders that would open or grow a position, by symbol.

        Buys first cover a short (``held`` below zero) and sells first reduce a long:
        the shares that would do so, counted once for all the orders of that side,
        open nothing. The rest count at their own price, or at ``mark`` for market
        orders; notional orders count in full.

        Args:
            held: signed shares held in a symbol.
            mark: the price to count a market order's shares at.
        """
        result: dict[str, float] = {}
        for (symbol, side), totals in self._totals.items():
            share = totals.share
            value = max(0.0, share.notional)
            remaining = max(0.0, share.qty)
            if remaining > 0:
                position = held(symbol)
                reducible = max(0.0, -position if side == "buy" else position)
                opening = remaining - min(remaining, reducible)
                if opening > 0:
                    gross = max(0.0, share.priced_value) + max(0.0, share.unpriced_qty) * mark(
                        symbol
                    )
                    value += gross * opening / remaining
            if value > 0:
                result[symbol] = result.get(symbol, 0.0) + value
        return result
