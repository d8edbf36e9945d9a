"""Protective stops held at the broker (docs/protocol.md): brackets and trailing stops.

The decoding and risk rules are checked as pure functions; the rest runs the real
daemon against real mosquitto and the paper venue through alpaca-py, at Alpaca's rate
limit and latency (``realistic_venue``).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import (
    Mosquitto,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from actors.core.risk_limits import (
    DuplicateDetector,
    PortfolioView,
    Quote,
    StrategyView,
    check_order,
    effective_limits,
)
from daemon.config import RiskConfig, StrategyConfig
from protocol.codec import DecodeFailure, decode_intent, json_schema
from protocol.messages import OrderIntent
from protocol.reasons import ReasonCode
from protocol.topics import Topics

BRACKET: dict[str, Any] = {
    "type": "order",
    "intent_id": "b-1",
    "symbol": "AAPL",
    "side": "buy",
    "qty": 10,
    "order_class": "bracket",
    "take_profit": 195.0,
    "stop_loss": 185.0,
    "time_in_force": "gtc",
}
TRAILING: dict[str, Any] = {
    "type": "order",
    "intent_id": "t-1",
    "symbol": "NVDA",
    "side": "sell",
    "qty": 5,
    "order_type": "trailing_stop",
    "trail_percent": 5.0,
    "time_in_force": "gtc",
}


def _decode(body: dict[str, Any]) -> OrderIntent | DecodeFailure:
    decoded = decode_intent(msgspec.json.encode(body))
    assert isinstance(decoded, OrderIntent | DecodeFailure)
    return decoded


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "body",
    [
        BRACKET,
        {**BRACKET, "order_type": "limit", "limit_price": 190.0, "time_in_force": "day"},
        {**BRACKET, "side": "sell", "take_profit": 180.0, "stop_loss": 195.0},
        TRAILING,
        {**TRAILING, "trail_percent": None, "trail_price": 2.5},
        {**TRAILING, "side": "buy", "time_in_force": "day"},
    ],
)
def test_brackets_and_trailing_stops_decode(body: dict[str, Any]) -> None:
    intent = _decode({k: v for k, v in body.items() if v is not None})
    assert isinstance(intent, OrderIntent), intent


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**BRACKET, "take_profit": None}, "`take_profit` is required with order_class `bracket`"),
        ({**BRACKET, "stop_loss": None}, "`stop_loss` is required with order_class `bracket`"),
        (
            {**BRACKET, "take_profit": 180.0},
            "`take_profit` must be above `stop_loss` for a buy bracket",
        ),
        (
            {**BRACKET, "side": "sell"},
            "`take_profit` must be below `stop_loss` for a sell bracket",
        ),
        (
            {**BRACKET, "order_type": "limit", "limit_price": 196.0},
            "`take_profit` must be above `limit_price` for a buy bracket",
        ),
        (
            {**BRACKET, "order_type": "limit", "limit_price": 184.0},
            "`stop_loss` must be below `limit_price` for a buy bracket",
        ),
        (
            {**BRACKET, "order_type": "stop", "stop_price": 190.0},
            "`order_type` must be `market` or `limit` with order_class `bracket`",
        ),
        ({**BRACKET, "qty": 1.5}, "`qty` must be whole shares with order_class `bracket`"),
        (
            {**BRACKET, "time_in_force": "ioc"},
            "`time_in_force` must be `day` or `gtc` with order_class `bracket`",
        ),
        (
            {**BRACKET, "order_class": None},
            "`take_profit` is only allowed with order_class `bracket`",
        ),
        ({**BRACKET, "order_class": "oco"}, "order_class"),
        ({**BRACKET, "take_profit": -1.0}, "take_profit"),
        (
            {**TRAILING, "trail_price": 2.0},
            "exactly one of `trail_percent` or `trail_price` is required",
        ),
        (
            {**TRAILING, "trail_percent": None},
            "exactly one of `trail_percent` or `trail_price` is required",
        ),
        ({**TRAILING, "trail_percent": 100.0}, "trail_percent: expected a number < 100"),
        ({**TRAILING, "trail_percent": 0.0}, "trail_percent: expected a number > 0"),
        ({**TRAILING, "trail_price": 0.0, "trail_percent": None}, "trail_price"),
        ({**TRAILING, "stop_price": 90.0}, "`stop_price` is not allowed for order_type"),
        ({**TRAILING, "limit_price": 90.0}, "`limit_price` is not allowed for order_type"),
        (
            {**TRAILING, "order_type": "stop", "stop_price": 90.0},
            "`trail_percent` is only allowed with order_type `trailing_stop`",
        ),
    ],
)
def test_bad_brackets_and_trailing_stops_name_the_field(body: dict[str, Any], message: str) -> None:
    failure = _decode({k: v for k, v in body.items() if v is not None})
    assert isinstance(failure, DecodeFailure), failure
    assert message in failure.message
    assert failure.intent_id == body["intent_id"]


def test_the_json_schema_shows_the_new_fields() -> None:
    order = json_schema()["$defs"]["OrderIntent"]
    properties = order["properties"]
    assert "trailing_stop" in properties["order_type"]["enum"]
    assert sorted(properties["order_class"]["enum"]) == ["bracket", "simple"]
    assert properties["order_class"]["default"] == "simple"
    for name in ("take_profit", "trail_price", "trail_percent"):
        assert name in properties
        assert name not in order.get("required", [])
    trail_percent = properties["trail_percent"]["anyOf"][0]
    assert trail_percent["exclusiveMinimum"] == 0
    assert trail_percent["exclusiveMaximum"] == 100
    assert json_schema()["$defs"]["FillEvent"]["properties"]["leg_of"]


# --------------------------------------------------------------------------- risk per trade

NOW = 1_700_000_000.0
QUOTE = Quote(bid=99.5, ask=100.5, ts=NOW)  # a buy's reference is the ask, a sell's the bid


def _risk_reasons(**fields: Any) -> list[str]:
    intent = OrderIntent(intent_id="r-1", symbol="AAPL", **fields)
    reasons = check_order(
        intent,
        limits=effective_limits(RiskConfig(), StrategyConfig()),  # risk: 2 % of equity
        strategy_view=StrategyView(gross_exposure=0.0, session_pnl=0.0),
        portfolio=PortfolioView(
            equity=100_000.0,
            start_of_day_equity=100_000.0,
            peak_equity=100_000.0,
            gross_exposure=0.0,
        ),
        quote=QUOTE,
        now=NOW,
        circuit="closed",
        reduce_only=False,
    )
    return [r.message for r in reasons if r.code == ReasonCode.RISK_PER_TRADE]


def test_a_trailing_stops_risk_is_its_trail() -> None:
    # 2 % of 100,000 = 2,000. A sell opens a short: 200 x 10 = 2,000 passes, 10.01 not.
    trail = {"side": "sell", "qty": 200.0, "order_type": "trailing_stop"}
    assert _risk_reasons(**trail, trail_price=10.0) == []
    assert _risk_reasons(**trail, trail_price=10.01) == [
        "risk 2002.00 (200 x 10.01 trail) > limit 2000.00 (2.00% of equity 100000.00)"
    ]
    # trail_percent of the reference (the bid, 99.5): 200 x 9.95 = 1,990 passes.
    assert _risk_reasons(**trail, trail_percent=10.0) == []
    assert _risk_reasons(**trail, trail_percent=10.1) == [
        "risk 2009.90 (200 x 10.05 trail) > limit 2000.00 (2.00% of equity 100000.00)"
    ]


def test_a_brackets_risk_is_its_stop() -> None:
    # Entry at the ask 100.5, stop at 90.5: 200 x 10 = 2,000 passes; the take-profit
    # does not change the risk.
    bracket = {"side": "buy", "qty": 200.0, "order_class": "bracket", "take_profit": 120.0}
    assert _risk_reasons(**bracket, stop_loss=90.5) == []
    assert _risk_reasons(**bracket, stop_loss=90.4) != []
    assert _risk_reasons(**{**bracket, "take_profit": 130.0}, stop_loss=101.0) == [
        "stop_loss 101.00 is not below entry 100.50 for a buy"
    ]


def test_duplicates_tell_brackets_and_trails_apart() -> None:
    detector = DuplicateDetector()
    first = OrderIntent(
        intent_id="d-1",
        symbol="AAPL",
        side="buy",
        qty=1,
        order_class="bracket",
        take_profit=110.0,
        stop_loss=90.0,
    )
    detector.record("s1", first, now=NOW, window_s=10)
    moved = msgspec.structs.replace(first, intent_id="d-2", stop_loss=95.0)
    same = msgspec.structs.replace(first, intent_id="d-3")
    assert detector.check("s1", moved, now=NOW + 1, window_s=10) is None
    assert detector.check("s1", same, now=NOW + 1, window_s=10) is not None


# --------------------------------------------------------------------------- end to end


def _answers(intent_id: str, body: dict[str, Any]) -> bool:
    return body.get("intent_id") == intent_id


def _events(p: Any, t: Topics) -> list[dict[str, Any]]:
    return [b for b in p.bodies(t.event("s1")) if isinstance(b, dict)]


@pytest.mark.anyio
async def test_a_brackets_take_profit_fills_cancels_its_stop_and_the_position_returns_to_zero(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            manager = daemon.managers["s1"]
            await p.publish(t.intent("s1"), BRACKET)
            await p.expect(t.event("s1"), lambda b: b["type"] == "accepted")
            entry = await p.expect(
                t.event("s1"), lambda b: b["type"] == "fill" and b.get("leg_of") is None
            )
            assert (entry["side"], entry["qty"], entry["position_qty"]) == ("buy", 10, 10)
            parent = venue.engine.get_by_client_id("s1-b-1")
            assert parent.order_class == "bracket"
            legs = venue.engine.legs_of(parent)
            assert {(leg.type, leg.side) for leg in legs} == {("limit", "sell"), ("stop", "sell")}
            take_profit = next(leg for leg in legs if leg.type == "limit")
            stop = next(leg for leg in legs if leg.type == "stop")
            assert (take_profit.limit_price, stop.stop_price) == (Decimal(195), Decimal(185))
            await poll_until(lambda: take_profit.status == "new")

            venue.set_price("AAPL", 196.0)
            leg_fill = await p.expect(
                t.event("s1"), lambda b: b["type"] == "fill" and b.get("leg_of") == "s1-b-1"
            )
            assert leg_fill["intent_id"] == "b-1"
            assert leg_fill["client_order_id"] == take_profit.client_order_id
            assert (leg_fill["side"], leg_fill["qty"], leg_fill["position_qty"]) == ("sell", 10, 0)
            assert leg_fill["price"] >= 195.0
            cancelled = await p.expect(
                t.event("s1"),
                lambda b: (
                    b["type"] == "order"
                    and b.get("leg_of") == "s1-b-1"
                    and b["status"] == "cancelled"
                ),
            )
            assert cancelled["client_order_id"] == stop.client_order_id
            assert manager.positions["AAPL"].qty == 0
            assert manager.positions["AAPL"].realized_pnl == pytest.approx(
                10 * (leg_fill["price"] - entry["price"])
            )
            assert venue.engine.position_qty("AAPL") == 0
            assert manager.orders["s1-b-1"].status == "filled"
            # Legs are followed, never reported as orders of someone else.
            assert daemon.guardian.external_orders == []
            fills = [b for b in _events(p, t) if b["type"] == "fill"]
            assert [(f["side"], f["qty"]) for f in fills] == [("buy", 10), ("sell", 10)]
        # The journal holds both fills: positions rebuilt from it are flat too.
        with sqlite3.connect(tmp_path / "state.db") as db:
            rows = db.execute("SELECT client_order_id, side, qty FROM fills ORDER BY id").fetchall()
        assert rows == [("s1-b-1", "buy", 10.0), (take_profit.client_order_id, "sell", 10.0)]


@pytest.mark.anyio
async def test_a_trailing_stop_is_accepted_and_reaches_the_venue_as_trailing_stop(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        venue.set_volatility("NVDA", 0.0)
        venue.set_price("NVDA", 100.0)
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            buy = {"type": "order", "intent_id": "n-1", "symbol": "NVDA", "side": "buy", "qty": 5}
            await p.publish(t.intent("s1"), buy)
            await p.expect(t.event("s1"), lambda b: b["type"] == "fill" and b["intent_id"] == "n-1")
            await p.publish(t.intent("s1"), TRAILING)
            await p.expect(
                t.event("s1"),
                lambda b: (
                    b["type"] == "order" and b["intent_id"] == "t-1" and b["status"] == "accepted"
                ),
            )
            at_venue = venue.engine.get_by_client_id("s1-t-1")
            assert (at_venue.type, at_venue.side, at_venue.qty) == (
                "trailing_stop",
                "sell",
                Decimal(5),
            )
            assert at_venue.trail_percent == Decimal(5)
            assert at_venue.trail_price is None
            assert at_venue.time_in_force == "gtc"
            # The venue's trailing stop protects the position: a fall of more than 5 %
            # from the high-water mark sells it, and the strategy hears the fill.
            venue.set_price("NVDA", 90.0)
            fill = await p.expect(
                t.event("s1"), lambda b: b["type"] == "fill" and b["intent_id"] == "t-1"
            )
            assert fill["position_qty"] == 0
            assert daemon.managers["s1"].positions["NVDA"].qty == 0


@pytest.mark.anyio
async def test_bad_brackets_and_trailing_stops_are_invalid_intents_naming_the_field(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    bad = {
        "no-tp": ({**BRACKET, "intent_id": "no-tp", "take_profit": None}, "take_profit"),
        "tp-low": ({**BRACKET, "intent_id": "tp-low", "take_profit": 180.0}, "take_profit"),
        "two-trails": (
            {**TRAILING, "intent_id": "two-trails", "trail_price": 1.0},
            "trail_percent` or `trail_price",
        ),
    }
    async with running_venue(realistic_venue()) as venue:
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config), probe(mosquitto, t.event("s1")) as p:
            for body, _ in bad.values():
                await p.publish(t.intent("s1"), {k: v for k, v in body.items() if v is not None})
            for intent_id, (_, field) in bad.items():
                rejected = await p.expect(t.event("s1"), partial(_answers, intent_id))
                assert rejected["type"] == "rejected"
                [reason] = rejected["reasons"]
                assert reason["code"] == "INVALID_INTENT"
                assert field in reason["message"]
            assert not [o for o in venue.engine.orders.values() if o.client_order_id[:3] == "s1-"]


@pytest.mark.anyio
async def test_a_strategy_engage_cancels_an_open_bracket_with_its_legs(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            resting = {
                **BRACKET,
                "order_type": "limit",
                "limit_price": 150.0,
                "take_profit": 160.0,
                "stop_loss": 140.0,
            }
            await p.publish(t.intent("s1"), resting)
            await p.expect(
                t.event("s1"), lambda b: b["type"] == "order" and b["status"] == "accepted"
            )
            parent = venue.engine.get_by_client_id("s1-b-1")
            legs = venue.engine.legs_of(parent)
            assert [leg.status for leg in legs] == ["held", "held"]
            await p.publish(
                t.kill_command, {"type": "engage", "scope": "strategy", "strategy_id": "s1"}
            )

            def cancelled() -> set[str | None]:
                return {
                    b["client_order_id"]
                    for b in _events(p, t)
                    if b["type"] == "order" and b["status"] == "cancelled"
                }

            # The strategy hears the parent and both legs end (legs carry ``leg_of``).
            await p.wait_until(lambda: len(cancelled()) == 3)
            assert cancelled() == {"s1-b-1", *(leg.client_order_id for leg in legs)}
            assert parent.status == "canceled"
            assert all(leg.status == "canceled" for leg in legs)
            assert daemon.managers["s1"].orders["s1-b-1"].status == "cancelled"
            assert daemon.guardian.external_orders == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "engage",
    [
        {"type": "engage", "scope": "strategy", "strategy_id": "s1", "flatten": True},
        {"type": "engage", "scope": "global", "flatten": True},
    ],
    ids=["strategy", "global"],
)
async def test_engage_with_flatten_cancels_a_filled_brackets_legs_then_closes_the_position(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path, engage: dict[str, Any]
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            await p.publish(t.intent("s1"), BRACKET)
            await p.expect(t.event("s1"), lambda b: b["type"] == "fill")
            legs = venue.engine.legs_of(venue.engine.get_by_client_id("s1-b-1"))
            await poll_until(lambda: all(leg.status == "new" for leg in legs))
            await p.publish(t.kill_command, engage)
            await p.expect(
                t.event("s1"),
                lambda b: b["type"] == "fill" and b["intent_id"].startswith("flatten-"),
            )
            assert all(leg.status == "canceled" for leg in legs)
            assert daemon.managers["s1"].positions["AAPL"].qty == 0
            assert venue.engine.position_qty("AAPL") == 0
            # Nothing of the bracket is left to trade against the flat position.
            venue.set_price("AAPL", 200.0)
            venue.set_price("AAPL", 180.0)
            assert venue.engine.position_qty("AAPL") == 0
            assert not [o for o in venue.engine.open_orders() if o.symbol == "AAPL"]


@pytest.mark.anyio
async def test_a_bracket_left_open_by_a_restart_has_its_legs_followed_after_it(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        venue.set_volatility("AAPL", 0.0)
        venue.set_price("AAPL", 190.0)
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        resting = {
            **BRACKET,
            "order_type": "limit",
            "limit_price": 180.0,
            "take_profit": 186.0,
            "stop_loss": 170.0,
        }
        async with running_daemon(config), probe(mosquitto, t.event("s1")) as p:
            await p.publish(t.intent("s1"), resting)
            await p.expect(
                t.event("s1"),
                lambda b: (
                    b["type"] == "order" and b.get("leg_of") is None and b["status"] == "accepted"
                ),
            )
        # A new process: the bracket is known from the journal only, its legs not at all.
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            venue.set_price("AAPL", 179.0)  # the entry fills ...
            await p.expect(t.event("s1"), lambda b: b["type"] == "fill" and b.get("leg_of") is None)
            legs = venue.engine.legs_of(venue.engine.get_by_client_id("s1-b-1"))
            await poll_until(lambda: all(leg.status == "new" for leg in legs))
            venue.set_price("AAPL", 187.0)  # ... then its take-profit
            leg_fill = await p.expect(
                t.event("s1"), lambda b: b["type"] == "fill" and b.get("leg_of") == "s1-b-1"
            )
            assert (leg_fill["side"], leg_fill["position_qty"]) == ("sell", 0)
            assert daemon.managers["s1"].positions["AAPL"].qty == 0
            assert venue.engine.position_qty("AAPL") == 0
            assert daemon.guardian.external_orders == []
