"""The paper venue's Trading API, exercised through the unmodified alpaca-py SDK."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
)
from sim_harness import KEY_ID, SECRET_KEY, Broker, fast_config, rest, running_venue, trade_stream

pytestmark = pytest.mark.anyio


def _market(symbol: str, qty: float, side: OrderSide, **extra: object) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **extra
    )


async def test_account_clock_asset_and_quotes() -> None:
    async with running_venue() as venue:
        broker = Broker(venue.base_url)
        account = await broker.account()
        assert Decimal(account.cash or "0") == Decimal(100_000)
        assert account.equity == account.cash
        # A margin account at or above $25,000: four times equity for intraday trading.
        assert account.multiplier == "4"
        assert Decimal(account.buying_power or "0") == 4 * Decimal(100_000)
        assert Decimal(account.regt_buying_power or "0") == 2 * Decimal(100_000)
        assert account.shorting_enabled
        assert account.status.value == "ACTIVE"

        clock = await broker.clock()
        assert clock.is_open
        assert clock.next_close > clock.timestamp

        asset = await broker.asset("AAPL")
        assert asset.symbol == "AAPL"
        assert asset.tradable
        assert asset.fractionable

        quotes = await broker.latest_quotes(["AAPL", "ZZZQ"])
        assert set(quotes) == {"AAPL"}  # an unlisted symbol has no quote
        aapl = quotes["AAPL"]
        assert 0 < aapl.bid_price < aapl.ask_price
        assert float(venue.quote("AAPL").ask) == aapl.ask_price
        single = await broker.latest_quotes("MSFT")
        assert single["MSFT"].ask_price > single["MSFT"].bid_price

        # The single-symbol route answers the documented shape.
        body = await rest(
            lambda: requests.get(
                f"{venue.base_url}/v2/stocks/MSFT/quotes/latest",
                headers={"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY},
                timeout=5,
            ).json()
        )
        assert body["symbol"] == "MSFT"
        assert body["quote"]["ap"] > body["quote"]["bp"]


async def test_order_lifecycle_positions_and_account_follow_fills() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        order = await broker.submit(_market("AAPL", 10, OrderSide.BUY))
        assert order.status in {OrderStatus.NEW, OrderStatus.FILLED}
        fill = await recorder.wait_event(order.id, "fill")
        assert fill.qty == 10
        assert fill.position_qty == 10
        assert fill.price is not None

        filled = await broker.order(order.id)
        assert filled.status == OrderStatus.FILLED
        assert filled.filled_qty == "10"
        assert Decimal(str(filled.filled_avg_price)) == Decimal(str(fill.price))
        by_client_id = await broker.order_by_client_id(order.client_order_id)
        assert by_client_id.id == order.id

        position = await broker.position("AAPL")
        assert position.qty == "10"
        assert position.side.value == "long"
        positions = await broker.positions()
        assert [p.symbol for p in positions] == ["AAPL"]

        account = await broker.account()
        cash = Decimal(account.cash or "0")
        assert cash == Decimal(100_000) - 10 * Decimal(str(fill.price))
        assert Decimal(account.equity or "0") == cash + Decimal(account.long_market_value or "0")

        # Partial close by qty, then by percentage, then the rest.
        closing = await broker.close_position("AAPL", ClosePositionRequest(qty="4"))
        await recorder.wait_event(closing.id, "fill")
        closing = await broker.close_position("AAPL", ClosePositionRequest(percentage="50"))
        await recorder.wait_event(closing.id, "fill")
        assert (await broker.position("AAPL")).qty == "3"
        closing = await broker.close_position("AAPL")
        await recorder.wait_event(closing.id, "fill")
        assert await broker.positions() == []
        with pytest.raises(APIError) as missing:
            await broker.position("AAPL")
        assert missing.value.status_code == 404
        assert missing.value.code == 40410000


async def test_limit_stop_notional_and_listing_filters() -> None:
    async with running_venue(fast_config(tick_interval_s=0)) as venue:
        venue.set_volatility("MSFT", 0.0)
        venue.set_price("MSFT", 400.0)
        broker = Broker(venue.base_url)
        resting = await broker.submit(
            LimitOrderRequest(
                symbol="MSFT",
                qty=2,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=390.0,
                client_order_id="resting-1",
            ),
        )
        stop = await broker.submit(
            StopOrderRequest(
                symbol="MSFT",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                stop_price=410.0,
            ),
        )
        stop_limit = await broker.submit(
            StopLimitOrderRequest(
                symbol="MSFT",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                stop_price=420.0,
                limit_price=421.0,
            ),
        )
        notional = await broker.submit(
            MarketOrderRequest(
                symbol="NVDA", notional=1000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            ),
        )
        venue.match()
        nvda = await broker.order(notional.id)
        assert nvda.status == OrderStatus.FILLED
        assert nvda.notional == "1000"
        assert nvda.qty is None
        filled_qty = Decimal(str(nvda.filled_qty))
        assert filled_qty != filled_qty.to_integral_value()  # fractional
        assert filled_qty * Decimal(str(nvda.filled_avg_price)) <= 1000

        open_orders = await broker.orders()
        assert {o.id for o in open_orders} == {resting.id, stop.id, stop_limit.id}
        assert open_orders[0].id == stop_limit.id  # newest first
        ascending = await broker.orders(
            GetOrdersRequest(direction=Sort.ASC, limit=2, symbols=["MSFT"])
        )
        assert [o.id for o in ascending] == [resting.id, stop.id]
        closed = await broker.orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
        assert [o.id for o in closed] == [notional.id]
        everything = await broker.orders(
            GetOrdersRequest(status=QueryOrderStatus.ALL, after=resting.submitted_at),
        )
        assert {o.id for o in everything} == {stop.id, stop_limit.id, notional.id}
        until = await broker.orders(
            GetOrdersRequest(status=QueryOrderStatus.ALL, until=stop.submitted_at),
        )
        assert [o.id for o in until] == [resting.id]
        sells = await broker.orders(
            GetOrdersRequest(status=QueryOrderStatus.ALL, side=OrderSide.SELL)
        )
        assert sells == []

        # Price rises through the stop (410): the stop order triggers and fills at the ask.
        venue.set_price("MSFT", 412.0)
        assert (await broker.order(stop.id)).status == OrderStatus.FILLED
        assert (await broker.order(stop_limit.id)).status == OrderStatus.NEW
        # Through 420 the stop-limit triggers, but 425 is above its 421 limit.
        venue.set_price("MSFT", 425.0)
        assert (await broker.order(stop_limit.id)).status == OrderStatus.NEW
        venue.set_price("MSFT", 420.5)
        assert (await broker.order(stop_limit.id)).status == OrderStatus.FILLED
        # The resting limit buy fills once the ask is at or below 390.
        venue.set_price("MSFT", 389.0)
        rested = await broker.order(resting.id)
        assert rested.status == OrderStatus.FILLED
        assert Decimal(str(rested.filled_avg_price)) <= 390

        # Replace and cancel.
        target = await broker.submit(
            LimitOrderRequest(
                symbol="MSFT",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=300.0,
            ),
        )
        replacement = await broker.replace(target.id, ReplaceOrderRequest(limit_price=301.0, qty=2))
        assert replacement.replaces == target.id
        assert replacement.limit_price == "301"
        old = await broker.order(target.id)
        assert old.status == OrderStatus.REPLACED
        assert old.replaced_by == replacement.id
        another = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=1.0,
            ),
        )
        await broker.cancel(replacement.id)
        assert (await broker.order(replacement.id)).status == OrderStatus.CANCELED
        cancels = await broker.cancel_all()
        assert [(c.id, c.status) for c in cancels] == [(another.id, 200)]
        assert await broker.orders() == []

        closed_all = await broker.close_all(cancel_orders=True)
        assert sorted(str(c.symbol) for c in closed_all) == ["MSFT", "NVDA"]
        assert all(c.status == 200 for c in closed_all)
        venue.match()
        assert await broker.positions() == []


async def test_errors_are_answered_as_alpaca_does() -> None:
    async with running_venue(fast_config(key_id="good", secret_key="pair")) as venue:
        with pytest.raises(APIError) as unauthorized:
            await Broker(venue.base_url, "good", "wrong").account()
        assert unauthorized.value.status_code == 401
        assert json.loads(str(unauthorized.value)) == {"message": "unauthorized"}

        broker = Broker(venue.base_url, "good", "pair")
        order = _market("AAPL", 1, OrderSide.BUY, client_order_id="dup-1")
        first = await broker.submit(order)
        with pytest.raises(APIError) as duplicate:
            await broker.submit(order)
        assert duplicate.value.status_code == 422
        assert json.loads(str(duplicate.value)) == {
            "code": 40010001,
            "message": "client_order_id must be unique",
        }

        with pytest.raises(APIError) as broke:
            await broker.submit(_market("AAPL", 10_000, OrderSide.BUY))
        assert broke.value.status_code == 403
        assert broke.value.code == 40310000
        assert broke.value.message == "insufficient buying power"

        with pytest.raises(APIError) as short:
            await broker.submit(_market("NKLA", 5, OrderSide.SELL))
        assert short.value.status_code == 422
        assert short.value.code == 42210000
        assert short.value.message == "asset NKLA cannot be sold short"

        with pytest.raises(APIError) as unknown:
            await broker.order("00000000-0000-4000-8000-000000000000")
        assert unknown.value.status_code == 404
        assert unknown.value.code == 40410000
        with pytest.raises(APIError) as unknown_client_id:
            await broker.order_by_client_id("nope")
        assert unknown_client_id.value.status_code == 404

        venue.match()
        assert (await broker.order(first.id)).status == OrderStatus.FILLED
        with pytest.raises(APIError) as final:
            await broker.cancel(first.id)
        assert final.value.status_code == 422
        assert final.value.code == 42210000

        with pytest.raises(APIError) as invalid:
            await broker.submit(
                LimitOrderRequest(
                    symbol="AAPL",
                    qty=1,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    limit_price=-5,
                ),
            )
        assert invalid.value.status_code == 422
        assert "limit_price" in invalid.value.message
        with pytest.raises(APIError) as unknown_asset:
            await broker.asset("not-a-symbol")
        assert unknown_asset.value.status_code == 404


async def test_rate_limit_headers_and_429() -> None:
    async with running_venue(fast_config(rate_limit_per_min=5)) as venue:
        headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}

        def burst() -> list[requests.Response]:
            with requests.Session() as session:
                return [
                    session.get(f"{venue.base_url}/v2/clock", headers=headers, timeout=5)
                    for _ in range(6)
                ]

        responses = await rest(burst)
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert [int(r.headers["X-RateLimit-Remaining"]) for r in responses] == [4, 3, 2, 1, 0, 0]
        assert all(r.headers["X-RateLimit-Limit"] == "5" for r in responses)
        assert int(responses[0].headers["X-RateLimit-Reset"]) > 0
        assert responses[-1].json()["code"] == 42910000
        # Another key has its own budget; unknown routes are plain 404s.
        other = await rest(
            requests.get,
            f"{venue.base_url}/v2/clock",
            headers={"APCA-API-KEY-ID": "other", "APCA-API-SECRET-KEY": "x"},
            timeout=5,
        )
        assert other.status_code == 200


async def test_invalid_order_bodies_name_the_field() -> None:
    async with running_venue() as venue:
        headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}
        cases = {
            "side": {
                "symbol": "AAPL",
                "qty": "1",
                "side": "hold",
                "type": "market",
                "time_in_force": "day",
            },
            "type": {"symbol": "AAPL", "qty": "1", "side": "buy", "time_in_force": "day"},
            "qty": {
                "symbol": "AAPL",
                "qty": "-1",
                "side": "buy",
                "type": "market",
                "time_in_force": "day",
            },
            "notional": {
                "symbol": "AAPL",
                "notional": "100",
                "side": "buy",
                "type": "limit",
                "limit_price": "1",
                "time_in_force": "gtc",
            },
            "stop_price": {
                "symbol": "AAPL",
                "qty": "1",
                "side": "buy",
                "type": "stop",
                "time_in_force": "day",
            },
        }

        def post_all() -> dict[str, requests.Response]:
            return {
                field: requests.post(
                    f"{venue.base_url}/v2/orders", json=body, headers=headers, timeout=5
                )
                for field, body in cases.items()
            }

        answers = await rest(post_all)
        for field, response in answers.items():
            assert response.status_code == 422, field
            body = response.json()
            assert body["code"] == 40010001
            assert field in body["message"], (field, body)
