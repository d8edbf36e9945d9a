"""Market calendar, extended hours, auctions and the calibrated price model (issue 14)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
import requests
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.models import Calendar
from alpaca.trading.requests import GetCalendarRequest, LimitOrderRequest, MarketOrderRequest
from sim_harness import Broker, fast_config, rest, running_venue, trade_stream

from sim.assets import load_assets
from sim.clock import NEW_YORK, MarketClock, Session
from sim.config import SimConfig
from sim.prices import PriceModel

pytestmark = pytest.mark.anyio

CALENDAR = MarketClock("us-equities")


def _ahead(days: int = 3) -> date:
    """A New York date far enough ahead that the venue clock can jump there."""
    return (datetime.now(UTC) + timedelta(days=days)).astimezone(NEW_YORK).date()


def _next_monday_session() -> Session:
    """A Monday that is a session, after a Sunday (so a weekend precedes it)."""
    day = _ahead()
    while True:
        session = CALENDAR.session_on(day)
        if day.weekday() == 0 and session is not None:
            return session
        day += timedelta(days=1)


def _next_weekday_holiday() -> date:
    day = _ahead()
    while day.weekday() >= 5 or CALENDAR.session_on(day) is not None:
        day += timedelta(days=1)
    return day


def _next_full_session() -> Session:
    day = _ahead()
    while True:
        session = CALENDAR.session_on(day)
        if session is not None and session.close.astimezone(NEW_YORK).time() == time(16):
            return session
        day += timedelta(days=1)


def _at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=NEW_YORK)


def _buy(symbol: str, qty: float, tif: TimeInForce = TimeInForce.DAY) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=tif)


# ------------------------------------------------------------------ calendar


def test_the_nyse_calendar_has_holidays_early_closes_and_extended_sessions() -> None:
    christmas = date(2026, 12, 25)
    assert CALENDAR.session_on(christmas) is None
    assert not CALENDAR.is_open(_at(christmas, 12))
    assert CALENDAR.phase(_at(christmas, 12)) == "closed"
    black_friday = CALENDAR.session_on(date(2026, 11, 27))
    assert black_friday is not None
    assert black_friday.close.astimezone(NEW_YORK).time() == time(13)
    assert black_friday.post_close.astimezone(NEW_YORK).time() == time(17)
    monday = date(2026, 11, 30)
    assert CALENDAR.phase(_at(monday, 3, 59)) == "closed"
    assert CALENDAR.phase(_at(monday, 4)) == "pre"
    assert CALENDAR.phase(_at(monday, 9, 30)) == "regular"
    assert CALENDAR.phase(_at(monday, 16)) == "post"
    assert CALENDAR.phase(_at(monday, 19, 59)) == "post"
    assert CALENDAR.phase(_at(monday, 20)) == "closed"
    # After Christmas Eve's early close the next open skips Christmas Day.
    assert CALENDAR.next_open(_at(date(2026, 12, 24), 14)) == _at(date(2026, 12, 28), 9, 30)


async def test_a_holiday_is_closed_and_the_calendar_endpoint_agrees() -> None:
    holiday = _next_weekday_holiday()
    async with running_venue(fast_config(clock="us-equities")) as venue:
        broker = Broker(venue.base_url)
        venue.set_time(_at(holiday, 12))
        clock = await broker.clock()
        assert not clock.is_open
        assert clock.next_open.date() > holiday
        order = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=float(venue.quote("AAPL").ask) + 1,
                extended_hours=True,
            )
        )
        venue.tick(3)
        assert (await broker.order(order.id)).status == OrderStatus.ACCEPTED
        request = GetCalendarRequest(
            start=holiday - timedelta(days=7), end=holiday + timedelta(days=7)
        )
        days = await rest(broker.trading.get_calendar, request)
        assert isinstance(days, list)
        dates = [day.date for day in days if isinstance(day, Calendar)]
        assert len(dates) == len(days) >= 5
        assert holiday not in dates
        assert all(CALENDAR.session_on(d) is not None for d in dates)


async def test_a_sunday_market_order_waits_accepted_and_fills_at_mondays_open() -> None:
    monday = _next_monday_session()
    sunday = monday.day - timedelta(days=1)
    async with (
        running_venue(fast_config(clock="us-equities")) as venue,
        trade_stream(venue) as (recorder, _),
    ):
        broker = Broker(venue.base_url)
        venue.set_time(_at(sunday, 20))
        before = venue.quote("AAPL")
        order = await broker.submit(_buy("AAPL", 2))
        assert order.status == OrderStatus.ACCEPTED
        venue.tick(20)  # the weekend: prices frozen, nothing trades
        assert venue.quote("AAPL").bid == before.bid
        assert (await broker.order(order.id)).status == OrderStatus.ACCEPTED
        await recorder.wait_event(order.id, "pending_new")
        assert recorder.events_of(order.id) == ["pending_new"]

        venue.set_time(monday.open.astimezone(NEW_YORK) + timedelta(seconds=1))
        fill = await recorder.wait_event(order.id, "fill")
        assert recorder.events_of(order.id) == ["pending_new", "new", "fill"]
        assert fill.timestamp >= monday.open
        assert fill.price == float(before.ask)


async def test_extended_hours_limit_orders_trade_at_17h_and_others_wait() -> None:
    session = _next_full_session()
    async with (
        running_venue(fast_config(clock="us-equities")) as venue,
        trade_stream(venue) as (recorder, _),
    ):
        broker = Broker(venue.base_url)
        venue.set_time(_at(session.day, 17))
        assert (await broker.clock()).is_open is False
        limit = float(venue.quote("MSFT").ask) + 1
        extended = await broker.submit(
            LimitOrderRequest(
                symbol="MSFT",
                qty=3,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=limit,
                extended_hours=True,
            )
        )
        regular = await broker.submit(_buy("AAPL", 1))
        fill = await recorder.wait_event(extended.id, "fill")
        assert fill.position_qty == 3
        assert (await broker.order(regular.id)).status == OrderStatus.ACCEPTED
        # An extended-hours DAY order lives until the after-hours session ends.
        assert extended.expires_at == _at(session.day, 20)


async def test_opg_and_cls_fill_only_at_the_auctions() -> None:
    session = _next_full_session()
    async with (
        running_venue(fast_config(clock="us-equities")) as venue,
        trade_stream(venue) as (recorder, _),
    ):
        broker = Broker(venue.base_url)
        venue.set_time(_at(session.day, 8))
        opening = await broker.submit(_buy("SPY", 1, TimeInForce.OPG))
        venue.set_time(_at(session.day, 9, 29))
        assert (await broker.order(opening.id)).status == OrderStatus.ACCEPTED
        venue.set_time(_at(session.day, 9, 30, 1))
        await recorder.wait_event(opening.id, "fill")

        closing = await broker.submit(_buy("SPY", 1, TimeInForce.CLS))
        venue.tick(5)
        assert (await broker.order(closing.id)).status == OrderStatus.ACCEPTED
        venue.set_time(_at(session.day, 16, 0, 1))
        fill = await recorder.wait_event(closing.id, "fill")
        assert fill.timestamp >= session.close


async def test_last_equity_and_lastday_price_roll_at_the_close() -> None:
    session = _next_full_session()
    async with running_venue(fast_config(clock="us-equities", tick_interval_s=0)) as venue:
        broker = Broker(venue.base_url)
        venue.set_time(_at(session.day, 10))
        order = await broker.submit(_buy("AAPL", 10))
        venue.match()
        assert (await broker.order(order.id)).status == OrderStatus.FILLED
        venue.set_price("AAPL", 200.0)
        venue.set_time(_at(session.day, 16, 0, 1))
        account = await broker.account()
        assert account.last_equity == account.equity
        position = await broker.position("AAPL")
        assert position.lastday_price == "200"
        assert position.change_today == "0"


# --------------------------------------------------------------- price model


def _realized_daily_volatility(symbol: str, seed: int, days: int) -> tuple[float, int]:
    clock = MarketClock("us-equities")
    start = _at(_ahead(), 0)
    clock.set_time(start)
    prices = PriceModel(SimConfig(seed=seed, tick_interval_s=0), clock.now, clock.phase)
    step_s = 300.0
    closes: list[float] = []
    session = clock.session_on(clock.now().astimezone(NEW_YORK).date())
    while clock.now() < start + timedelta(days=days):
        before = clock.now()
        clock.advance(step_s)
        prices.tick(step_s)
        session = clock.session_on(before.astimezone(NEW_YORK).date())
        if session is not None and before < session.close <= clock.now():
            closes.append(float(prices.quote(symbol).mid))
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    return math.sqrt(variance), len(closes)


@pytest.mark.parametrize("symbol", ["SPY", "AAPL", "TSLA", "NVDA"])
def test_realized_daily_volatility_over_a_simulated_month_is_in_its_band(symbol: str) -> None:
    documented = load_assets()[symbol].daily_volatility
    assert 0.01 <= documented <= 0.03
    realized, sessions = _realized_daily_volatility(symbol, seed=1, days=45)
    assert sessions >= 28
    # 30 daily returns estimate a volatility to about +-13 % (one sigma).
    assert 0.6 * documented <= realized <= 1.5 * documented, (symbol, realized, documented)


def test_every_listed_asset_documents_a_volatility_between_1_and_3_percent() -> None:
    assets = load_assets()
    assert len(assets) >= 300
    assert all(0.01 <= a.daily_volatility <= 0.03 for a in assets.values())


def test_prices_are_frozen_outside_sessions_sizes_vary_and_the_seed_fixes_the_path() -> None:
    clock = MarketClock("us-equities")
    clock.set_time(_at(_next_weekday_holiday(), 12))
    frozen = PriceModel(SimConfig(seed=5), clock.now, clock.phase)
    start = frozen.quote("AAPL")
    for _ in range(50):
        frozen.tick()
    assert frozen.quote("AAPL").mid == start.mid

    paths: list[list[tuple[Decimal, Decimal, int, int]]] = []
    for _ in range(2):
        model = PriceModel(SimConfig(seed=5), clock.now)  # no phase: always regular
        path = []
        for _ in range(200):
            model.tick()
            quote = model.quote("AAPL")
            path.append((quote.bid, quote.ask, quote.bid_size, quote.ask_size))
        paths.append(path)
    assert paths[0] == paths[1]
    assert len({size for _, _, size, _ in paths[0]}) > 5
    assert all(size % 100 == 0 for _, _, size, _ in paths[0])
    other = PriceModel(SimConfig(seed=6), clock.now)
    other.tick()
    assert other.quote("AAPL").mid != paths[0][0][0]


async def test_the_control_api_moves_the_clock_to_a_moment() -> None:
    session = _next_full_session()
    async with running_venue(fast_config(clock="us-equities", control_enabled=True)) as venue:
        url = f"{venue.base_url}/_sim/clock"
        at = _at(session.day, 17).isoformat()
        moved = await rest(requests.post, url, json={"at": at}, timeout=5)
        assert moved.status_code == 200, moved.text
        assert moved.json()["session_phase"] == "post"
        both = await rest(requests.post, url, json={"at": at, "advance_s": 1}, timeout=5)
        assert both.status_code == 400
        backwards = await rest(requests.post, url, json={"at": _at(session.day, 9).isoformat()})
        assert backwards.status_code == 400
        assert "forward" in backwards.json()["message"]
