"""Every fault kind, seen through alpaca-py, and the /_sim control endpoint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from sim_harness import (
    KEY_ID,
    WAIT_S,
    Broker,
    fast_config,
    rest,
    running_venue,
    trade_stream,
)

pytestmark = pytest.mark.anyio


def _broker(base_url: str) -> Broker:
    return Broker(base_url, retry_wait_s=0)  # alpaca-py waits 3 s between retries by default


def _buy(symbol: str, qty: float, client_order_id: str | None = None) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol,
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=client_order_id,
    )


async def test_429_and_504_are_retried_by_alpaca_py() -> None:
    async with running_venue() as venue:
        broker = _broker(venue.base_url)
        venue.inject_errors("GET /v2/account", 429, count=2)
        account = await broker.account()
        assert account.status.value == "ACTIVE"
        assert not venue.faults.errors["GET /v2/account"]

        # 504 before processing: alpaca-py retries and exactly one order exists.
        venue.inject_errors("POST /v2/orders", 504, count=2)
        order = await broker.submit(_buy("AAPL", 1, "retry-504"))
        assert [o.client_order_id for o in venue.engine.orders.values()] == ["retry-504"]
        assert order.client_order_id == "retry-504"

        # More failures than retries: the error surfaces.
        venue.inject_errors("*", 429, count=5)
        with pytest.raises(APIError) as exhausted:
            await broker.clock()
        assert exhausted.value.status_code == 429
        venue.clear_faults()

        # 500 and 503 are not retried by alpaca-py.
        for status in (500, 503):
            venue.inject_errors("GET /v2/positions", status)
            with pytest.raises(APIError) as failed:
                await broker.positions()
            assert failed.value.status_code == status
        assert [p.symbol for p in await broker.positions()] == ["AAPL"]


async def test_accept_then_drop_the_order_exists_and_is_found_by_client_order_id() -> None:
    async with running_venue() as venue:
        broker = _broker(venue.base_url)

        # Connection cut without a response: requests raises, the order exists anyway.
        venue.drop_after_accept("POST /v2/orders", mode="close")
        with pytest.raises(requests.ConnectionError):
            await broker.submit(_buy("AAPL", 2, "lost-1"))
        found = await broker.order_by_client_id("lost-1")
        assert found.qty == "2"
        assert found.status in {OrderStatus.NEW, OrderStatus.FILLED}

        # 504 after creating: alpaca-py retries the POST, which now collides with the
        # order the first attempt created: the hazard idempotent client ids exist for.
        venue.drop_after_accept("POST /v2/orders", mode="504")
        with pytest.raises(APIError) as duplicate:
            await broker.submit(_buy("MSFT", 1, "lost-2"))
        assert duplicate.value.status_code == 422
        assert duplicate.value.message == "client_order_id must be unique"
        found = await broker.order_by_client_id("lost-2")
        assert found.symbol == "MSFT"
        assert sum(o.client_order_id == "lost-2" for o in venue.engine.orders.values()) == 1


async def test_added_latency_per_route() -> None:
    async with running_venue() as venue:
        broker = _broker(venue.base_url)
        venue.set_latency("GET /v2/clock", 0.3)
        started = anyio.current_time()
        await broker.clock()
        assert anyio.current_time() - started >= 0.3
        started = anyio.current_time()
        await broker.account()
        assert anyio.current_time() - started < 0.3


async def test_websocket_drops_alpaca_py_reconnects() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = _broker(venue.base_url)
        sessions = venue.streams.sessions
        assert venue.drop_streams() == 1
        with anyio.fail_after(WAIT_S):
            await venue.streams.wait_for_listener(KEY_ID, min_sessions=sessions + 1)
        order = await broker.submit(_buy("AAPL", 1))
        await recorder.wait_event(order.id, "fill")

        # Periodic drops: the stream keeps coming back.
        venue.set_stream_drop_interval(0.2)
        with anyio.fail_after(WAIT_S):
            await venue.streams.wait_for_listener(KEY_ID, min_sessions=sessions + 4)
        venue.set_stream_drop_interval(None)
        sessions = venue.streams.sessions
        with anyio.fail_after(WAIT_S):
            await venue.streams.wait_for_listener(KEY_ID, min_sessions=sessions)
        order = await broker.submit(_buy("AAPL", 1))
        await recorder.wait_event(order.id, "fill")


async def test_mute_websocket_stays_connected_but_silent() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = _broker(venue.base_url)
        venue.mute_streams()
        silent = await broker.submit(_buy("AAPL", 1))
        with anyio.fail_after(WAIT_S):
            while (await broker.order(silent.id)).status != OrderStatus.FILLED:
                venue.match()
        with anyio.move_on_after(0.5) as quiet:
            await recorder.wait_event(silent.id, "fill")
        assert quiet.cancelled_caught, "a muted stream delivered an event"
        assert venue.streams.connection_count == 1
        assert recorder.events_of(silent.id) == []

        venue.mute_streams(muted=False)
        heard = await broker.submit(_buy("AAPL", 1))
        await recorder.wait_event(heard.id, "fill")
        assert recorder.events_of(silent.id) == []  # lost for good, as on a dead link


async def test_clock_jump_expires_day_orders_but_not_gtc() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = _broker(venue.base_url)
        day = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=1.0,
            ),
        )
        gtc = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=1.0,
            ),
        )
        assert day.expires_at is not None
        assert gtc.expires_at is not None
        assert gtc.expires_at > day.expires_at
        venue.advance_clock(24 * 3600)
        expired = await recorder.wait_event(day.id, "expired")
        assert expired.order.expired_at is not None
        assert (await broker.order(gtc.id)).status == OrderStatus.NEW
        clock = await broker.clock()
        assert clock.timestamp > day.expires_at


async def test_us_equities_sessions_hold_orders_until_the_open() -> None:
    async with running_venue(fast_config(clock="us-equities")) as venue:
        broker = _broker(venue.base_url)
        if venue.clock.is_open():
            venue.advance_clock((venue.clock.next_close() - venue.clock.now()).total_seconds() + 1)
        clock = await broker.clock()
        assert not clock.is_open
        assert clock.next_open < clock.next_close
        order = await broker.submit(_buy("AAPL", 1))
        venue.match()
        assert (await broker.order(order.id)).status == OrderStatus.ACCEPTED
        assert order.expires_at == clock.next_close

        to_open = venue.clock.next_open() - venue.clock.now() + timedelta(seconds=1)
        venue.advance_clock(to_open.total_seconds())
        assert (await broker.clock()).is_open
        assert (await broker.order(order.id)).status == OrderStatus.FILLED


async def test_control_endpoint_over_http() -> None:
    async with running_venue(fast_config(control_enabled=True, tick_interval_s=0)) as venue:
        base = venue.base_url
        broker = _broker(base)

        def control(method: str, path: str, body: Any = None) -> requests.Response:
            return requests.request(method, base + path, json=body, timeout=5)

        state = await rest(control, "GET", "/_sim/state")
        assert state.status_code == 200
        assert state.json()["cash"] == "100000"

        answer = await rest(
            control, "POST", "/_sim/price", {"symbol": "AAPL", "price": 150.0, "volatility": 0.0}
        )
        assert answer.status_code == 200
        quote = (await broker.latest_quotes("AAPL"))["AAPL"]
        assert 149.9 < quote.bid_price < quote.ask_price < 150.1

        await rest(control, "POST", "/_sim/price", {"symbol": "AAPL", "drift": -0.01})
        await rest(control, "POST", "/_sim/tick", {"n": 5})
        quote = (await broker.latest_quotes("AAPL"))["AAPL"]
        assert quote.ask_price < 150 * 0.99**4

        armed = await rest(
            control,
            "POST",
            "/_sim/faults",
            {
                "errors": [{"route": "GET /v2/clock", "status": 503, "count": 1}],
                "latency": {"GET /v2/account": 0.01},
                "drops": [{"route": "POST /v2/orders", "count": 1, "mode": "504"}],
                "reject_orders": 1,
                "stream_drop_interval_s": 30,
                "stream_mute": True,
            },
        )
        assert armed.status_code == 200
        faults = armed.json()["faults"]
        assert faults["errors"] == {"GET /v2/clock": [503]}
        assert faults["stream_mute"] is True
        with pytest.raises(APIError) as unavailable:
            await broker.clock()
        assert unavailable.value.status_code == 503
        cleared = await rest(control, "DELETE", "/_sim/faults")
        assert cleared.json()["faults"]["drops"] == {}
        assert cleared.json()["rejects_armed"] == 0
        assert (await broker.clock()).is_open

        order = await broker.submit(_buy("AAPL", 1))
        jumped = await rest(control, "POST", "/_sim/clock", {"advance_s": 3600})
        assert jumped.json()["clock_offset_s"] == 3600
        assert (await rest(control, "POST", "/_sim/stream/drop")).json() == {"dropped": 0}
        assert (await rest(control, "POST", "/_sim/tick", {"n": 0})).status_code == 400
        assert (await rest(control, "POST", "/_sim/faults", {"bogus": 1})).status_code == 400
        assert (
            await rest(control, "POST", "/_sim/faults", {"errors": [{"route": "*", "status": 418}]})
        ).status_code == 400

        reset = await rest(control, "POST", "/_sim/reset")
        assert reset.json()["orders_total"] == 0
        assert reset.json()["clock_offset_s"] == 0
        with pytest.raises(APIError):
            await broker.order(order.id)

    async with running_venue() as venue:
        disabled = await rest(requests.get, venue.base_url + "/_sim/state", timeout=5)
        assert disabled.status_code == 404
