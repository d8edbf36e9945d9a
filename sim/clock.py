"""The venue's market clock: wall clock plus an adjustable offset, and sessions.

``us-equities`` follows the New York Stock Exchange calendar of the maintained
``exchange-calendars`` package (``XNYS``): holidays, early closes (13:00 on the
day after Thanksgiving, Christmas Eve, ...), regular hours 09:30-16:00
America/New_York, and Alpaca's extended sessions, pre-market from 04:00 to the
open and after-hours from the close to 20:00 (17:00 after an early close).

``always-open`` reports the regular session open at all times so tests never
depend on the time of day, but it still has a daily session close at 16:00
New York time, every day, so ``day`` orders expire when the clock is moved
past it.
"""

from __future__ import annotations

import bisect
import functools
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from sim.config import ClockMode

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
PRE_MARKET_OPEN = time(4, 0)
AFTER_HOURS_CLOSE = time(20, 0)
AFTER_HOURS_MAX = timedelta(hours=4)
CALENDAR_FIRST_YEAR = 2015
CALENDAR_YEARS_AHEAD = 3
_SEARCH_DAYS = 10

Phase = Literal["closed", "pre", "regular", "post"]


@dataclass(frozen=True, slots=True)
class Session:
    """One trading day: its extended and regular bounds (timezone-aware, UTC).

    Attributes:
        day: The trading date (New York).
        pre_open: Start of the pre-market session (04:00 New York).
        open: Regular open (09:30 New York).
        close: Regular close (16:00, or 13:00 on an early close).
        post_close: End of the after-hours session (20:00, 17:00 after an early close).
    """

    day: date
    pre_open: datetime
    open: datetime
    close: datetime
    post_close: datetime


def _session(day: date, open_at: datetime, close_at: datetime) -> Session:
    pre_open = datetime.combine(day, PRE_MARKET_OPEN, tzinfo=NEW_YORK).astimezone(UTC)
    usual_end = datetime.combine(day, AFTER_HOURS_CLOSE, tzinfo=NEW_YORK).astimezone(UTC)
    return Session(
        day=day,
        pre_open=pre_open,
        open=open_at,
        close=close_at,
        post_close=min(usual_end, close_at + AFTER_HOURS_MAX),
    )


@functools.cache
def nyse_sessions(last_year: int) -> tuple[Session, ...]:
    """Every NYSE session from 2015 through ``last_year`` (loaded once per process).

    Args:
        last_year: Last calendar year to include.

    Returns:
        The sessions in date order.
    """
    # Imported here: heavy (pandas), and only the us-equities clock needs it.
    import exchange_calendars  # type: ignore[import-untyped]  # noqa: PLC0415  # no stubs

    with warnings.catch_warnings():
        # pandas 3 deprecation notices raised inside exchange-calendars, not ours to fix.
        warnings.simplefilter("ignore")
        calendar = exchange_calendars.get_calendar(
            "XNYS", start=f"{CALENDAR_FIRST_YEAR}-01-01", end=f"{last_year}-12-31"
        )
        schedule = calendar.schedule
    sessions: list[Session] = []
    for label, opened, closed in zip(
        schedule.index, schedule["open"], schedule["close"], strict=True
    ):
        sessions.append(
            _session(
                label.date(),
                opened.to_pydatetime().astimezone(UTC),
                closed.to_pydatetime().astimezone(UTC),
            )
        )
    return tuple(sessions)


def _daily_session(day: date) -> Session:
    open_at = datetime.combine(day, SESSION_OPEN, tzinfo=NEW_YORK).astimezone(UTC)
    close_at = datetime.combine(day, SESSION_CLOSE, tzinfo=NEW_YORK).astimezone(UTC)
    return _session(day, open_at, close_at)


class MarketClock:
    """Wall clock shifted by an offset that only ever grows (clock jumps).

    Args:
        mode: ``always-open`` or ``us-equities``.
    """

    def __init__(self, mode: ClockMode) -> None:
        """Create a clock at offset zero."""
        self.mode: ClockMode = mode
        self.offset_s = 0.0
        self._sessions: tuple[Session, ...] = ()
        self._days: list[date] = []
        if mode == "us-equities":
            self._sessions = nyse_sessions(datetime.now(UTC).year + CALENDAR_YEARS_AHEAD)
            self._days = [session.day for session in self._sessions]

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

    def set_time(self, when: datetime) -> None:
        """Move the venue clock to ``when`` (forward only).

        Raises:
            ValueError: If ``when`` is in the venue's past.
        """
        self.advance((when - self.now()).total_seconds())

    def reset(self) -> None:
        """Return to the wall clock."""
        self.offset_s = 0.0

    # -------------------------------------------------------------- sessions

    def session_on(self, day: date) -> Session | None:
        """The session of New York date ``day``, None on weekends and holidays."""
        if self.mode == "always-open":
            return _daily_session(day)
        index = bisect.bisect_left(self._days, day)
        if index < len(self._days) and self._days[index] == day:
            return self._sessions[index]
        return None

    def sessions(self, start: date, end: date) -> list[Session]:
        """Sessions from ``start`` to ``end`` inclusive (New York dates)."""
        if self.mode == "always-open":
            return [
                _daily_session(start + timedelta(days=i)) for i in range((end - start).days + 1)
            ]
        low = bisect.bisect_left(self._days, start)
        high = bisect.bisect_right(self._days, end)
        return list(self._sessions[low:high])

    def _around(self, at: datetime) -> list[Session]:
        """Sessions from the day before ``at`` to ``_SEARCH_DAYS`` after it."""
        day = at.astimezone(NEW_YORK).date()
        found = self.sessions(day - timedelta(days=1), day + timedelta(days=_SEARCH_DAYS))
        if not found:  # pragma: no cover - beyond the loaded calendar
            raise AssertionError(f"no session near {day}: outside the market calendar")
        return found

    def phase(self, at: datetime | None = None) -> Phase:
        """``regular``, ``pre`` (04:00-open), ``post`` (close-20:00) or ``closed`` at ``at``."""
        if self.mode == "always-open":
            return "regular"
        at = at or self.now()
        for session in self._around(at):
            if session.pre_open <= at < session.post_close:
                if at < session.open:
                    return "pre"
                return "regular" if at < session.close else "post"
        return "closed"

    def is_open(self, at: datetime | None = None) -> bool:
        """Whether the regular session is open at ``at`` (default: now)."""
        return self.phase(at) == "regular"

    def next_open(self, at: datetime | None = None) -> datetime:
        """The next regular open strictly after ``at`` (New York time)."""
        at = at or self.now()
        found = next(s.open for s in self._around(at) if s.open > at)
        return found.astimezone(NEW_YORK)

    def next_close(self, at: datetime | None = None) -> datetime:
        """The next regular close strictly after ``at`` (New York time).

        This is also when a ``day`` order submitted at ``at`` expires: during a
        session it is that session's close, outside one the next session's.
        """
        at = at or self.now()
        found = next(s.close for s in self._around(at) if s.close > at)
        return found.astimezone(NEW_YORK)

    def next_post_close(self, at: datetime | None = None) -> datetime:
        """The next end of an after-hours session strictly after ``at`` (New York time)."""
        at = at or self.now()
        found = next(s.post_close for s in self._around(at) if s.post_close > at)
        return found.astimezone(NEW_YORK)

    def last_close(self, at: datetime | None = None) -> datetime | None:
        """The latest regular close at or before ``at``, if within the last ten days."""
        at = at or self.now()
        day = at.astimezone(NEW_YORK).date()
        closes = [
            s.close for s in self.sessions(day - timedelta(days=_SEARCH_DAYS), day) if s.close <= at
        ]
        return closes[-1].astimezone(NEW_YORK) if closes else None
