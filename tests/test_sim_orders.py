"""Issue 14 through unmodified alpaca-py: assets, shorting, brackets, trailing stops,
protective rejections, order states and the account endpoints."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import (
    AssetStatus,
    OrderClass,
    OrderSide,
    OrderStatus,
    OrderType,
    QueryOrderStatus,
    TimeInForce,
)
from alpaca.trading.models import AccountConfiguration, Asset, Order, PortfolioHistory
from alpaca.trading.requests import (
    GetAssetsRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    GetPortfolioHistoryRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)
from sim_harness import KEY_ID, SECRET_KEY, Broker, fast_config, rest, running_venue, trade_stream

pytestmark = pytest.mark.anyio

HEADERS = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}


def _market(symbol: str, qty: float, side: OrderSide, **extra: Any) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **extra
    )


def _error(exc: pytest.ExceptionInfo[APIError]) -> dict[str, Any]:
    body = json.loads(str(exc.value))
    assert isinstance(body, dict)
    return body


async def test_assets_are_listed_with_flags_and_unknown_symbols_are_refused() -> None:
    async with running_venue() as venue:
        broker = Broker(venue.base_url)
        assets = await rest(broker.trading.get_all_assets, GetAssetsRequest())
        assert isinstance(assets, list)
        by_symbol = {a.symbol: a for a in assets if isinstance(a, Asset)}
        assert len(by_symbol) == len(assets) >= 300
        for symbol in ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "SPY", "QQQ", "BRK.B"):
            assert by_symbol[symbol].tradable, symbol
        assert not by_symbol["GME"].easy_to_borrow
        assert by_symbol["GME"].shortable
        assert not by_symbol["NKLA"].shortable
        assert not by_symbol["BRK.A"].fractionable
        inactive = await rest(
            broker.trading.get_all_assets, GetAssetsRequest(status=AssetStatus.INACTIVE)
        )
        assert isinstance(inactive, list)
        assert {a.symbol for a in inactive if isinstance(a, Asset)} >= {"SQ"}
        by_id = await broker.asset(str(by_symbol["AAPL"].id))
        assert by_id.symbol == "AAPL"

        with pytest.raises(APIError) as unknown:
            await broker.asset("ZZZZQ")
        assert unknown.value.status_code == 404
        with pytest.raises(APIError) as refused:
            await broker.submit(_market("ZZZZQ", 1, OrderSide.BUY))
        assert refused.value.status_code == 422
        assert _error(refused) == {"code": 40010001, "message": 'asset "ZZZZQ" not found'}
        with pytest.raises(APIError) as delisted:
            await broker.submit(_market("SQ", 1, OrderSide.BUY))
        assert delisted.value.status_code == 422
        assert delisted.value.message == "asset SQ is not active"
        with pytest.raises(APIError) as whole_only:
            await broker.submit(_market("BRK.A", 0.5, OrderSide.BUY))
        assert whole_only.value.message == "asset BRK.A is not fractionable"


async def test_short_sale_of_a_shortable_symbol_works_hard_to_borrow_is_refused() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        short = await broker.submit(_market("AAPL", 5, OrderSide.SELL))
        fill = await recorder.wait_event(short.id, "fill")
        assert fill.position_qty == -5
        position = await broker.position("AAPL")
        assert position.side.value == "short"
        assert short.position_intent is not None
        assert short.position_intent.value == "sell_to_open"

        with pytest.raises(APIError) as hard:
            await broker.submit(_market("GME", 5, OrderSide.SELL))
        assert hard.value.status_code == 403
        assert hard.value.message == (
            "cannot open a short position in GME: the asset is hard to borrow"
        )
        with pytest.raises(APIError) as fractional:
            await broker.submit(_market("MSFT", 0.5, OrderSide.SELL))
        assert fractional.value.message == "fractional orders are not allowed to short"


async def test_cash_account_keeps_the_old_behaviour() -> None:
    async with running_venue(fast_config(cash_account=True)) as venue:
        broker = Broker(venue.base_url)
        account = await broker.account()
        assert account.multiplier == "1"
        assert not account.shorting_enabled
        assert account.buying_power == account.cash
        with pytest.raises(APIError) as short:
            await broker.submit(_market("AAPL", 5, OrderSide.SELL))
        assert "insufficient qty available" in short.value.message


async def test_margin_buying_power_is_two_times_below_25k() -> None:
    async with running_venue(fast_config(starting_cash=20_000.0)) as venue:
        broker = Broker(venue.base_url)
        account = await broker.account()
        assert account.multiplier == "2"
        assert Decimal(account.buying_power or "0") == Decimal(40_000)
        # 30,000 of AAPL on 20,000 of equity: only on margin.
        order = await broker.submit(_market("AAPL", 150, OrderSide.BUY))
        venue.match()
        assert (await broker.order(order.id)).status == OrderStatus.FILLED
        after = await broker.account()
        assert Decimal(after.cash or "0") < 0
        assert Decimal(after.buying_power or "0") < Decimal(12_000)


async def test_a_brackets_take_profit_fills_and_cancels_its_stop() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        entry = await broker.submit(
            _market(
                "AAPL",
                10,
                OrderSide.BUY,
                order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=195.0),
                stop_loss=StopLossRequest(stop_price=185.0),
            )
        )
        assert entry.order_class == OrderClass.BRACKET
        assert entry.legs is not None
        assert len(entry.legs) == 2
        assert {leg.status for leg in entry.legs} == {OrderStatus.HELD}
        await recorder.wait_event(entry.id, "fill")
        take_profit = next(leg for leg in entry.legs if leg.type == OrderType.LIMIT)
        stop = next(leg for leg in entry.legs if leg.type == OrderType.STOP)
        assert take_profit.limit_price == "195"
        await recorder.wait_event(take_profit.id, "new")

        nested = await broker.orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
        assert [o.id for o in nested] == [entry.id]
        flat = await broker.orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
        assert len(flat) == 3

        # Moving the stop replaces the leg in place (Alpaca lets legs be replaced).
        moved = await broker.replace(stop.id, ReplaceOrderRequest(stop_price=187.0))
        assert moved.stop_price == "187"
        assert moved.status == OrderStatus.NEW
        await recorder.wait_event(stop.id, "replaced")
        assert recorder.events_of(stop.id)[-2:] == ["pending_replace", "replaced"]
        with pytest.raises(APIError) as resize:
            await broker.replace(moved.id, ReplaceOrderRequest(qty=5))
        assert resize.value.status_code == 422
        stop = moved

        venue.set_price("AAPL", 196.0)
        fill = await recorder.wait_event(take_profit.id, "fill")
        assert fill.position_qty == 0
        await recorder.wait_event(stop.id, "canceled")
        parent = await rest(
            broker.trading.get_order_by_id, entry.id, GetOrderByIdRequest(nested=True)
        )
        assert isinstance(parent, Order)
        assert parent.legs is not None
        assert {leg.status for leg in parent.legs} == {OrderStatus.FILLED, OrderStatus.CANCELED}

        with pytest.raises(APIError) as wrong_side:
            await broker.submit(
                _market(
                    "AAPL",
                    1,
                    OrderSide.BUY,
                    order_class=OrderClass.BRACKET,
                    take_profit=TakeProfitRequest(limit_price=150.0),
                    stop_loss=StopLossRequest(stop_price=140.0),
                )
            )
        assert wrong_side.value.status_code == 422
        assert wrong_side.value.message == "take_profit.limit_price must be >= base_price + 0.01"


async def test_oco_exit_stop_leg_fills_and_cancels_the_limit() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        venue.set_volatility("MSFT", 0.0)
        venue.set_price("MSFT", 400.0)
        entry = await broker.submit(_market("MSFT", 4, OrderSide.BUY))
        await recorder.wait_event(entry.id, "fill")
        oco = await broker.submit(
            LimitOrderRequest(
                symbol="MSFT",
                qty=4,
                side=OrderSide.SELL,
                time_in_force=TimeInForce.GTC,
                order_class=OrderClass.OCO,
                take_profit=TakeProfitRequest(limit_price=420.0),
                stop_loss=StopLossRequest(stop_price=390.0),
            )
        )
        assert oco.legs is not None
        stop = oco.legs[0]
        venue.set_price("MSFT", 385.0)
        fill = await recorder.wait_event(stop.id, "fill")
        assert fill.position_qty == 0
        await recorder.wait_event(oco.id, "canceled")


async def test_a_trailing_stop_follows_the_high_water_mark() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        venue.set_volatility("NVDA", 0.0)
        venue.set_spread_bps("NVDA", 0.0)
        venue.set_price("NVDA", 100.0)
        entry = await broker.submit(_market("NVDA", 10, OrderSide.BUY))
        await recorder.wait_event(entry.id, "fill")
        trailing = await broker.submit(
            TrailingStopOrderRequest(
                symbol="NVDA",
                qty=10,
                side=OrderSide.SELL,
                time_in_force=TimeInForce.GTC,
                trail_price=2.0,
            )
        )
        assert trailing.hwm == "99.99"
        assert trailing.stop_price == "97.99"
        for price in (101.0, 104.0, 103.0):
            venue.set_price("NVDA", price)
        current = await broker.order(trailing.id)
        assert current.hwm == "103.99"  # the best bid seen, not the last one
        assert current.stop_price == "101.99"
        assert current.status == OrderStatus.NEW
        venue.set_price("NVDA", 102.5)
        assert (await broker.order(trailing.id)).status == OrderStatus.NEW
        venue.set_price("NVDA", 101.5)
        fill = await recorder.wait_event(trailing.id, "fill")
        assert fill.price == 101.49

        percent = await broker.submit(
            TrailingStopOrderRequest(
                symbol="NVDA",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                trail_percent=5.0,
            )
        )
        replaced = await broker.replace(percent.id, ReplaceOrderRequest(trail=2.5))
        assert replaced.trail_percent == "2.5"
        assert replaced.trail_price is None


async def test_protective_rejections_as_alpaca_words_them() -> None:
    async with running_venue() as venue:
        broker = Broker(venue.base_url)
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        held = await broker.submit(_market("AAPL", 5, OrderSide.BUY))
        venue.match()
        assert (await broker.order(held.id)).status == OrderStatus.FILLED
        resting = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=5,
                side=OrderSide.SELL,
                time_in_force=TimeInForce.GTC,
                limit_price=200.0,
            )
        )
        with pytest.raises(APIError) as wash:
            await broker.submit(_market("AAPL", 1, OrderSide.BUY))
        assert wash.value.status_code == 422
        assert _error(wash) == {
            "code": 42210000,
            "message": "potential wash trade detected. use complex orders",
            "existing_order_id": str(resting.id),
            "reject_reason": "opposite side market/stop order exists",
        }
        # A buy limit below the resting sell cannot trade against it: allowed.
        await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=180.0,
            )
        )
        with pytest.raises(APIError) as sub_penny:
            await broker.submit(
                LimitOrderRequest(
                    symbol="MSFT",
                    qty=1,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    limit_price=410.001,
                )
            )
        assert sub_penny.value.status_code == 422
        assert sub_penny.value.message == (
            "invalid limit_price 410.001. sub-penny increment does not fulfill minimum "
            "pricing criteria"
        )
        with pytest.raises(APIError) as stop_side:
            await broker.submit(
                StopOrderRequest(
                    symbol="MSFT",
                    qty=1,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    stop_price=100.0,
                )
            )
        assert stop_side.value.status_code == 422
        assert "stop price must be above the current price" in stop_side.value.message
        with pytest.raises(APIError) as tiny:
            await broker.submit(
                MarketOrderRequest(
                    symbol="F", notional=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
                )
            )
        assert tiny.value.status_code == 403
        assert tiny.value.message == "cost basis must be >= 1"


async def test_cancel_sends_pending_cancel_and_replace_sends_pending_replace() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        low = float(venue.quote("AAPL").bid) - 20
        order = await broker.submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=round(low, 2),
            )
        )
        new = await broker.replace(order.id, ReplaceOrderRequest(limit_price=round(low - 1, 2)))
        await recorder.wait_event(order.id, "replaced")
        assert recorder.events_of(order.id)[-2:] == ["pending_replace", "replaced"]
        await broker.cancel(new.id)
        await recorder.wait_event(new.id, "canceled")
        assert recorder.events_of(new.id)[-2:] == ["pending_cancel", "canceled"]


async def test_configurations_activities_and_portfolio_history() -> None:
    async with running_venue() as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        config = await rest(broker.trading.get_account_configurations)
        assert isinstance(config, AccountConfiguration)
        assert config.max_margin_multiplier == "4"
        assert not config.no_shorting
        config.no_shorting = True
        updated = await rest(broker.trading.set_account_configurations, config)
        assert isinstance(updated, AccountConfiguration)
        assert updated.no_shorting
        assert not (await broker.account()).shorting_enabled
        with pytest.raises(APIError) as long_only:
            await broker.submit(_market("AAPL", 1, OrderSide.SELL))
        assert long_only.value.message == "account is not allowed to short"

        order = await broker.submit(_market("AAPL", 3, OrderSide.BUY))
        await recorder.wait_event(order.id, "fill")
        activities = await rest(broker.trading.get, "/account/activities/FILL")
        assert isinstance(activities, list)
        assert len(activities) == 1
        assert activities[0]["order_id"] == str(order.id)
        assert activities[0]["qty"] == "3"
        assert activities[0]["activity_type"] == "FILL"
        assert (
            await rest(broker.trading.get, "/account/activities", {"activity_types": "DIV"}) == []
        )
        funding = await rest(broker.trading.get, "/account/activities", {"activity_types": "CSD"})
        assert isinstance(funding, list)
        assert [a["net_amount"] for a in funding] == ["100000"]

        history = await rest(
            broker.trading.get_portfolio_history, GetPortfolioHistoryRequest(period="1W")
        )
        assert isinstance(history, PortfolioHistory)
        assert len(history.equity) == len(history.timestamp) >= 1
        assert history.timeframe == "1D"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/v2/orders",
            {
                "symbol": "AAPL",
                "qty": 1,
                "side": "buy",
                "type": "market",
                "time_in_force": "day",
                "order_class": {},
            },
            "order_class",
        ),
        (
            "POST",
            "/v2/orders",
            {
                "symbol": "AAPL",
                "qty": 1,
                "side": "buy",
                "type": "market",
                "time_in_force": "day",
                "order_class": "bracket",
                "take_profit": [1],
            },
            "take_profit",
        ),
        (
            "POST",
            "/v2/orders",
            {"symbol": ["AAPL"], "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"},
            "symbol",
        ),
        ("PATCH", "/v2/orders/{id}", {"time_in_force": ["day"]}, "time_in_force"),
        ("PATCH", "/v2/orders/{id}", {"qty": {"a": 1}}, "qty"),
        ("PATCH", "/v2/account/configurations", {"no_shorting": "yes"}, "no_shorting"),
    ],
)
async def test_malformed_bodies_get_422_naming_the_field(
    method: str, path: str, body: dict[str, Any], field: str
) -> None:
    async with running_venue() as venue:
        order = await Broker(venue.base_url).submit(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=100.0,
            )
        )
        response = await rest(
            requests.request,
            method,
            venue.base_url + path.replace("{id}", str(order.id)),
            json=body,
            headers=HEADERS,
            timeout=5,
        )
        assert response.status_code == 422, response.text
        assert field in response.json()["message"]


async def test_unserved_endpoints_answer_json_not_text() -> None:
    async with running_venue() as venue:
        missing = await rest(
            requests.get, venue.base_url + "/v2/watchlists", headers=HEADERS, timeout=5
        )
        assert missing.status_code == 404
        assert missing.json() == {"code": 40410000, "message": "endpoint not found"}
        wrong = await rest(requests.put, venue.base_url + "/v2/account", headers=HEADERS, timeout=5)
        assert wrong.status_code == 405
        assert wrong.headers["Content-Type"].startswith("application/json")
