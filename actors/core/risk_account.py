"""The account as the risk guardian sees it: the books and the broker's poll, combined.

Positions come from two places: the strategies' own books, moved by every fill the
moment it is reported, and the broker's last account poll, which also holds what no
strategy owns. :func:`portfolio_view` counts each symbol with the larger of the two,
so the limits never see less exposure than there is. Between polls the equity is
marked from a :class:`MarkBasis` (:func:`~actors.core.reconciliation.marked_equity`).
Pure: the guardian reads the books and passes what they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from actors.core.risk_views import PortfolioView, Quote

__all__ = [
    "QTY_EPS",
    "MarkBasis",
    "net_quantities",
    "portfolio_view",
    "sum_costs",
    "symbols_to_mark",
]

QTY_EPS: Final = 1e-9
"""Positions smaller than this many shares are flat."""


class MarkBasis(msgspec.Struct, frozen=True):
    """The last full poll, and the books as they stood when it arrived.

    Attributes:
        equity: the broker's equity at the poll.
        positions: the broker's positions: symbol to (signed shares, market value).
        books: the books' symbol to (signed shares, net cash invested), summed.
    """

    equity: float
    positions: Mapping[str, tuple[float, float]]
    books: Mapping[str, tuple[float, float]]


def portfolio_view(
    *,
    pending: Iterable[Mapping[str, float]],
    held: Iterable[Mapping[str, tuple[float, float]]],
    broker_positions: Mapping[str, tuple[float, float]],
    quotes: Mapping[str, Quote],
    equity: float,
    start_of_day_equity: float | None,
    peak_equity: float | None,
) -> PortfolioView:
    """The account as the limits see it.

    Args:
        pending: each book's symbol to notional of its open opening orders.
        held: each book's symbol to (signed qty, average price), from its fills.
        broker_positions: the last poll's symbol to (signed qty, market value).
        quotes: the latest quotes; a book position is marked at the mid, else at
            its average price.
        equity: the account equity now.
        start_of_day_equity: the breaker's daily baseline (None or 0: ``equity``).
        peak_equity: the breaker's peak (None or 0: ``equity``).
    """
    pending_opening: dict[str, float] = {}
    for book in pending:
        for symbol, notional in book.items():
            pending_opening[symbol] = pending_opening.get(symbol, 0.0) + notional
    exposure = _exposure(held, broker_positions, quotes)
    return PortfolioView(
        equity=equity,
        start_of_day_equity=start_of_day_equity or equity,
        peak_equity=peak_equity or equity,
        gross_exposure=sum(exposure.values()),
        held_symbols=frozenset(exposure),
        pending_opening=pending_opening,
    )


def _exposure(
    held: Iterable[Mapping[str, tuple[float, float]]],
    broker_positions: Mapping[str, tuple[float, float]],
    quotes: Mapping[str, Quote],
) -> dict[str, float]:
    """Symbol to ``|qty| * price``: the larger of the books' (summed) and the broker's."""
    fills: dict[str, tuple[float, float]] = {}
    for book in held:
        for symbol, (qty, avg_price) in book.items():
            shares, _price = fills.get(symbol, (0.0, avg_price))
            fills[symbol] = (shares + qty, avg_price)  # the last book's average price
    exposure: dict[str, float] = {}
    for symbol, (qty, avg_price) in fills.items():
        if abs(qty) > QTY_EPS:
            quote = quotes.get(symbol)
            mark = (quote.bid + quote.ask) / 2 if quote is not None else avg_price
            exposure[symbol] = abs(qty) * mark
    for symbol, (qty, value) in broker_positions.items():
        if abs(qty) > QTY_EPS:
            exposure[symbol] = max(exposure.get(symbol, 0.0), abs(value))
    return exposure


def sum_costs(
    books: Iterable[Mapping[str, tuple[float, float]]],
) -> dict[str, tuple[float, float]]:
    """Every book's symbol to (signed shares, net cash invested), summed by symbol."""
    total: dict[str, tuple[float, float]] = {}
    for book in books:
        for symbol, (qty, cost) in book.items():
            held, paid = total.get(symbol, (0.0, 0.0))
            total[symbol] = (held + qty, paid + cost)
    return total


def net_quantities(held: Iterable[Mapping[str, tuple[float, float]]]) -> dict[str, float]:
    """Every book's symbol to (signed qty, average price), as symbol to summed qty."""
    total: dict[str, float] = {}
    for book in held:
        for symbol, (qty, _price) in book.items():
            total[symbol] = total.get(symbol, 0.0) + qty
    return total


def symbols_to_mark(basis: MarkBasis, costs: Mapping[str, tuple[float, float]]) -> set[str]:
    """The symbols held at the poll or by the books now: the ones to re-quote for a mark."""
    held = {s for s, (qty, _) in basis.positions.items() if abs(qty) > QTY_EPS}
    held |= {s for s, (qty, _) in costs.items() if abs(qty) > QTY_EPS}
    return held
