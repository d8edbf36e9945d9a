"""How a value compares with a limit, and drawdowns: shared by the risk limits and the breaker.

Limits written "at most" pass at the bound (:func:`above` breaks them); limits
written "at least" pass at the bound (:func:`below` breaks them); drawdowns and the
daily loss break at the bound (:func:`reaches`). Every comparison allows
:data:`REL_TOL` relative (at least ``REL_TOL`` absolute), so a value equal to its
bound up to float rounding counts as at the bound.
"""

from __future__ import annotations

from typing import Final

__all__ = ["REL_TOL", "above", "below", "drawdown", "reaches", "tolerance"]

REL_TOL: Final = 1e-9


def tolerance(bound: float) -> float:
    """The float rounding allowed around ``bound``."""
    return REL_TOL * max(abs(bound), 1.0)


def above(value: float, bound: float) -> bool:
    """``value`` breaks an "at most ``bound``" limit."""
    return value > bound + tolerance(bound)


def below(value: float, bound: float) -> bool:
    """``value`` breaks an "at least ``bound``" limit."""
    return value < bound - tolerance(bound)


def reaches(value: float, bound: float) -> bool:
    """``value`` breaks a "must stay below ``bound``" limit (drawdowns, daily loss)."""
    return value >= bound - tolerance(bound)


def drawdown(base: float | None, equity: float | None) -> float:
    """Fractional fall of ``equity`` from ``base``; 0 for a gain or without a base."""
    if base is None or equity is None or base <= 0:
        return 0.0
    return max(0.0, (base - equity) / base)
