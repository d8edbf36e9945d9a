"""The engine's running total of buy holds equals a walk over the open orders, always."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sim.clock import MarketClock
from sim.config import SimConfig
from sim.engine import MatchingEngine, SimOrder
from sim.errors import RequestRefusedError
from sim.prices import PriceModel
from sim.store import VenueStore
from sim.wire import OrderSpec, OrderTypeName, Side, TimeInForceName

T = TypeVar("T")

SYMBOLS = st.sampled_from(["AAPL", "MSFT"])
Kind = OrderTypeName | Literal["notional", "bracket", "oco"]
KINDS: tuple[Kind, ...] = (
    "market",
    "limit",
    "stop",
    "stop_limit",
    "trailing_stop",
    "notional",
    "bracket",
    "oco",
)
QTY = st.one_of(
    st.integers(min_value=1, max_value=20).map(Decimal),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(5), places=3),
)


def _refusal(call: Callable[[T], object], argument: T) -> int | None:
    """The HTTP status the engine refuses with, or None if it accepts."""
    try:
        call(argument)
    except RequestRefusedError as exc:
        return exc.status
    return None


def walked_holds(engine: MatchingEngine, exclude: SimOrder | None = None) -> Decimal:
    """Money held for open buy orders, walking every open order (the definition)."""
    prices = engine._prices
    holds = Decimal(0)
    for order in engine.open_orders():
        if order is exclude or order.side != "buy" or order.parent_id is not None:
            continue
        if order.notional is not None:
            holds += order.remaining_notional
            continue
        price = order.limit_price if order.type in {"limit", "stop_limit"} else None
        if price is None:
            price = prices.quote(order.symbol).ask
        holds += order.remaining_qty() * price
    return holds


class BuyHoldsMachine(RuleBasedStateMachine):
    """Random order flow; after every step the running total matches the walk."""

    @initialize(
        seed=st.integers(min_value=0, max_value=2**16),
        partial=st.sampled_from([0.0, 0.5]),
        calendar=st.booleans(),
    )
    def open_account(self, seed: int, partial: float, calendar: bool) -> None:
        self.config = SimConfig(seed=seed, starting_cash=50_000.0, partial_fill_probability=partial)
        self.clock = MarketClock("us-equities" if calendar else "always-open")
        self.prices = PriceModel(self.config, self.clock.now, self.clock.phase)
        self.store = VenueStore(":memory:")
        self.engine = self._open()

    def _open(self) -> MatchingEngine:
        return MatchingEngine(self.config, self.clock, self.prices, store=self.store)

    @rule(
        symbol=SYMBOLS,
        side=st.sampled_from(("buy", "sell")),
        kind=st.sampled_from(KINDS),
        tif=st.sampled_from(("day", "gtc", "ioc", "opg")),
        qty=QTY,
        offset=st.integers(min_value=-5, max_value=5),
    )
    def submit(
        self,
        *,
        symbol: str,
        side: Side,
        kind: Kind,
        tif: TimeInForceName,
        qty: Decimal,
        offset: int,
    ) -> None:
        mid = self.prices.quote(symbol).mid
        cent = Decimal("0.01")
        level = (mid * (1 + Decimal(offset) / 100)).quantize(cent)
        sign = 1 if side == "buy" else -1
        grouped = kind in {"bracket", "oco"}
        order_type: OrderTypeName = "limit" if kind == "oco" else "market"
        if kind in {"market", "limit", "stop", "stop_limit", "trailing_stop"}:
            order_type = kind
        spec = OrderSpec(
            symbol=symbol,
            side=side,
            type=order_type,
            time_in_force="day" if kind == "notional" else tif,
            qty=None if kind == "notional" else qty,
            notional=qty * 100 if kind == "notional" else None,
            limit_price=level if kind in {"limit", "stop_limit"} else None,
            stop_price=level if kind in {"stop", "stop_limit"} else None,
            trail_percent=Decimal(abs(offset) + 1) if kind == "trailing_stop" else None,
            order_class=kind if grouped else "simple",  # type: ignore[arg-type]  # narrowed above
            take_profit=(mid * (1 + sign * Decimal("0.02"))).quantize(cent) if grouped else None,
            stop_loss_stop=(mid * (1 - sign * Decimal("0.02"))).quantize(cent) if grouped else None,
        )
        assert _refusal(self.engine.submit, spec) in {None, 403, 422}

    @precondition(lambda self: bool(self.engine.open_orders()))
    @rule(data=st.data(), bump=st.integers(min_value=-3, max_value=3), cancel=st.booleans())
    def cancel_or_replace(self, data: st.DataObject, bump: int, cancel: bool) -> None:
        order = data.draw(st.sampled_from(self.engine.open_orders()))
        change = self.engine.cancel if cancel else partial(self.engine.replace, qty=order.qty)
        if not cancel and order.limit_price is not None:
            limit = max(order.limit_price + bump, Decimal("0.01"))
            change = partial(self.engine.replace, limit_price=limit)
        assert _refusal(change, order.id) in {None, 403, 422}

    @rule(symbol=SYMBOLS, price=st.integers(min_value=5, max_value=600))
    def set_price(self, symbol: str, price: int) -> None:
        self.prices.set_price(symbol, float(price))
        self.engine.match()

    @rule(minutes=st.sampled_from([1, 240, 1440]))
    def advance_clock(self, minutes: int) -> None:
        self.clock.advance(minutes * 60)
        self.engine.match()

    @rule()
    def restart(self) -> None:
        self.engine = self._open()

    @invariant()
    def running_total_is_the_walk(self) -> None:
        engine = self.engine
        assert engine._buy_holds() == walked_holds(engine)
        for order in engine.open_orders():
            assert engine._buy_holds(order) == walked_holds(engine, order), order


BuyHoldsMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBuyHolds = BuyHoldsMachine.TestCase


def test_resting_orders_hold_their_limit_until_they_end() -> None:
    config = SimConfig(starting_cash=1_000_000.0)
    clock = MarketClock("always-open")
    engine = MatchingEngine(config, clock, PriceModel(config, clock.now))
    orders = [
        engine.submit(
            OrderSpec(
                symbol="AAPL",
                side="buy",
                type="limit",
                time_in_force="gtc",
                qty=Decimal(3),
                limit_price=Decimal("1.25"),
            )
        )
        for _ in range(200)
    ]
    assert engine._buy_holds() == Decimal(750) == walked_holds(engine)
    engine.cancel(orders[0].id)
    replaced = engine.replace(orders[1].id, limit_price=Decimal("2.00"))
    assert engine._buy_holds() == Decimal("748.5") == walked_holds(engine)
    assert engine._buy_holds(replaced) == Decimal("742.5") == walked_holds(engine, replaced)
    engine.cancel_all()
    assert engine._buy_holds() == 0
    assert engine.account().buying_power == 4 * engine.account().equity


def test_valuing_the_account_reads_no_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buying power reads no order (a walk made each submit cost O(open orders))."""
    config = SimConfig(starting_cash=1_000_000.0)
    clock = MarketClock("always-open")
    engine = MatchingEngine(config, clock, PriceModel(config, clock.now))
    for kind in ("limit", "market"):
        engine.submit(
            OrderSpec(
                symbol="AAPL",
                side="buy",
                type=kind,
                time_in_force="gtc",
                qty=Decimal(1),
                limit_price=Decimal(1) if kind == "limit" else None,
            )
        )

    def read(_order: SimOrder) -> Decimal:
        raise AssertionError("the account was valued by walking the orders")

    monkeypatch.setattr(SimOrder, "remaining_qty", read)
    monkeypatch.setattr(SimOrder, "is_final", property(read))
    assert engine.account().buying_power > 0
