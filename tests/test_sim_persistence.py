"""The venue keeps its account in SQLite: a restart resumes where it stopped (issue 14)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from sim_harness import Broker, fast_config, rest, running_venue, trade_stream

from sim.errors import SimConfigError
from sim.venue import PaperVenue

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def test_restart_resumes_account_positions_orders_and_activities(tmp_path: Path) -> None:
    state = str(tmp_path / "venue" / "paper.db")
    config = fast_config(state_path=state, seed=3)
    async with running_venue(config) as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        bought = await broker.submit(
            MarketOrderRequest(symbol="AAPL", qty=5, side=OrderSide.BUY, time_in_force="day")
        )
        await recorder.wait_event(bought.id, "fill")
        resting = await broker.submit(
            LimitOrderRequest(
                symbol="MSFT",
                qty=2,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=round(float(venue.quote("MSFT").bid) - 30, 2),
            )
        )
        before = await broker.account()
        venue.set_price("AAPL", 250.0)

    async with running_venue(config) as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)
        account = await broker.account()
        assert account.id == before.id
        assert account.account_number == before.account_number
        assert account.cash == before.cash
        positions = await broker.positions()
        assert [(p.symbol, p.qty) for p in positions] == [("AAPL", "5")]
        assert positions[0].current_price == "250"  # the last price, not the start price
        orders = await broker.orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
        assert {o.id for o in orders} == {bought.id, resting.id}
        assert (await broker.order(resting.id)).status == OrderStatus.NEW
        activities = await rest(broker.trading.get, "/account/activities")
        assert isinstance(activities, list)
        assert [a["activity_type"] for a in activities] == ["FILL", "CSD"]  # newest first
        assert activities[0]["order_id"] == str(bought.id)

        # The order that rested through the restart fills at the next price it sees.
        venue.set_price("MSFT", 300.0)
        await recorder.wait_event(resting.id, "fill")
        again = await broker.submit(
            MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force="day")
        )
        assert again.id not in {bought.id, resting.id}
        assert again.client_order_id not in {bought.client_order_id, resting.client_order_id}
        await recorder.wait_event(again.id, "fill")
        assert (await broker.position("AAPL")).qty == "6"


async def test_a_reset_wipes_the_stored_account(tmp_path: Path) -> None:
    config = fast_config(state_path=str(tmp_path / "paper.db"))
    async with running_venue(config) as venue:
        broker = Broker(venue.base_url)
        order = await broker.submit(
            MarketOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force="day")
        )
        venue.match()
        assert (await broker.order(order.id)).status == OrderStatus.FILLED
        venue.reset()
    async with running_venue(config) as venue:
        broker = Broker(venue.base_url)
        assert await broker.positions() == []
        assert await broker.orders(GetOrdersRequest(status=QueryOrderStatus.ALL)) == []


def test_an_unusable_state_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(SimConfigError, match="cannot open venue state"):
        PaperVenue(fast_config(state_path=str(bad)))
