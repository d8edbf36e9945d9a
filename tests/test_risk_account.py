"""The guardian's account view: books and the broker's poll combined, marks, cost sums."""

from __future__ import annotations

import pytest

from actors.core.risk_account import (
    MarkBasis,
    net_quantities,
    portfolio_view,
    sum_costs,
    symbols_to_mark,
)
from actors.core.risk_views import PortfolioView, Quote


def view(
    *,
    pending: list[dict[str, float]] | None = None,
    held: list[dict[str, tuple[float, float]]] | None = None,
    broker: dict[str, tuple[float, float]] | None = None,
    quotes: dict[str, Quote] | None = None,
    equity: float = 100_000.0,
    start: float | None = 99_000.0,
    peak: float | None = 110_000.0,
) -> PortfolioView:
    return portfolio_view(
        pending=pending or [],
        held=held or [],
        broker_positions=broker or {},
        quotes=quotes or {},
        equity=equity,
        start_of_day_equity=start,
        peak_equity=peak,
    )


def test_an_empty_account_has_no_exposure_and_keeps_the_baselines() -> None:
    got = view()
    assert got.equity == 100_000.0
    assert got.start_of_day_equity == 99_000.0
    assert got.peak_equity == 110_000.0
    assert got.gross_exposure == 0.0
    assert got.held_symbols == frozenset()
    assert dict(got.pending_opening) == {}


@pytest.mark.parametrize("missing", [None, 0.0])
def test_missing_baselines_fall_back_to_the_equity(missing: float | None) -> None:
    got = view(start=missing, peak=missing)
    assert got.start_of_day_equity == 100_000.0
    assert got.peak_equity == 100_000.0


def test_pending_opening_orders_are_summed_across_books() -> None:
    got = view(pending=[{"AAPL": 1_000.0, "MSFT": 500.0}, {"AAPL": 250.0}])
    assert dict(got.pending_opening) == {"AAPL": 1_250.0, "MSFT": 500.0}
    assert got.held_symbols == frozenset()  # pending orders are not positions


def test_book_positions_are_marked_at_the_mid_else_at_their_average_price() -> None:
    got = view(
        held=[{"AAPL": (10.0, 90.0), "MSFT": (-5.0, 200.0)}],
        quotes={"AAPL": Quote(bid=99.0, ask=101.0, ts=0.0)},  # old: exposure, not pricing
    )
    assert got.gross_exposure == 10 * 100.0 + 5 * 200.0
    assert got.held_symbols == {"AAPL", "MSFT"}


def test_books_sum_per_symbol_and_a_flat_sum_is_no_position() -> None:
    got = view(held=[{"AAPL": (10.0, 100.0), "TSLA": (3.0, 50.0)}, {"AAPL": (-10.0, 100.0)}])
    assert got.held_symbols == {"TSLA"}
    assert got.gross_exposure == 150.0


def test_each_symbol_counts_with_the_larger_of_books_and_broker() -> None:
    got = view(
        held=[{"AAPL": (10.0, 100.0), "MSFT": (1.0, 100.0)}],
        broker={"AAPL": (5.0, 500.0), "MSFT": (4.0, 400.0), "SPY": (-2.0, -900.0)},
    )
    # AAPL: books 1000 > broker 500; MSFT: broker 400 > books 100; SPY: broker only.
    assert got.gross_exposure == 1_000.0 + 400.0 + 900.0
    assert got.held_symbols == {"AAPL", "MSFT", "SPY"}


def test_flat_broker_positions_do_not_count() -> None:
    got = view(broker={"AAPL": (0.0, 0.0), "MSFT": (1e-12, 0.0)})
    assert got.held_symbols == frozenset()


def test_sum_costs_adds_shares_and_cash_per_symbol() -> None:
    books = [{"AAPL": (10.0, 1_000.0)}, {"AAPL": (-4.0, -420.0), "MSFT": (1.0, 300.0)}]
    assert sum_costs(books) == {"AAPL": (6.0, 580.0), "MSFT": (1.0, 300.0)}
    assert sum_costs([]) == {}


def test_net_quantities_sum_the_signed_shares() -> None:
    held = [{"AAPL": (10.0, 100.0)}, {"AAPL": (-3.0, 99.0), "MSFT": (-1.0, 300.0)}]
    assert net_quantities(held) == {"AAPL": 7.0, "MSFT": -1.0}


def test_symbols_to_mark_are_those_held_at_the_poll_or_by_the_books_now() -> None:
    basis = MarkBasis(50_000.0, {"AAPL": (10.0, 1_000.0), "SPY": (0.0, 0.0)}, {})
    costs = {"MSFT": (-2.0, -600.0), "TSLA": (0.0, 15.0)}
    assert symbols_to_mark(basis, costs) == {"AAPL", "MSFT"}
