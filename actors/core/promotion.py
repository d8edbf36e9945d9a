"""A strategy's paper record and the gaps between it and ``[promotion]``: pure.

The daemon reads the record from the journal (:mod:`daemon.evidence`); the command
that promotes a strategy from paper to live is refused with one
``MODE_CHANGE_REFUSED`` reason per unmet criterion, every one listed, the way an
intent's rejection lists every broken limit. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

import msgspec

from actors.core.book import Position
from actors.core.settings import PromotionConfig
from protocol.messages import Reason
from protocol.reasons import ReasonCode

__all__ = [
    "PaperRecord",
    "Trip",
    "max_realized_drawdown",
    "promotion_gaps",
    "trips_in_quiet_window",
]

_EPS: Final = 1e-9
"""Currency below which a fall of the realized P&L is rounding, not a drawdown."""
TRIPS_LISTED: Final = 10
"""Trips named in a refusal; more are counted, not named."""


class Trip(NamedTuple):
    """A kill switch engage that covered the strategy, or a circuit breaker opening."""

    date: str
    """New York date, ``YYYY-MM-DD``."""
    what: str
    """The audit type and scope, e.g. ``kill.engage (global)`` or ``circuit.open``."""


class PaperRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the journal holds of one strategy's trading on one account."""

    sessions: list[str] = msgspec.field(default_factory=list)
    """Sorted distinct New York dates (``YYYY-MM-DD``) on which it placed orders."""
    filled_orders: int = 0
    """Its orders on the account that ended ``filled``."""
    max_drawdown: float = 0.0
    """Largest fall, in currency, of its cumulative realized P&L from its running peak
    (the peak starts at 0)."""
    trips: list[Trip] = msgspec.field(default_factory=list)
    """Kill engages that covered it and circuit openings, oldest first."""


def max_realized_drawdown(fills: Iterable[tuple[str, str, float, float]]) -> float:
    """The largest fall of cumulative realized P&L from its running peak (peak starts at 0).

    Args:
        fills: ``(symbol, side, qty, price)`` in the order they happened (journal id
            order); ``side`` is ``buy`` or ``sell``. Booked through
            :class:`~actors.core.book.Position` (average cost).

    Returns:
        The drawdown in currency, 0.0 when the realized P&L never fell below a peak.
    """
    positions: dict[str, Position] = {}
    realized = peak = worst = 0.0
    for symbol, side, qty, price in fills:
        position = positions.setdefault(symbol, Position())
        before = position.realized_pnl
        position.apply(1 if side == "buy" else -1, qty, price)
        realized += position.realized_pnl - before
        peak = max(peak, realized)
        worst = max(worst, peak - realized)
    return worst if worst > _EPS else 0.0


def trips_in_quiet_window(record: PaperRecord, quiet_sessions: int) -> list[Trip]:
    """The trips on or after the first of the record's last ``quiet_sessions`` sessions.

    With fewer sessions than that, the window starts at the first session; with no
    session, or ``quiet_sessions`` 0, no trip counts.
    """
    if quiet_sessions <= 0 or not record.sessions:
        return []
    start = sorted(record.sessions)[-quiet_sessions:][0]
    return [trip for trip in record.trips if trip.date >= start]


def promotion_gaps(
    config: PromotionConfig, record: PaperRecord, *, open_orders: int, capital: float | None
) -> list[Reason]:
    """Every criterion of ``[promotion]`` that ``record`` does not meet.

    Args:
        config: the ``[promotion]`` section.
        record: the strategy's paper record.
        open_orders: the strategy's unfinished orders on the paper account now.
        capital: its paper capital (allocation x the paper account's equity); None or
            not positive when the equity is not known yet.

    Returns:
        One ``MODE_CHANGE_REFUSED`` reason per unmet criterion, in the order of
        ``[promotion]``; empty when the strategy may be promoted.
    """
    messages = [
        _sessions_gap(config, record),
        _filled_gap(config, record),
        _drawdown_gap(config, record, capital),
        _trips_gap(config, record),
        f"open paper orders: {open_orders}, must be none" if open_orders > 0 else None,
    ]
    return [
        Reason(code=ReasonCode.MODE_CHANGE_REFUSED, message=message)
        for message in messages
        if message is not None
    ]


def _sessions_gap(config: PromotionConfig, record: PaperRecord) -> str | None:
    held = len(record.sessions)
    if held >= config.min_sessions:
        return None
    return f"paper sessions: {held} of {config.min_sessions} required"


def _filled_gap(config: PromotionConfig, record: PaperRecord) -> str | None:
    if record.filled_orders >= config.min_filled_orders:
        return None
    return f"filled paper orders: {record.filled_orders} of {config.min_filled_orders} required"


def _drawdown_gap(
    config: PromotionConfig, record: PaperRecord, capital: float | None
) -> str | None:
    """Under ``max_drawdown`` of the paper capital.

    No drawdown at all passes once the capital is known (``max_drawdown = 0``: none).
    """
    if capital is None or capital <= 0:
        return "paper drawdown: the paper account's equity is not known yet"
    share = record.max_drawdown / capital
    if record.max_drawdown <= 0 or share < config.max_drawdown:
        return None
    return (
        f"paper drawdown: {share * 100:.1f}% of its paper capital "
        f"({record.max_drawdown:,.2f} of {capital:,.2f}), "
        f"must stay under {config.max_drawdown * 100:.4g}%"
    )


def _trips_gap(config: PromotionConfig, record: PaperRecord) -> str | None:
    trips = list(dict.fromkeys(trips_in_quiet_window(record, config.quiet_sessions)))
    if not trips:
        return None
    named = ", ".join(f"{trip.date} {trip.what}" for trip in trips[:TRIPS_LISTED])
    more = len(trips) - TRIPS_LISTED
    sessions = (
        "paper session" if config.quiet_sessions == 1 else f"{config.quiet_sessions} paper sessions"
    )
    return f"kill switch or circuit trip in the last {sessions}: {named}" + (
        f" and {more} more" if more > 0 else ""
    )
