"""Reconciliation of the books with the broker: a pure core, no I/O, no anyio.

The strategies' books move with every fill the moment it is reported; the broker's
account poll arrives every few seconds and also holds positions no strategy owns (a
long-held position, a trade made by hand). So the two never have to be equal: what
must not change without an explanation is their *difference*, per symbol.

:class:`DriftWatch` keeps that difference from poll to poll. A change is a drift
when it is seen on two polls in a row (a fill reported between a poll's snapshot and
its arrival explains a one-poll difference) and the symbol had no open order in any
book (an order in flight explains it too). A drift is reported once, then becomes the
new baseline.

:func:`marked_equity` values the account between polls: the last poll's equity, moved
by the books' fills and the quotes since, so the drawdown checks need not wait for the
next poll to see a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Final

import msgspec

QTY_TOLERANCE: Final = 1e-6
"""Differences below this many shares are rounding."""


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """A change, unexplained by our orders, of the broker's position against our books.

    Attributes:
        symbol: the symbol.
        broker_qty: the broker's position (signed) at the last poll.
        books_qty: the sum of the strategies' positions (signed) at that moment.
        expected_difference: broker minus books, as it stood before.
        difference: broker minus books now.
    """

    symbol: str
    broker_qty: float
    books_qty: float
    expected_difference: float
    difference: float

    def describe(self) -> str:
        """One line for the audit record."""
        return (
            f"{self.symbol}: broker holds {self.broker_qty:g}, the strategies' books "
            f"{self.books_qty:g}; the difference moved from {self.expected_difference:g} "
            f"to {self.difference:g} with no order of ours open in {self.symbol}"
        )


class DriftWatch:
    """Per symbol, the expected difference between the broker and the books."""

    def __init__(self) -> None:
        """Nothing known yet: the first poll sets every baseline (what the account held)."""
        self._baseline: dict[str, float] = {}
        self._suspect: dict[str, float] = {}
        self._first = True

    def observe(
        self,
        broker: Mapping[str, float],
        books: Mapping[str, float],
        busy: AbstractSet[str],
    ) -> list[Drift]:
        """Take one poll: ``broker`` and ``books`` map symbol to signed qty.

        Args:
            broker: the broker's positions at this poll.
            books: the sum of the strategies' positions now.
            busy: symbols with an open order in some book (their difference may be
                an order in flight: no verdict on them this time).

        Returns:
            The drifts this poll confirms (each reported once).
        """
        drifts: list[Drift] = []
        for symbol in sorted({*broker, *books, *self._baseline}):
            broker_qty = broker.get(symbol, 0.0)
            books_qty = books.get(symbol, 0.0)
            difference = broker_qty - books_qty
            if self._first:
                self._baseline[symbol] = difference  # what the account held before us
                continue
            # A symbol not seen before was at 0 at the broker and in the books alike.
            expected = self._baseline.setdefault(symbol, 0.0)
            if symbol in busy or abs(difference - expected) <= QTY_TOLERANCE:
                self._suspect.pop(symbol, None)
                continue
            seen_before = self._suspect.get(symbol)
            if seen_before is None or abs(seen_before - difference) > QTY_TOLERANCE:
                self._suspect[symbol] = difference  # once could be a race: look again
                continue
            del self._suspect[symbol]
            self._baseline[symbol] = difference
            drifts.append(
                Drift(
                    symbol=symbol,
                    broker_qty=broker_qty,
                    books_qty=books_qty,
                    expected_difference=expected,
                    difference=difference,
                )
            )
        self._first = False
        return drifts


def marked_equity(
    equity: float,
    broker: Mapping[str, tuple[float, float]],
    books_then: Mapping[str, tuple[float, float]],
    books_now: Mapping[str, tuple[float, float]],
    mark: Callable[[str], float | None],
) -> float:
    """The account's equity now: the last poll's, moved by fills and prices since.

    Equity is cash plus positions at market. Since the poll, the books' fills moved
    cash by their cost and positions by their shares; prices moved every position.
    So, per symbol, the position now (the broker's then, plus the books' shares since)
    at its mark, less its value then, less the cash the fills since have cost.

    Args:
        equity: the broker's equity at the poll.
        broker: the broker's positions at the poll: symbol to (signed shares, market value).
        books_then: the books at the poll: symbol to (signed shares, net cash invested).
        books_now: the books now, the same way.
        mark: the price to value a symbol at now, or None when there is no usable
            quote (the position then keeps the poll's price, or the fills' average).
    """
    total = equity
    for symbol in broker.keys() | books_then.keys() | books_now.keys():
        qty_then, value_then = broker.get(symbol, (0.0, 0.0))
        shares_then, cost_then = books_then.get(symbol, (0.0, 0.0))
        shares_now, cost_now = books_now.get(symbol, (0.0, 0.0))
        traded, paid = shares_now - shares_then, cost_now - cost_then
        price = mark(symbol)
        if price is None:
            if abs(qty_then) > QTY_TOLERANCE:
                price = value_then / qty_then
            elif abs(traded) > QTY_TOLERANCE:
                price = paid / traded
            else:
                price = 0.0
        total += (qty_then + traded) * price - value_then - paid
    return total
