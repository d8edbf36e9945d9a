"""Bounds with float tolerance, shared by the risk limits and the circuit breaker."""

from __future__ import annotations

import pytest

from actors.core.limit_bounds import REL_TOL, above, below, drawdown, reaches, tolerance


def test_the_tolerance_is_relative_with_an_absolute_floor() -> None:
    assert tolerance(1e6) == pytest.approx(1e6 * REL_TOL)
    assert tolerance(-1e6) == pytest.approx(1e6 * REL_TOL)
    assert tolerance(0.5) == REL_TOL
    assert tolerance(0.0) == REL_TOL


def test_at_most_passes_at_the_bound_and_within_rounding() -> None:
    assert not above(25_000.0, 25_000.0)
    assert not above(0.1 + 0.2, 0.3)  # 0.30000000000000004
    assert above(25_000.01, 25_000.0)


def test_at_least_passes_at_the_bound_and_within_rounding() -> None:
    assert not below(5.0, 5.0)
    assert not below(0.3, 0.1 + 0.2)
    assert below(4.99, 5.0)


def test_reaches_breaks_at_the_bound_and_within_rounding() -> None:
    assert reaches(0.03, 0.03)
    assert reaches(0.03 - 1e-12, 0.03)
    assert not reaches(0.0299, 0.03)
    assert reaches(0.0, 0.0)  # a zero limit is reached by anything; callers require a loss


@pytest.mark.parametrize(
    ("base", "equity", "expected"),
    [
        (100.0, 97.0, 0.03),
        (100.0, 120.0, 0.0),  # a gain is no drawdown
        (100.0, -50.0, 1.5),  # below zero: more than everything lost
        (0.0, 50.0, 0.0),  # no base
        (None, 50.0, 0.0),
        (100.0, None, 0.0),
    ],
)
def test_drawdown(base: float | None, equity: float | None, expected: float) -> None:
    assert drawdown(base, equity) == pytest.approx(expected)
