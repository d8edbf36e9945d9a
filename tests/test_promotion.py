"""Promotion's evidence, pure: every unmet criterion of ``[promotion]`` is listed, with numbers."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.core.book import Position
from actors.core.promotion import (
    PaperRecord,
    Trip,
    max_realized_drawdown,
    promotion_gaps,
    trips_in_quiet_window,
)
from actors.core.settings import PromotionConfig
from protocol.reasons import ReasonCode

CONFIG = PromotionConfig(min_sessions=5, min_filled_orders=20, max_drawdown=0.05, quiet_sessions=3)
SESSIONS = ["2025-03-03", "2025-03-04", "2025-03-05", "2025-03-06", "2025-03-07"]
GOOD = PaperRecord(sessions=SESSIONS, filled_orders=20, max_drawdown=100.0, trips=[])
"""Meets CONFIG with a capital of 10,000 (1 % drawdown)."""


def gaps(
    record: PaperRecord = GOOD,
    *,
    config: PromotionConfig = CONFIG,
    open_orders: int = 0,
    capital: float | None = 10_000.0,
) -> list[str]:
    reasons = promotion_gaps(config, record, open_orders=open_orders, capital=capital)
    assert {reason.code for reason in reasons} <= {ReasonCode.MODE_CHANGE_REFUSED}
    return [reason.message for reason in reasons]


def with_(**changes: object) -> PaperRecord:
    return msgspec.structs.replace(GOOD, **changes)


def test_a_record_that_meets_every_criterion_has_no_gap() -> None:
    assert gaps() == []


def test_too_few_sessions() -> None:
    assert gaps(with_(sessions=SESSIONS[:2])) == ["paper sessions: 2 of 5 required"]
    assert gaps(with_(sessions=SESSIONS[:4])) == ["paper sessions: 4 of 5 required"]


def test_too_few_filled_orders() -> None:
    assert gaps(with_(filled_orders=7)) == ["filled paper orders: 7 of 20 required"]
    assert gaps(with_(filled_orders=19)) == ["filled paper orders: 19 of 20 required"]


def test_drawdown_at_or_over_the_limit() -> None:
    assert gaps(with_(max_drawdown=620.0)) == [
        "paper drawdown: 6.2% of its paper capital (620.00 of 10,000.00), must stay under 5%"
    ]
    assert gaps(with_(max_drawdown=500.0)) == [
        "paper drawdown: 5.0% of its paper capital (500.00 of 10,000.00), must stay under 5%"
    ]
    assert gaps(with_(max_drawdown=499.99)) == []


@pytest.mark.parametrize("capital", [None, 0.0, -5.0])
def test_drawdown_without_a_known_equity(capital: float | None) -> None:
    assert gaps(capital=capital) == ["paper drawdown: the paper account's equity is not known yet"]
    assert gaps(with_(max_drawdown=0.0), capital=capital) == [
        "paper drawdown: the paper account's equity is not known yet"
    ]


def test_a_zero_drawdown_limit_allows_no_drawdown_at_all() -> None:
    strict = PromotionConfig(min_sessions=0, min_filled_orders=0, max_drawdown=0.0)
    assert gaps(with_(max_drawdown=0.0), config=strict) == []
    assert gaps(with_(max_drawdown=0.01), config=strict) == [
        "paper drawdown: 0.0% of its paper capital (0.01 of 10,000.00), must stay under 0%"
    ]


def test_open_orders() -> None:
    assert gaps(open_orders=3) == ["open paper orders: 3, must be none"]
    assert gaps(open_orders=1) == ["open paper orders: 1, must be none"]


def test_a_trip_in_the_quiet_sessions() -> None:
    record = with_(trips=[Trip("2025-03-05", "kill.engage (global)")])
    assert gaps(record) == [
        "kill switch or circuit trip in the last 3 paper sessions: 2025-03-05 kill.engage (global)"
    ]


def test_a_trip_before_the_quiet_sessions_is_forgiven() -> None:
    record = with_(trips=[Trip("2025-03-04", "circuit.open")])
    assert gaps(record) == []


def test_quiet_window_boundaries() -> None:
    trips = [
        Trip("2025-03-01", "circuit.open"),  # before any session
        Trip("2025-03-04", "kill.engage (strategy)"),  # before the last 3
        Trip("2025-03-05", "kill.engage (global)"),  # the first of the last 3
        Trip("2025-03-08", "circuit.open"),  # after the last session
    ]
    record = with_(trips=trips)
    assert trips_in_quiet_window(record, 3) == trips[2:]
    assert trips_in_quiet_window(record, 1) == trips[3:]
    assert trips_in_quiet_window(record, 0) == []
    assert trips_in_quiet_window(record, 10) == trips[1:]  # fewer sessions: all of them
    assert trips_in_quiet_window(with_(sessions=[], trips=trips), 3) == []
    unsorted = with_(sessions=list(reversed(SESSIONS)), trips=trips)
    assert trips_in_quiet_window(unsorted, 3) == trips[2:]


def test_quiet_sessions_zero_never_counts_a_trip() -> None:
    config = PromotionConfig(
        min_sessions=5, min_filled_orders=20, max_drawdown=0.05, quiet_sessions=0
    )
    assert gaps(with_(trips=[Trip("2025-03-07", "circuit.open")]), config=config) == []


def test_one_quiet_session_reads_as_one() -> None:
    config = PromotionConfig(quiet_sessions=1, min_sessions=0, min_filled_orders=0)
    record = with_(trips=[Trip("2025-03-07", "circuit.open")])
    assert gaps(record, config=config) == [
        "kill switch or circuit trip in the last paper session: 2025-03-07 circuit.open"
    ]


def test_trips_are_named_once_and_at_most_ten() -> None:
    same = [Trip("2025-03-07", "kill.engage (global)")] * 3
    assert gaps(with_(trips=same)) == [
        "kill switch or circuit trip in the last 3 paper sessions: 2025-03-07 kill.engage (global)"
    ]
    many = [Trip("2025-03-07", f"circuit.open {n}") for n in range(13)]
    (message,) = gaps(with_(trips=many))
    assert message.endswith("2025-03-07 circuit.open 9 and 3 more")
    assert "circuit.open 10" not in message


def test_every_unmet_criterion_is_listed_together() -> None:
    record = PaperRecord(
        sessions=["2025-03-03", "2025-03-04"],
        filled_orders=7,
        max_drawdown=620.0,
        trips=[Trip("2025-03-04", "kill.engage (global)")],
    )
    assert gaps(record, open_orders=3) == [
        "paper sessions: 2 of 5 required",
        "filled paper orders: 7 of 20 required",
        "paper drawdown: 6.2% of its paper capital (620.00 of 10,000.00), must stay under 5%",
        "kill switch or circuit trip in the last 3 paper sessions: 2025-03-04 kill.engage (global)",
        "open paper orders: 3, must be none",
    ]


def test_an_empty_record_against_the_defaults() -> None:
    assert gaps(PaperRecord(), config=PromotionConfig(), capital=None) == [
        "paper sessions: 0 of 5 required",
        "filled paper orders: 0 of 20 required",
        "paper drawdown: the paper account's equity is not known yet",
    ]


@given(
    sessions=st.integers(min_value=0, max_value=8),
    filled=st.integers(min_value=0, max_value=30),
    drawdown=st.floats(min_value=0, max_value=2_000, allow_nan=False),
    open_orders=st.integers(min_value=0, max_value=5),
)
def test_one_reason_per_unmet_criterion(
    sessions: int, filled: int, drawdown: float, open_orders: int
) -> None:
    record = PaperRecord(
        sessions=[f"2025-04-{day + 1:02d}" for day in range(sessions)],
        filled_orders=filled,
        max_drawdown=drawdown,
    )
    unmet = [
        sessions < CONFIG.min_sessions,
        filled < CONFIG.min_filled_orders,
        drawdown > 0 and drawdown / 10_000 >= CONFIG.max_drawdown,
        open_orders > 0,
    ]
    assert len(gaps(record, open_orders=open_orders)) == sum(unmet)


# ------------------------------------------------------------------ realized drawdown


def test_drawdown_from_the_running_peak() -> None:
    fills = [
        ("AAPL", "buy", 10.0, 100.0),
        ("AAPL", "sell", 10.0, 110.0),  # +100: peak 100
        ("AAPL", "buy", 10.0, 100.0),
        ("AAPL", "sell", 10.0, 85.0),  # -150: cum -50, 150 under the peak
        ("MSFT", "sell", 5.0, 50.0),  # a short
        ("MSFT", "buy", 5.0, 30.0),  # +100: cum 50
    ]
    assert max_realized_drawdown(fills) == pytest.approx(150.0)


def test_the_peak_starts_at_zero() -> None:
    assert max_realized_drawdown([("X", "buy", 1.0, 10.0), ("X", "sell", 1.0, 7.0)]) == 3.0
    assert max_realized_drawdown([("X", "buy", 1.0, 10.0), ("X", "sell", 1.0, 17.0)]) == 0.0
    assert max_realized_drawdown([]) == 0.0


def test_open_positions_do_not_count() -> None:
    assert max_realized_drawdown([("X", "buy", 1.0, 10.0), ("X", "buy", 1.0, 1.0)]) == 0.0


fill_st = st.tuples(
    st.sampled_from(["A", "B"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(min_value=1, max_value=20).map(float),
    st.integers(min_value=1, max_value=200).map(float),
)


@given(st.lists(fill_st, max_size=40))
def test_drawdown_matches_a_brute_force_replay(fills: list[tuple[str, str, float, float]]) -> None:
    positions: dict[str, Position] = {}
    series = [0.0]
    for symbol, side, qty, price in fills:
        positions.setdefault(symbol, Position()).apply(1 if side == "buy" else -1, qty, price)
        series.append(sum(p.realized_pnl for p in positions.values()))
    expected = max(
        (max(series[: j + 1]) - series[j] for j in range(len(series))),
        default=0.0,
    )
    assert max_realized_drawdown(fills) == pytest.approx(expected, abs=1e-6)
    assert max_realized_drawdown(fills) >= 0.0
