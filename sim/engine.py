"""The matching engine: orders, fills, positions and the account, per Alpaca's paper rules.

Inputs are method calls (:meth:`MatchingEngine.submit`, :meth:`~MatchingEngine.cancel`,
:meth:`~MatchingEngine.replace`, :meth:`~MatchingEngine.match` on every price tick, ...);
outputs are the return values and one :class:`TradeEvent` per order state change,
handed to the ``on_event`` callback in the order they happen.

Rules (see ``docs/sim.md``):

* Orders are accepted as ``pending_new`` then ``new``; they trade only while the
  clock says the market is open, at the first matching pass after acceptance.
* Market orders fill at the ask (buy) or bid (sell). Limit orders fill when
  marketable (buy: ask <= limit, sell: bid >= limit) at that ask/bid. Stop orders
  trigger when the ask rises to (buy) or the bid falls to (sell) the stop, then
  behave as market (``stop``) or limit (``stop_limit``) orders.
* With ``partial_fill_probability`` a fill covers only a random part of the
  remaining quantity; the rest is evaluated again at the next pass.
* ``ioc``: whatever fills at the first pass fills, the rest is canceled.
  ``fok``: fills completely at the first pass or is canceled. ``day`` (and
  ``ioc``/``fok``/``opg``/``cls``, treated like ``day``) orders expire at the
  session close; ``gtc`` orders after 90 days.
* The account is a cash account (multiplier 1): buying power is
  ``equity - long_market_value - |short_market_value| - open buy holds``. Positions are
  marked at the mid. ``cash + sum(qty * mid) == equity`` always holds.
* A fill the account cannot pay for any more (the price moved after acceptance)
  rejects the order, or cancels its remainder if it already has fills.
* No event ever follows a final state (filled, canceled, expired, rejected, replaced).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, Literal

import structlog

from sim.errors import RequestRefusedError
from sim.prices import is_valid_symbol
from sim.wire import (
    FORBIDDEN,
    NOT_CANCELABLE,
    NOT_FOUND,
    OrderSpec,
    asset_id_of,
    dec,
    invalid,
    ts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sim.clock import MarketClock
    from sim.config import SimConfig
    from sim.prices import PriceModel, Quote
    from sim.wire import OrderTypeName, Side, TimeInForceName

log = structlog.get_logger(__name__)

QTY_STEP = Decimal("0.000000001")
PRICE_STEP = Decimal("0.0001")
ZERO = Decimal(0)
GTC_LIFETIME = timedelta(days=90)
FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
OPEN_STATUSES = frozenset({"pending_new", "accepted", "new", "partially_filled"})
EventName = Literal[
    "pending_new", "new", "partial_fill", "fill", "canceled", "expired", "rejected", "replaced"
]


@dataclass(slots=True)
class SimOrder:
    """One order and its lifecycle state."""

    seq: int
    id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderTypeName
    time_in_force: TimeInForceName
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    position_intent: str
    created_at: datetime
    expires_at: datetime
    fill_rng: random.Random
    status: str = "pending_new"
    updated_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    triggered: bool = False
    doomed: bool = False
    passes: int = 0

    @property
    def is_final(self) -> bool:
        """Whether the order can no longer change."""
        return self.status in FINAL_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        """Average fill price, None before the first fill."""
        if self.filled_qty == 0:
            return None
        return (self.filled_value / self.filled_qty).quantize(PRICE_STEP).normalize()

    @property
    def remaining_notional(self) -> Decimal:
        """Dollar amount still to trade (notional orders)."""
        return (self.notional or ZERO) - self.filled_value

    def remaining_qty(self) -> Decimal:
        """Shares still to trade (zero for notional orders, which fill in one go)."""
        if self.qty is None:
            return ZERO
        return self.qty - self.filled_qty

    def to_json(self) -> dict[str, Any]:
        """The Alpaca Order entity."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at or self.created_at),
            "submitted_at": ts(self.created_at),
            "filled_at": ts(self.filled_at),
            "expired_at": ts(self.expired_at),
            "expires_at": ts(self.expires_at),
            "canceled_at": ts(self.canceled_at),
            "failed_at": ts(self.failed_at),
            "replaced_at": ts(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": asset_id_of(self.symbol),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": dec(self.notional),
            "qty": dec(self.qty),
            "filled_qty": dec(self.filled_qty),
            "filled_avg_price": dec(self.filled_avg_price),
            "order_class": "simple",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": dec(self.limit_price),
            "stop_price": dec(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """One ``trade_updates`` event, with the order as it was right after the change."""

    event: EventName
    order_id: str
    order: dict[str, Any]
    timestamp: datetime
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    execution_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``data`` object of a ``trade_updates`` message."""
        data: dict[str, Any] = {
            "event": self.event,
            "timestamp": ts(self.timestamp),
            "order": self.order,
        }
        if self.execution_id is not None:
            data["execution_id"] = self.execution_id
        if self.price is not None:
            data["price"] = dec(self.price)
        if self.qty is not None:
            data["qty"] = dec(self.qty)
        if self.position_qty is not None:
            data["position_qty"] = dec(self.position_qty)
        return data


@dataclass(slots=True)
class SimPosition:
    """An open position: signed quantity and average entry price."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


@dataclass(frozen=True, slots=True)
class AccountView:
    """The account's money at one moment (exact decimals)."""

    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    equity: Decimal
    buying_power: Decimal
    marks: dict[str, Decimal] = field(default_factory=dict)


class MatchingEngine:
    """Alpaca paper-trading rules over a price model and a market clock.

    Args:
        config: Venue configuration (seed, cash, partial fill probability, shorting).
        clock: Market clock (sessions, time).
        prices: Price model providing quotes.
        on_event: Called synchronously with every trade event, in order.
    """

    def __init__(
        self,
        config: SimConfig,
        clock: MarketClock,
        prices: PriceModel,
        on_event: Callable[[TradeEvent], None] | None = None,
    ) -> None:
        """Open a fresh account with ``config.starting_cash``."""
        self._config = config
        self._clock = clock
        self._prices = prices
        self._on_event = on_event
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Wipe orders and positions, restore starting cash and the id sequence."""
        self._id_rng = random.Random(f"{self._config.seed}:ids")  # noqa: S311 - simulation
        self.account_id = self._new_uuid()
        self.account_number = f"PA{random.Random(self._config.seed).randrange(10**9):09d}"  # noqa: S311 - simulation
        self.created_at = self._clock.now()
        self.cash = Decimal(repr(self._config.starting_cash))
        self.positions: dict[str, SimPosition] = {}
        self.orders: dict[str, SimOrder] = {}
        self._by_client_id: dict[str, SimOrder] = {}
        self._seq = 0
        self.rejects_armed = 0

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _emit(self, event: TradeEvent) -> None:
        log.debug("sim.order.event", trade_event=event.event, order_id=event.order_id)
        if self._on_event is not None:
            self._on_event(event)

    def _event(
        self,
        name: EventName,
        order: SimOrder,
        now: datetime,
        **fields: Any,
    ) -> None:
        order.updated_at = now
        self._emit(
            TradeEvent(
                event=name, order_id=order.id, order=order.to_json(), timestamp=now, **fields
            )
        )

    def position_qty(self, symbol: str) -> Decimal:
        """Signed position in ``symbol`` (0 when flat)."""
        position = self.positions.get(symbol)
        return position.qty if position else ZERO

    def mark(self, symbol: str) -> Decimal:
        """Mark price of ``symbol`` (the quote's mid)."""
        return self._prices.quote(symbol).mid

    def open_orders(self) -> list[SimOrder]:
        """Orders not yet in a final state, oldest first."""
        return [order for order in self.orders.values() if not order.is_final]

    def _buy_holds(self, exclude: SimOrder | None = None) -> Decimal:
        holds = ZERO
        for order in self.open_orders():
            if order is exclude or order.side != "buy":
                continue
            if order.notional is not None:
                holds += order.remaining_notional
                continue
            price = order.limit_price if order.type in {"limit", "stop_limit"} else None
            if price is None:
                price = self._prices.quote(order.symbol).ask
            holds += order.remaining_qty() * price
        return holds

    def sell_holds(self, symbol: str, exclude: SimOrder | None = None) -> Decimal:
        """Shares of ``symbol`` already promised to open sell orders."""
        held = ZERO
        for order in self.open_orders():
            if order is exclude or order.symbol != symbol or order.side != "sell":
                continue
            if order.notional is not None:
                held += _qty_for(order.remaining_notional, self._prices.quote(symbol).bid)
            else:
                held += order.remaining_qty()
        return held

    def account(self, exclude_hold: SimOrder | None = None) -> AccountView:
        """Cash, market values, equity and buying power right now."""
        long_mv = short_mv = ZERO
        marks: dict[str, Decimal] = {}
        for symbol, position in self.positions.items():
            marks[symbol] = mark = self.mark(symbol)
            value = position.qty * mark
            if value >= 0:
                long_mv += value
            else:
                short_mv += value
        equity = self.cash + long_mv + short_mv
        buying_power = equity - long_mv + short_mv - self._buy_holds(exclude_hold)
        return AccountView(
            cash=self.cash,
            long_market_value=long_mv,
            short_market_value=short_mv,
            equity=equity,
            buying_power=max(buying_power, ZERO),
            marks=marks,
        )

    # ------------------------------------------------------------------ orders

    def get(self, order_id: str) -> SimOrder:
        """The order with ``order_id``.

        Raises:
            RequestRefusedError: 404 if there is none.
        """
        order = self.orders.get(order_id)
        if order is None:
            raise RequestRefusedError(404, NOT_FOUND, "order not found")
        return order

    def get_by_client_id(self, client_order_id: str) -> SimOrder:
        """The order with ``client_order_id``.

        Raises:
            RequestRefusedError: 404 if there is none.
        """
        order = self._by_client_id.get(client_order_id)
        if order is None:
            raise RequestRefusedError(404, NOT_FOUND, "order not found")
        return order

    def list_orders(
        self,
        *,
        status: str = "open",
        limit: int = 50,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: str = "desc",
        symbols: Iterable[str] | None = None,
        side: str | None = None,
    ) -> list[SimOrder]:
        """Orders filtered like ``GET /v2/orders`` (by submission time, exclusive bounds)."""
        wanted = set(symbols) if symbols is not None else None
        selected = [
            order
            for order in self.orders.values()
            if (
                status == "all"
                or (status == "open" and not order.is_final)
                or (status == "closed" and order.is_final)
            )
            and (after is None or order.created_at > after)
            and (until is None or order.created_at < until)
            and (wanted is None or order.symbol in wanted)
            and (side is None or order.side == side)
        ]
        selected.sort(key=lambda order: order.seq, reverse=direction == "desc")
        return selected[:limit]

    def _validate(self, spec: OrderSpec) -> None:  # noqa: C901, PLR0912 - one rule per branch
        if not is_valid_symbol(spec.symbol):
            raise RequestRefusedError(422, 40010001, f'asset "{spec.symbol}" not found')
        if (spec.qty is None) == (spec.notional is None):
            raise invalid("qty or notional is required (exactly one)")
        if spec.qty is not None:
            if spec.qty <= 0:
                raise invalid("qty must be > 0")
            if spec.qty != spec.qty.quantize(QTY_STEP):
                raise invalid("qty can have at most 9 decimal places")
            if spec.qty != spec.qty.to_integral_value() and spec.time_in_force != "day":
                raise invalid("fractional orders must be DAY orders")
        if spec.notional is not None:
            if spec.notional <= 0:
                raise invalid("notional must be > 0")
            if spec.type != "market" or spec.time_in_force != "day":
                raise invalid("notional orders must be market orders with time_in_force day")
        needs_limit = spec.type in {"limit", "stop_limit"}
        needs_stop = spec.type in {"stop", "stop_limit"}
        if needs_limit and spec.limit_price is None:
            raise invalid(f"limit_price is required for {spec.type} orders")
        if not needs_limit and spec.limit_price is not None:
            raise invalid(f"limit_price is not allowed for {spec.type} orders")
        if needs_stop and spec.stop_price is None:
            raise invalid(f"stop_price is required for {spec.type} orders")
        if not needs_stop and spec.stop_price is not None:
            raise invalid(f"stop_price is not allowed for {spec.type} orders")
        for name, price in (("limit_price", spec.limit_price), ("stop_price", spec.stop_price)):
            if price is not None and price <= 0:
                raise invalid(f"{name} must be > 0")
        if spec.extended_hours and (
            spec.type != "limit" or spec.time_in_force not in {"day", "gtc"}
        ):
            raise invalid("extended hours order must be DAY or GTC limit orders")
        if spec.client_order_id is not None and spec.client_order_id in self._by_client_id:
            raise RequestRefusedError(422, 40010001, "client_order_id must be unique")

    def _check_funds(self, spec: OrderSpec, quote: Quote, releasing: SimOrder | None) -> None:
        if spec.side == "buy":
            if spec.notional is not None:
                cost = spec.notional
            else:
                price = spec.limit_price if spec.limit_price is not None else quote.ask
                if spec.stop_price is not None and spec.limit_price is None:
                    price = max(spec.stop_price, quote.ask)
                cost = (spec.qty or ZERO) * price
            buying_power = self.account(exclude_hold=releasing).buying_power
            if cost > buying_power:
                raise RequestRefusedError(
                    403,
                    FORBIDDEN,
                    "insufficient buying power",
                    {"buying_power": dec(buying_power) or "0", "cost_basis": dec(cost) or "0"},
                )
            return
        requested = spec.qty if spec.qty is not None else _qty_for(spec.notional, quote.bid)
        existing = self.position_qty(spec.symbol)
        held = self.sell_holds(spec.symbol, releasing)
        available = max(existing, ZERO) - held
        if requested <= available:
            return
        if not self._config.shorting_enabled:
            raise RequestRefusedError(
                403,
                FORBIDDEN,
                f"insufficient qty available for order (requested: {dec(requested)}, "
                f"available: {dec(max(available, ZERO))})",
                {
                    "available": dec(max(available, ZERO)) or "0",
                    "existing_qty": dec(existing) or "0",
                    "held_for_orders": dec(held) or "0",
                    "symbol": spec.symbol,
                },
            )
        short_value = (requested - max(available, ZERO)) * quote.bid
        buying_power = self.account(exclude_hold=releasing).buying_power
        if short_value > buying_power:
            raise RequestRefusedError(
                403,
                FORBIDDEN,
                "insufficient buying power",
                {"buying_power": dec(buying_power) or "0", "cost_basis": dec(short_value) or "0"},
            )

    def _expiry(self, tif: TimeInForceName, now: datetime) -> datetime:
        close = self._clock.next_close(now)
        if tif == "gtc":
            return close + GTC_LIFETIME
        return close

    def submit(self, spec: OrderSpec, *, releasing: SimOrder | None = None) -> SimOrder:
        """Accept an order (events ``pending_new`` then ``new``) or refuse it.

        Args:
            spec: The validated request.
            releasing: An order this one replaces; its holds do not count.

        Returns:
            The accepted order, status ``new``.

        Raises:
            RequestRefusedError: 422 (invalid, duplicate client_order_id), 403 (funds, qty).
        """
        self._validate(spec)
        quote = self._prices.quote(spec.symbol)
        self._check_funds(spec, quote, releasing)
        now = self._clock.now()
        self._seq += 1
        order_id = self._new_uuid()
        client_order_id = spec.client_order_id or self._new_uuid()
        position = self.position_qty(spec.symbol)
        if spec.side == "buy":
            intent = "buy_to_close" if position < 0 else "buy_to_open"
        else:
            intent = "sell_to_close" if position > 0 else "sell_to_open"
        order = SimOrder(
            seq=self._seq,
            id=order_id,
            client_order_id=client_order_id,
            symbol=spec.symbol,
            side=spec.side,
            type=spec.type,
            time_in_force=spec.time_in_force,
            qty=spec.qty,
            notional=spec.notional,
            limit_price=spec.limit_price,
            stop_price=spec.stop_price,
            extended_hours=spec.extended_hours,
            position_intent=intent,
            created_at=now,
            expires_at=self._expiry(spec.time_in_force, now),
            fill_rng=random.Random(f"{self._config.seed}:fill:{self._seq}"),  # noqa: S311 - simulation
            replaces=releasing.id if releasing is not None else None,
        )
        if self.rejects_armed > 0:
            # Armed fault: accepted now, rejected by "the exchange" at the next pass.
            self.rejects_armed -= 1
            order.doomed = True
        self.orders[order.id] = order
        self._by_client_id[order.client_order_id] = order
        log.info(
            "sim.order.accepted",
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
        )
        if self._config.emit_pending_new:
            self._event("pending_new", order, now)
        order.status = "new"
        self._event("new", order, now)
        return order

    def reject_accepted(self, order_id: str, now: datetime | None = None) -> SimOrder:
        """Reject an accepted order that has no fills (the ``rejected`` event).

        Raises:
            RequestRefusedError: 404 unknown order, 422 if it is final or has fills.
        """
        order = self.get(order_id)
        if order.is_final or order.filled_qty > 0:
            raise RequestRefusedError(
                422, NOT_CANCELABLE, f'order is already in "{order.status}" state'
            )
        now = now or self._clock.now()
        order.status = "rejected"
        order.failed_at = now
        log.info("sim.order.rejected", order_id=order.id)
        self._event("rejected", order, now)
        return order

    def cancel(self, order_id: str) -> SimOrder:
        """Cancel an open order (event ``canceled``).

        Raises:
            RequestRefusedError: 404 unknown order, 422 if already final.
        """
        order = self.get(order_id)
        if order.is_final:
            raise RequestRefusedError(
                422, NOT_CANCELABLE, f'order is already in "{order.status}" state'
            )
        self._cancel(order, self._clock.now())
        return order

    def _cancel(self, order: SimOrder, now: datetime) -> None:
        order.status = "canceled"
        order.canceled_at = now
        log.info("sim.order.canceled", order_id=order.id)
        self._event("canceled", order, now)

    def cancel_all(self) -> list[SimOrder]:
        """Cancel every open order; returns them."""
        canceled = self.open_orders()
        now = self._clock.now()
        for order in canceled:
            self._cancel(order, now)
        return canceled

    def replace(
        self,
        order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: TimeInForceName | None = None,
        client_order_id: str | None = None,
    ) -> SimOrder:
        """Replace an open order without fills by a new one (events ``replaced``, then new).

        Raises:
            RequestRefusedError: 404 unknown, 422 final / notional / partially filled / invalid.
        """
        old = self.get(order_id)
        if old.is_final:
            raise RequestRefusedError(
                422, NOT_CANCELABLE, f'order is already in "{old.status}" state'
            )
        if old.notional is not None:
            raise invalid("notional orders cannot be replaced")
        if old.filled_qty > 0:
            raise invalid("partially filled orders cannot be replaced by the paper venue")
        spec = OrderSpec(
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=time_in_force or old.time_in_force,
            qty=qty if qty is not None else old.qty,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            client_order_id=client_order_id,
            extended_hours=old.extended_hours,
        )
        now = self._clock.now()
        new = self.submit(spec, releasing=old)
        old.status = "replaced"
        old.replaced_at = now
        old.replaced_by = new.id
        log.info("sim.order.replaced", order_id=old.id, replaced_by=new.id)
        self._event("replaced", old, now)
        return new

    # --------------------------------------------------------------- matching

    def expire_due(self) -> list[SimOrder]:
        """Expire every open order whose ``expires_at`` has passed (event ``expired``)."""
        now = self._clock.now()
        expired = [order for order in self.open_orders() if order.expires_at <= now]
        for order in expired:
            order.status = "expired"
            order.expired_at = now
            log.info("sim.order.expired", order_id=order.id)
            self._event("expired", order, now)
        return expired

    def _executable_price(self, order: SimOrder, quote: Quote) -> Decimal | None:
        touch = quote.ask if order.side == "buy" else quote.bid
        if order.stop_price is not None and not order.triggered:
            crossed = (
                touch >= order.stop_price if order.side == "buy" else touch <= order.stop_price
            )
            if not crossed:
                return None
            order.triggered = True
        if order.limit_price is not None:
            marketable = (
                touch <= order.limit_price if order.side == "buy" else touch >= order.limit_price
            )
            if not marketable:
                return None
        return touch

    def _fill_qty(self, order: SimOrder, price: Decimal) -> Decimal:
        if order.notional is not None:
            return _qty_for(order.remaining_notional, price)
        remaining = order.remaining_qty()
        if order.time_in_force == "fok":
            return remaining
        if order.fill_rng.random() >= self._config.partial_fill_probability:
            return remaining
        if remaining == remaining.to_integral_value():
            if remaining < 2:
                return remaining
            return Decimal(order.fill_rng.randint(1, int(remaining) - 1))
        part = (remaining * Decimal(repr(order.fill_rng.uniform(0.1, 0.9)))).quantize(
            QTY_STEP, ROUND_DOWN
        )
        return part if part > 0 else remaining

    def match(self) -> bool:
        """One matching pass: expire due orders, then fill marketable ones.

        Returns:
            True if some order was partially filled in this pass and is still open
            (its remainder deserves another pass soon).
        """
        self.expire_due()
        now = self._clock.now()
        for order in self.open_orders():
            if order.doomed:
                self.reject_accepted(order.id, now)
        if not self._clock.is_open(now):
            return False
        again = False
        for order in sorted(self.open_orders(), key=lambda o: o.seq):
            if order.status in {"new", "partially_filled"}:
                again = self._match_one(order, now) or again
        return again

    def _match_one(self, order: SimOrder, now: datetime) -> bool:
        """Try to fill ``order``; True if it was partially filled and stays open."""
        order.passes += 1
        price = self._executable_price(order, self._prices.quote(order.symbol))
        immediate = order.time_in_force in {"ioc", "fok"}
        if price is None:
            if immediate:
                self._cancel(order, now)
            return False
        qty = self._fill_qty(order, price)
        if qty <= 0 or not self._affordable(order, qty, price):
            self._finish_unfillable(order, now)
            return False
        self._fill(order, qty, price, now)
        if order.is_final:
            return False
        if immediate:
            self._cancel(order, now)
            return False
        return True

    def _affordable(self, order: SimOrder, qty: Decimal, price: Decimal) -> bool:
        if order.side == "buy":
            position = self.position_qty(order.symbol)
            covering = min(qty, max(-position, ZERO))
            opening = qty - covering
            account = self.account(exclude_hold=order)
            return opening * price <= account.buying_power + covering * price
        if self._config.shorting_enabled:
            return True
        return qty <= max(self.position_qty(order.symbol), ZERO)

    def _finish_unfillable(self, order: SimOrder, now: datetime) -> None:
        if order.filled_qty > 0:
            self._cancel(order, now)
        else:
            order.status = "rejected"
            order.failed_at = now
            log.info("sim.order.rejected", order_id=order.id, reason="unaffordable at execution")
            self._event("rejected", order, now)

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, now: datetime) -> None:
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        self._apply_position(order.symbol, signed, price)
        order.filled_qty += qty
        order.filled_value += qty * price
        done = order.notional is not None or order.filled_qty >= (order.qty or ZERO)
        order.status = "filled" if done else "partially_filled"
        if done:
            order.filled_at = now
        position_qty = self.position_qty(order.symbol)
        log.info(
            "sim.order.filled" if done else "sim.order.partially_filled",
            order_id=order.id,
            qty=str(qty),
            price=str(price),
            position_qty=str(position_qty),
        )
        self._event(
            "fill" if done else "partial_fill",
            order,
            now,
            price=price,
            qty=qty,
            position_qty=position_qty,
            execution_id=str(uuid.UUID(int=order.fill_rng.getrandbits(128), version=4)),
        )

    def _apply_position(self, symbol: str, signed_qty: Decimal, price: Decimal) -> None:
        position = self.positions.get(symbol)
        if position is None:
            self.positions[symbol] = SimPosition(symbol, signed_qty, price)
            return
        new_qty = position.qty + signed_qty
        if new_qty == 0:
            del self.positions[symbol]
        elif position.qty * signed_qty > 0:
            total = position.qty * position.avg_entry_price + signed_qty * price
            position.avg_entry_price = total / new_qty
            position.qty = new_qty
        elif position.qty * new_qty > 0:
            position.qty = new_qty
        else:
            position.qty = new_qty
            position.avg_entry_price = price


def _qty_for(notional: Decimal | None, price: Decimal) -> Decimal:
    if notional is None or price <= 0:
        return ZERO
    return (notional / price).quantize(QTY_STEP, ROUND_DOWN)
