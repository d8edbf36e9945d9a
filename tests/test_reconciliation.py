"""The books against the broker's polls: a drift is an unexplained change, reported once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.reconciliation import DriftWatch


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
