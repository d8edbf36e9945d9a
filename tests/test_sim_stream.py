"""The ``/stream`` websocket: handshake, binary frames, every trade_updates event type."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest
from sim_harness import KEY_ID, SECRET_KEY, Broker, fast_config, running_venue, trade_stream

pytestmark = pytest.mark.anyio

FINAL_EVENTS = {"fill", "canceled", "expired", "rejected", "replaced"}


def _limit(symbol: str, qty: float, limit_price: float, tif: TimeInForce) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=tif, limit_price=limit_price
    )


async def test_every_trade_update_event_reaches_alpaca_py() -> None:
    config = fast_config(partial_fill_probability=1.0, tick_interval_s=0)
    async with running_venue(config) as venue, trade_stream(venue) as (recorder, _):
        broker = Broker(venue.base_url)

        # A market order with forced partial fills: pending_new, new, partial fills, fill.
        bought = await broker.submit(
            MarketOrderRequest(
                symbol="AAPL", qty=20, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            ),
        )
        fill = await recorder.wait_event(bought.id, "fill")
        events = recorder.events_of(bought.id)
        assert events[:2] == ["pending_new", "new"]
        assert "partial_fill" in events
        assert events[-1] == "fill"
        partials = [
            u for u in recorder.updates if u.order.id == bought.id and u.event == "partial_fill"
        ]
        assert sum(u.qty or 0 for u in partials) + (fill.qty or 0) == 20
        assert fill.position_qty == 20
        assert fill.order.status == OrderStatus.FILLED
        assert fill.execution_id is not None

        # canceled
        resting = await broker.submit(_limit("AAPL", 1, 1.0, TimeInForce.GTC))
        await recorder.wait_event(resting.id, "new")
        await broker.cancel(resting.id)
        canceled = await recorder.wait_event(resting.id, "canceled")
        assert canceled.order.canceled_at is not None

        # replaced (the old order), then the replacement's own new
        to_replace = await broker.submit(_limit("AAPL", 1, 2.0, TimeInForce.DAY))
        replacement = await broker.replace(to_replace.id, ReplaceOrderRequest(limit_price=3.0))
        replaced = await recorder.wait_event(to_replace.id, "replaced")
        assert replaced.order.replaced_by == replacement.id
        assert (await recorder.wait_event(replacement.id, "new")).order.replaces == to_replace.id

        # rejected (accepted, then refused by the venue)
        venue.reject_next_orders(1)
        doomed = await broker.submit(_limit("AAPL", 1, 2.0, TimeInForce.DAY))
        rejected = await recorder.wait_event(doomed.id, "rejected")
        assert rejected.order.failed_at is not None

        # expired: a day order outlives the session close
        venue.advance_clock(24 * 3600)
        expired = await recorder.wait_event(replacement.id, "expired")
        assert expired.order.status == OrderStatus.EXPIRED

        # No event ever follows a final one, for any order.
        for order_id in {str(u.order.id) for u in recorder.updates}:
            names = recorder.events_of(order_id)
            finals = [i for i, name in enumerate(names) if name in FINAL_EVENTS]
            assert finals in ([], [len(names) - 1]), (order_id, names)


async def _raw_messages(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    messages = []
    for _ in range(count):
        frame = await ws.receive(timeout=5)
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        messages.append(json.loads(frame.data))
    return messages


async def test_handshake_binary_frames_and_one_connection_per_key() -> None:
    async with (
        running_venue(fast_config()) as venue,
        aiohttp.ClientSession() as session,
        session.ws_connect(venue.stream_url) as ws,
    ):
        await ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["x"]}}))
        await ws.send_str(
            json.dumps({"action": "authenticate", "data": {"key_id": KEY_ID, "secret_key": ""}})
        )
        await ws.send_str(
            json.dumps(
                {
                    "action": "authenticate",
                    "data": {"key_id": KEY_ID, "secret_key": SECRET_KEY},
                }
            )
        )
        await ws.send_str(
            json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "nonsense"]}})
        )
        assert await _raw_messages(ws, 4) == [
            {"stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}},
            {
                "stream": "authorization",
                "data": {"status": "unauthorized", "action": "authenticate"},
            },
            {
                "stream": "authorization",
                "data": {"status": "authorized", "action": "authenticate"},
            },
            {"stream": "listening", "data": {"streams": ["trade_updates"]}},
        ]

        # A second connection for the same key is refused; the first keeps working.
        async with session.ws_connect(venue.stream_url) as second:
            await second.send_str(
                json.dumps(
                    {
                        "action": "authenticate",
                        "data": {"key_id": KEY_ID, "secret_key": SECRET_KEY},
                    }
                )
            )
            (refusal,) = await _raw_messages(second, 1)
            assert refusal == {
                "stream": "authorization",
                "data": {
                    "status": "unauthorized",
                    "action": "authenticate",
                    "code": 429,
                    "message": "connection limit exceeded",
                },
            }
            closing = await second.receive(timeout=5)
            assert closing.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
            assert second.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION

        broker = Broker(venue.base_url)
        order = await broker.submit(
            MarketOrderRequest(
                symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            ),
        )
        events = [m for m in await _raw_messages(ws, 3) if m["stream"] == "trade_updates"]
        data = [m["data"] for m in events]
        assert [d["event"] for d in data] == ["pending_new", "new", "fill"]
        assert all(d["order"]["id"] == str(order.id) for d in data)
        fill = data[-1]
        assert {"timestamp", "price", "qty", "position_qty", "order"} <= set(fill)
