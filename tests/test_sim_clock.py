"""Market sessions of the venue clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sim.clock import NEW_YORK, MarketClock


def _at(clock: MarketClock, when: datetime) -> None:
    clock.offset_s = (when - datetime.now(UTC)).total_seconds()


def test_us_equities_follows_nyse_regular_hours() -> None:
    clock = MarketClock("us-equities")
    friday_noon = datetime(2025, 6, 27, 12, 0, tzinfo=NEW_YORK)
    assert clock.is_open(friday_noon)
    assert not clock.is_open(friday_noon.replace(hour=9, minute=29))
    assert clock.is_open(friday_noon.replace(hour=9, minute=30))
    assert not clock.is_open(friday_noon.replace(hour=16))
    assert not clock.is_open(friday_noon + timedelta(days=1))  # Saturday
    assert clock.next_close(friday_noon) == friday_noon.replace(hour=16)
    # After Friday's close the next session is Monday's.
    friday_evening = friday_noon.replace(hour=17)
    assert clock.next_open(friday_evening) == datetime(2025, 6, 30, 9, 30, tzinfo=NEW_YORK)
    assert clock.next_close(friday_evening) == datetime(2025, 6, 30, 16, 0, tzinfo=NEW_YORK)
    # Daylight saving time is New York's, not UTC's.
    winter = datetime(2025, 1, 15, 14, 31, tzinfo=UTC)  # 09:31 EST
    summer = datetime(2025, 7, 15, 13, 31, tzinfo=UTC)  # 09:31 EDT
    assert clock.is_open(winter)
    assert clock.is_open(summer)
    assert not clock.is_open(summer - timedelta(minutes=2))


def test_always_open_still_has_a_daily_close_for_day_orders() -> None:
    clock = MarketClock("always-open")
    sunday_night = datetime(2025, 6, 29, 23, 0, tzinfo=NEW_YORK)
    assert clock.is_open(sunday_night)
    assert clock.next_close(sunday_night) == datetime(2025, 6, 30, 16, 0, tzinfo=NEW_YORK)


def test_clock_jumps_only_forward_and_resets() -> None:
    clock = MarketClock("us-equities")
    _at(clock, datetime(2025, 6, 27, 15, 59, tzinfo=NEW_YORK))
    assert clock.is_open()
    clock.advance(120)
    assert not clock.is_open()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    clock.reset()
    assert clock.offset_s == 0
