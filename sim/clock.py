"""The venue's market clock: wall clock plus an adjustable offset, and sessions.

``us-equities`` follows NYSE regular hours (09:30-16:00 America/New_York,
Monday to Friday; exchange holidays are not modelled). ``always-open`` reports
the market open at all times so tests never depend on the time of day, but it
still has a daily session close at 16:00 New York time, every day, so ``day``
orders expire when the clock is moved past it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from sim.config import ClockMode

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
_SEARCH_DAYS = 10


class MarketClock:
    """Wall clock shifted by an offset that only ever grows (clock jumps).

    Args:
        mode: ``always-open`` or ``us-equities``.
    """

    def __init__(self, mode: ClockMode) -> None:
        """Create a clock at offset zero."""
        self.mode: ClockMode = mode
        self.offset_s = 0.0

    def now(self) -> datetime:
        """Return the venue's current time (UTC, timezone-aware)."""
        return datetime.now(UTC) + timedelta(seconds=self.offset_s)

    def advance(self, seconds: float) -> None:
        """Jump the venue clock forward.

        Args:
            seconds: How far to jump; must not be negative.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("the venue clock only moves forward")
        self.offset_s += seconds

    def reset(self) -> None:
        """Return to the wall clock."""
        self.offset_s = 0.0

    def _is_session_day(self, day: datetime) -> bool:
        return self.mode == "always-open" or day.weekday() < 5

    def is_open(self, at: datetime | None = None) -> bool:
        """Whether orders may trade at ``at`` (default: now)."""
        if self.mode == "always-open":
            return True
        local = (at or self.now()).astimezone(NEW_YORK)
        return self._is_session_day(local) and SESSION_OPEN <= local.time() < SESSION_CLOSE

    def _next_boundary(self, at: datetime, boundary: time) -> datetime:
        local = at.astimezone(NEW_YORK)
        for days in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=days)
            candidate = datetime.combine(day, boundary, tzinfo=NEW_YORK)
            if candidate > local and self._is_session_day(candidate):
                return candidate
        raise AssertionError("no session boundary within ten days")  # pragma: no cover

    def next_open(self, at: datetime | None = None) -> datetime:
        """The next session open strictly after ``at`` (New York time)."""
        return self._next_boundary(at or self.now(), SESSION_OPEN)

    def next_close(self, at: datetime | None = None) -> datetime:
        """The next session close strictly after ``at`` (New York time).

        This is also when a ``day`` order submitted at ``at`` expires: during a
        session it is that session's close, outside one the next session's.
        """
        return self._next_boundary(at or self.now(), SESSION_CLOSE)
