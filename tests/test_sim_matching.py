"""Price model and matching rules, on the engine directly (fast, no HTTP)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from sim.clock import MarketClock
from sim.config import SimConfig, SymbolSpec
from sim.engine import MatchingEngine, TradeEvent
from sim.errors import RequestRefusedError, SimConfigError
from sim.prices import PriceModel
from sim.wire import OrderSpec, OrderTypeName, Side, TimeInForceName

if TYPE_CHECKING:
    from pathlib import Path


def _engine(**overrides: object) -> tuple[MatchingEngine, PriceModel, list[TradeEvent]]:
    config = SimConfig(**overrides)  # type: ignore[arg-type]  # test-chosen SimConfig fields
    clock = MarketClock(config.clock)
    prices = PriceModel(config, clock.now)
    events: list[TradeEvent] = []
    return MatchingEngine(config, clock, prices, on_event=events.append), prices, events


def _spec(
    side: Side,
    qty: int,
    *,
    symbol: str = "AAPL",
    kind: OrderTypeName = "market",
    tif: TimeInForceName = "day",
    limit: str | None = None,
) -> OrderSpec:
    return OrderSpec(
        symbol=symbol,
        side=side,
        type=kind,
        time_in_force=tif,
        qty=Decimal(qty),
        limit_price=Decimal(limit) if limit else None,
    )


def _names(events: list[TradeEvent], order_id: str) -> list[str]:
    return [e.event for e in events if e.order_id == order_id]


def test_csv_replay_then_hold_last_quote(tmp_path: Path) -> None:
    csv = tmp_path / "quotes.csv"
    csv.write_text("symbol,bid,ask\nAAPL,100.00,100.10\nMSFT,50,50.02\nAAPL,99.50,99.60\n")
    prices = PriceModel(SimConfig(quotes_csv=str(csv)), MarketClock("always-open").now)
    first = prices.quote("AAPL")
    assert (first.bid, first.ask) == (Decimal("100.00"), Decimal("100.10"))
    prices.tick()
    assert prices.quote("AAPL").bid == Decimal("99.50")
    prices.tick()
    assert prices.quote("AAPL").bid == Decimal("99.50")  # exhausted: the last row holds
    assert prices.quote("MSFT").ask == Decimal("50.02")
    prices.set_price("AAPL", 120.0)  # a scripted price overrides the replay
    assert Decimal(110) < prices.quote("AAPL").bid < Decimal(120)

    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,bid,ask\nAAPL,10,9\n")
    with pytest.raises(SimConfigError, match="bid <= ask"):
        PriceModel(SimConfig(quotes_csv=str(bad)), MarketClock("always-open").now)
    with pytest.raises(SimConfigError, match=r"missing\.csv"):
        PriceModel(
            SimConfig(quotes_csv=str(tmp_path / "missing.csv")), MarketClock("always-open").now
        )


def test_unknown_symbols_start_at_a_seeded_price_and_drift_scripts_a_slide() -> None:
    now = MarketClock("always-open").now
    first = PriceModel(SimConfig(seed=1), now).quote("NEWCO").mid
    assert PriceModel(SimConfig(seed=1), now).quote("NEWCO").mid == first
    assert PriceModel(SimConfig(seed=2), now).quote("NEWCO").mid != first  # not listed: drawn
    assert 20 <= first <= 500

    config = SimConfig(symbols={"AAPL": SymbolSpec(start_price=100.0, volatility=0.0)})
    prices = PriceModel(config, now)
    prices.set_drift("AAPL", -0.01)
    for _ in range(10):
        prices.tick()
    assert math.isclose(float(prices.quote("AAPL").mid), 100 * 0.99**10, abs_tol=0.02)
    prices.set_spread_bps("AAPL", 100)
    quote = prices.quote("AAPL")
    assert math.isclose(float(quote.ask - quote.bid), float(quote.mid) / 100, abs_tol=0.02)


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    engine, _, events = _engine(partial_fill_probability=1.0)
    order = engine.submit(_spec("buy", 10, tif="ioc"))
    engine.match()
    assert _names(events, order.id) == ["pending_new", "new", "partial_fill", "canceled"]
    assert 0 < order.filled_qty < 10

    unmarketable = engine.submit(_spec("buy", 10, kind="limit", tif="ioc", limit="1"))
    engine.match()
    assert _names(events, unmarketable.id)[-1] == "canceled"
    assert unmarketable.filled_qty == 0


def test_fok_fills_completely_or_not_at_all() -> None:
    engine, _, events = _engine(partial_fill_probability=1.0)
    whole = engine.submit(_spec("buy", 10, tif="fok"))
    engine.match()
    assert _names(events, whole.id) == ["pending_new", "new", "fill"]
    assert whole.filled_qty == 10
    killed = engine.submit(_spec("buy", 10, kind="limit", tif="fok", limit="1"))
    engine.match()
    assert _names(events, killed.id)[-1] == "canceled"


def test_partial_fills_then_the_rest_and_a_cash_account_never_shorts() -> None:
    engine, _, events = _engine(partial_fill_probability=1.0, cash_account=True)
    order = engine.submit(_spec("buy", 3))
    while engine.match():
        pass
    assert order.status == "filled"
    assert "partial_fill" in _names(events, order.id)
    engine.submit(_spec("sell", 2))
    with pytest.raises(RequestRefusedError) as refused:
        engine.submit(_spec("sell", 2))  # 3 held, 2 already promised to an open sell
    assert refused.value.status == 403
    assert refused.value.body()["available"] == "1"


def test_shorting_enabled_allows_short_sells_within_buying_power() -> None:
    engine, prices, _ = _engine(shorting_enabled=True, starting_cash=10_000.0)
    short = engine.submit(_spec("sell", 10))
    engine.match()
    assert short.status == "filled"
    assert engine.position_qty("AAPL") == -10
    account = engine.account()
    assert account.short_market_value < 0
    assert account.cash + account.short_market_value == account.equity
    with pytest.raises(RequestRefusedError) as refused:
        engine.submit(_spec("sell", 100))
    assert refused.value.message == "insufficient buying power"
    cover = engine.submit(_spec("buy", 10))
    engine.match()
    assert cover.position_intent == "buy_to_close"
    assert engine.positions == {}
    assert engine.account().equity == engine.account().cash
    assert prices.quote("AAPL").bid > 0


def test_an_unaffordable_fill_is_rejected_at_execution() -> None:
    engine, prices, events = _engine(starting_cash=1_000.0)
    prices.set_volatility("AAPL", 0.0)
    prices.set_price("AAPL", 90.0)
    order = engine.submit(_spec("buy", 10))  # 10 * ~90 fits at acceptance
    prices.set_price("AAPL", 200.0)  # ... but not at execution
    engine.match()
    assert _names(events, order.id)[-1] == "rejected"
    assert engine.cash == Decimal(1000)
