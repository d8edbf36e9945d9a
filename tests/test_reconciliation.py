"""The books against the broker's polls: a drift is an unexplained change, reported once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.core.book import Position
from actors.core.reconciliation import DriftWatch, marked_equity


def test_the_first_poll_sets_the_baseline_including_positions_nobody_owns() -> None:
    watch = DriftWatch()
    assert watch.observe({"AAPL": 100.0, "MSFT": 5.0}, {"MSFT": 5.0}, set()) == []
    # A long-held AAPL position no strategy owns is no drift on the next polls either.
    assert watch.observe({"AAPL": 100.0, "MSFT": 5.0}, {"MSFT": 5.0}, set()) == []


def test_a_change_seen_on_two_polls_with_no_order_open_is_one_drift() -> None:
    watch = DriftWatch()
    watch.observe({"AAPL": 10.0}, {"AAPL": 10.0}, set())
    # Someone sold 4 AAPL outside tradeguard: once could be a race, twice is a drift.
    assert watch.observe({"AAPL": 6.0}, {"AAPL": 10.0}, set()) == []
    drifts = watch.observe({"AAPL": 6.0}, {"AAPL": 10.0}, set())
    assert [(d.symbol, d.expected_difference, d.difference) for d in drifts] == [
        ("AAPL", 0.0, -4.0)
    ]
    assert "broker holds 6" in drifts[0].describe()
    # Reported once: it is the new baseline.
    assert watch.observe({"AAPL": 6.0}, {"AAPL": 10.0}, set()) == []


def test_a_fill_reported_between_snapshot_and_arrival_is_no_drift() -> None:
    watch = DriftWatch()
    watch.observe({"AAPL": 0.0}, {}, set())
    # The poll's snapshot predates a fill our books already hold: the next poll agrees.
    assert watch.observe({}, {"AAPL": 5.0}, set()) == []
    assert watch.observe({"AAPL": 5.0}, {"AAPL": 5.0}, set()) == []


def test_a_symbol_with_an_open_order_gets_no_verdict() -> None:
    watch = DriftWatch()
    watch.observe({"AAPL": 0.0}, {}, set())
    for _ in range(5):
        assert watch.observe({"AAPL": 3.0}, {}, {"AAPL"}) == []


@given(
    st.lists(
        st.tuples(st.integers(-50, 50), st.integers(-50, 50), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_only_changes_of_the_difference_are_reported_and_each_once(
    polls: list[tuple[int, int, bool]],
) -> None:
    watch = DriftWatch()
    baseline: float | None = None
    for index, (broker, books, busy) in enumerate(polls):
        drifts = watch.observe({"X": float(broker)}, {"X": float(books)}, {"X"} if busy else set())
        difference = float(broker - books)
        for drift in drifts:
            assert drift.difference == difference
            assert drift.expected_difference != difference
            assert not busy
            assert drift.expected_difference == baseline
        if index == 0 or drifts:
            baseline = difference


def test_a_symbol_first_seen_after_the_first_poll_starts_from_zero() -> None:
    watch = DriftWatch()
    watch.observe({}, {}, set())
    assert watch.observe({"AAPL": 1.0}, {"AAPL": 3.0}, set()) == []
    drifts = watch.observe({"AAPL": 1.0}, {"AAPL": 3.0}, set())
    assert [(d.expected_difference, d.difference) for d in drifts] == [(0.0, -2.0)]


# ---------------------------------------------------------------- equity between polls


def test_with_nothing_traded_and_prices_still_the_poll_stands() -> None:
    broker = {"AAPL": (10.0, 1000.0), "TSLA": (-5.0, -1250.0)}
    prices = {"AAPL": 100.0, "TSLA": 250.0}
    assert marked_equity(50_000.0, broker, {}, {}, prices.get) == 50_000.0
    assert marked_equity(50_000.0, broker, {}, {}, lambda _s: None) == 50_000.0


def test_a_fill_since_the_poll_moves_equity_by_its_gain_at_the_mark() -> None:
    # Bought 100 SPY at 500 after the poll; SPY is now 469: 3,100 lost.
    books_now = {"SPY": (100.0, 50_000.0)}
    assert marked_equity(100_000.0, {}, {}, books_now, {"SPY": 469.0}.get) == 96_900.0
    # With no quote, the fill counts at its own price: no gain, no loss yet.
    assert marked_equity(100_000.0, {}, {}, books_now, lambda _s: None) == 100_000.0


def test_a_price_move_marks_the_positions_the_poll_saw() -> None:
    # Long 10 AAPL (1,000) and short 5 TSLA (-1,250) at the poll; AAPL +10, TSLA +10.
    broker = {"AAPL": (10.0, 1000.0), "TSLA": (-5.0, -1250.0)}
    prices = {"AAPL": 110.0, "TSLA": 260.0}
    assert marked_equity(50_000.0, broker, {}, {}, prices.get) == 50_000.0 + 100.0 - 50.0


def test_a_round_trip_since_the_poll_leaves_its_realized_gain() -> None:
    # The books held 10 at 100 at the poll; then sold 10 at 120: flat, +200 realized.
    books_then = {"AAPL": (10.0, 1000.0)}
    books_now = {"AAPL": (0.0, -200.0)}
    broker = {"AAPL": (10.0, 1000.0)}
    got = marked_equity(20_000.0, broker, books_then, books_now, {"AAPL": 130.0}.get)
    assert got == 20_000.0 + 200.0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["AAPL", "MSFT"]),
            st.sampled_from([1, -1]),
            st.integers(1, 20),
            st.integers(50, 150),
        ),
        max_size=30,
    ),
    st.integers(0, 30),
    st.fixed_dictionaries({"AAPL": st.integers(40, 160), "MSFT": st.integers(40, 160)}),
)
def test_marked_equity_is_the_accounts_true_equity(
    fills: list[tuple[str, int, int, int]], poll_at: int, prices: dict[str, int]
) -> None:
    """Fills booked as the order manager books them, a poll somewhere among them."""
    cash = 100_000.0
    shares: dict[str, float] = {}
    books: dict[str, Position] = {}
    last: dict[str, float] = {}
    basis = None

    def costs() -> dict[str, tuple[float, float]]:
        return {s: (p.qty, p.qty * p.avg_price - p.realized_pnl) for s, p in books.items()}

    for n in range(len(fills) + 1):
        if n == min(poll_at, len(fills)):
            value = {s: (q, q * last[s]) for s, q in shares.items()}
            equity = cash + sum(v for _q, v in value.values())
            basis = (equity, value, costs())
        if n == len(fills):
            break
        symbol, sign, qty, price = fills[n]
        cash -= sign * qty * price
        shares[symbol] = shares.get(symbol, 0.0) + sign * qty
        books.setdefault(symbol, Position()).apply(sign, float(qty), float(price))
        last[symbol] = float(price)
    assert basis is not None
    truth = cash + sum(q * prices[s] for s, q in shares.items())
    marks = {s: float(p) for s, p in prices.items()}
    got = marked_equity(basis[0], basis[1], basis[2], costs(), marks.get)
    assert abs(got - truth) < 1e-6
