"""Order lifecycle properties of the matching engine, under hypothesis (engine driven directly)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Literal, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sim.clock import MarketClock
from sim.config import SimConfig
from sim.engine import FINAL_STATUSES, MatchingEngine, TradeEvent
from sim.errors import RequestRefusedError
from sim.prices import PriceModel
from sim.store import VenueStore
from sim.wire import OrderSpec, OrderTypeName, Side, TimeInForceName

T = TypeVar("T")

SYMBOLS = st.sampled_from(["AAPL", "MSFT", "GME"])
SIDES: tuple[Side, ...] = ("buy", "sell")
Kind = OrderTypeName | Literal["notional", "bracket", "oto", "oco"]
KINDS: tuple[Kind, ...] = (
    "market",
    "limit",
    "stop",
    "stop_limit",
    "notional",
    "trailing_stop",
    "bracket",
    "oto",
    "oco",
)
TIFS: tuple[TimeInForceName, ...] = ("day", "gtc", "ioc", "fok", "opg", "cls")
FINAL_EVENTS = {"fill", "canceled", "expired", "rejected", "replaced"}
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


class EngineLifecycle(RuleBasedStateMachine):
    """Random order flow, price moves and clock jumps against one engine."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[TradeEvent] = []
        self.engine: MatchingEngine
        self.prices: PriceModel
        self.clock: MarketClock
        self.shorting = False

    @initialize(
        seed=st.integers(min_value=0, max_value=2**16),
        shorting=st.booleans(),
        partial=st.sampled_from([0.0, 0.5, 1.0]),
        calendar=st.booleans(),
    )
    def open_account(self, seed: int, shorting: bool, partial: float, calendar: bool) -> None:
        config = SimConfig(
            seed=seed,
            starting_cash=50_000.0,
            cash_account=not shorting,
            partial_fill_probability=partial,
        )
        self.shorting = shorting
        self.clock = MarketClock("us-equities" if calendar else "always-open")
        self.prices = PriceModel(config, self.clock.now, self.clock.phase)
        self.config = config
        self.store = VenueStore(":memory:")
        self.engine = self._open()

    def _open(self) -> MatchingEngine:
        return MatchingEngine(
            self.config, self.clock, self.prices, on_event=self.events.append, store=self.store
        )

    def _state(self) -> tuple[object, ...]:
        engine = self.engine
        orders = {}
        for order_id, order in engine.orders.items():
            record = order.to_record()
            del record["passes"]  # a counter of matching passes, not state
            orders[order_id] = record
        positions = {s: (p.qty, p.avg_entry_price) for s, p in engine.positions.items()}
        return (
            engine.account_id,
            engine.cash,
            positions,
            orders,
            engine.activities,
            engine.last_equity,
            engine.next_roll,
            engine.history,
            engine.configurations,
        )

    @rule()
    def restart(self) -> None:
        """The venue stops and starts again on its SQLite file: nothing changes."""
        before = self._state()
        self.engine = self._open()
        assert self._state() == before

    @rule(
        symbol=SYMBOLS,
        side=st.sampled_from(SIDES),
        kind=st.sampled_from(KINDS),
        tif=st.sampled_from(TIFS),
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
        notional = kind == "notional"
        complex_class = kind in {"bracket", "oto", "oco"}
        sign = 1 if side == "buy" else -1
        order_type: OrderTypeName = "limit" if kind == "oco" else "market"
        if kind in {"market", "limit", "stop", "stop_limit", "trailing_stop"}:
            order_type = kind
        spec = OrderSpec(
            symbol=symbol,
            side=side,
            type=order_type,
            time_in_force="day" if notional else tif,
            qty=None if notional else qty,
            notional=qty * 100 if notional else None,
            limit_price=level if kind in {"limit", "stop_limit"} else None,
            stop_price=level if kind in {"stop", "stop_limit"} else None,
            trail_percent=Decimal(abs(offset) + 1) if kind == "trailing_stop" else None,
            order_class=kind if complex_class else "simple",  # type: ignore[arg-type]  # narrowed above
            take_profit=(mid * (1 + sign * Decimal("0.02"))).quantize(cent)
            if complex_class
            else None,
            stop_loss_stop=(mid * (1 - sign * Decimal("0.02"))).quantize(cent)
            if kind in {"bracket", "oco"}
            else None,
        )
        assert _refusal(self.engine.submit, spec) in {None, 403, 422}

    @precondition(lambda self: bool(self.engine.orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ids = [o.id for o in sorted(self.engine.orders.values(), key=lambda o: o.seq)]
        order_id = data.draw(st.sampled_from(ids))
        was_final = self.engine.orders[order_id].is_final
        assert _refusal(self.engine.cancel, order_id) == (422 if was_final else None)

    @precondition(lambda self: bool(self.engine.open_orders()))
    @rule(data=st.data(), bump=st.integers(min_value=-3, max_value=3))
    def replace(self, data: st.DataObject, bump: int) -> None:
        order = data.draw(st.sampled_from(self.engine.open_orders()))
        new_limit = None
        if order.limit_price is not None:
            new_limit = max(order.limit_price + bump, Decimal("0.01"))
        refusal = _refusal(partial(self.engine.replace, limit_price=new_limit), order.id)
        assert refusal in {None, 403, 422}

    @rule(n=st.integers(min_value=1, max_value=5))
    def tick(self, n: int) -> None:
        for _ in range(n):
            self.prices.tick()
            self.engine.match()

    @rule(symbol=SYMBOLS, price=st.integers(min_value=5, max_value=600))
    def set_price(self, symbol: str, price: int) -> None:
        self.prices.set_price(symbol, float(price))
        self.engine.match()

    @rule(symbol=SYMBOLS, drift=st.sampled_from([-0.05, -0.01, 0.0, 0.01, 0.05]))
    def set_drift(self, symbol: str, drift: float) -> None:
        self.prices.set_drift(symbol, drift)

    @rule(minutes=st.sampled_from([1, 30, 240, 1440]))
    def advance_clock(self, minutes: int) -> None:
        self.clock.advance(minutes * 60)
        self.engine.match()

    @precondition(lambda self: self.engine.rejects_armed == 0)
    @rule()
    def arm_reject(self) -> None:
        self.engine.rejects_armed += 1

    # ------------------------------------------------------------ invariants

    @invariant()
    def filled_qty_never_exceeds_qty(self) -> None:
        for order in self.engine.orders.values():
            assert order.filled_qty >= 0
            if order.qty is not None:
                assert order.filled_qty <= order.qty, order
            else:
                assert order.notional is not None
                assert order.filled_value <= order.notional, order

    @invariant()
    def cash_plus_positions_is_equity(self) -> None:
        if not hasattr(self, "engine"):
            return
        account = self.engine.account()
        marked = sum(
            (p.qty * self.engine.mark(s) for s, p in self.engine.positions.items()), Decimal(0)
        )
        assert account.cash + marked == account.equity
        assert account.long_market_value + account.short_market_value == marked
        assert account.buying_power >= 0
        if not self.shorting:
            assert account.cash >= 0, account
            assert all(p.qty > 0 for p in self.engine.positions.values())
        assert all(p.qty != 0 for p in self.engine.positions.values())

    @invariant()
    def no_event_after_a_final_state(self) -> None:
        per_order: dict[str, list[str]] = defaultdict(list)
        fills: dict[str, Decimal] = defaultdict(Decimal)
        position: dict[str, Decimal] = defaultdict(Decimal)
        for event in self.events:
            names = per_order[event.order_id]
            assert not (names and names[-1] in FINAL_EVENTS), (names, event.event)
            names.append(event.event)
            if event.event in {"fill", "partial_fill"}:
                assert event.qty is not None
                assert event.qty > 0
                fills[event.order_id] += event.qty
                signed = event.qty if event.order["side"] == "buy" else -event.qty
                position[event.order["symbol"]] += signed
                assert event.position_qty == position[event.order["symbol"]]
        for order_id, names in per_order.items():
            order = self.engine.orders[order_id]
            if order.parent_id is None:
                assert names[0] == "pending_new", names
                after = {
                    "new",
                    "canceled",
                    "pending_cancel",
                    "pending_replace",
                    "expired",
                    "rejected",
                }
                assert names[1:2] == [] or names[1] in after, names
            assert (names[-1] in FINAL_EVENTS) == order.is_final, (names, order.status)
            assert order.filled_qty == fills[order_id]
            if order.is_final:
                assert order.status in FINAL_STATUSES
        for symbol, qty in position.items():
            assert self.engine.position_qty(symbol) == qty


EngineLifecycle.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineLifecycle = EngineLifecycle.TestCase
