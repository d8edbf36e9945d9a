"""The matching engine: orders, fills, positions and the account, per Alpaca's paper rules.

Inputs are method calls (:meth:`MatchingEngine.submit`, :meth:`~MatchingEngine.cancel`,
:meth:`~MatchingEngine.replace`, :meth:`~MatchingEngine.match` on every price tick, ...);
outputs are the return values and one :class:`TradeEvent` per order state change,
handed to the ``on_event`` callback in the order they happen.

Rules (see ``docs/sim.md``):

* Only symbols of the asset list trade (``sim/assets.csv``); unlisted ones are
  refused (``asset "X" not found``), inactive ones too.
* Orders are accepted as ``pending_new``, then ``new`` when they can trade now or
  ``accepted`` while they wait for a session (``new`` follows at the open). They
  trade in the regular session; ``extended_hours`` limit orders also in the
  pre-market (04:00-09:30) and after-hours (16:00-20:00) sessions. With the
  ``us-equities`` clock ``opg`` orders trade only at the opening auction and
  ``cls`` orders only at the closing auction (in full, or canceled).
* Market orders fill at the ask (buy) or bid (sell). Limit orders fill when
  marketable (buy: ask <= limit, sell: bid >= limit) at that ask/bid. Stop orders
  trigger when the ask rises to (buy) or the bid falls to (sell) the stop, then
  behave as market (``stop``) or limit (``stop_limit``) orders. Trailing stops
  keep a high-water mark (best bid for sells, best ask for buys) and a stop
  ``trail_price`` or ``trail_percent`` away from it.
* Order classes: ``bracket`` (entry plus take-profit and stop-loss legs, held
  until the entry fills, then one-cancels-other), ``oto`` (entry plus one leg)
  and ``oco`` (a take-profit limit and a stop-loss, both live).
* With ``partial_fill_probability`` a fill covers only a random part of the
  remaining quantity; the rest is evaluated again at the next pass.
* ``ioc``: whatever fills at the first pass fills, the rest is canceled.
  ``fok``: fills completely at the first pass or is canceled. ``day`` orders
  expire at the session close; ``gtc`` orders after 90 days.
* A margin account by default: ``buying_power`` is ``multiplier * equity -
  gross position value - open buy holds``, the multiplier 2, or 4 at or above
  $25,000 of last equity. A cash account (``cash_account``) has multiplier 1:
  ``equity - long_market_value - |short_market_value| - open buy holds``.
  Positions are marked at the mid. ``cash + sum(qty * mid) == equity`` always holds.
* Short sales need a margin account with shorting on and a shortable,
  easy-to-borrow asset.
* Protective rejections as Alpaca words them: wash trades, sub-penny prices,
  stops on the wrong side of the market, orders worth under $1.
* A fill the account cannot pay for any more (the price moved after acceptance)
  rejects the order, or cancels its remainder if it already has fills.
* No event ever follows a final state (filled, canceled, expired, rejected, replaced).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal

import structlog

from sim.assets import AssetBook
from sim.errors import RequestRefusedError
from sim.wire import (
    FORBIDDEN,
    INVALID_REQUEST,
    NOT_CANCELABLE,
    NOT_FOUND,
    UNPROCESSABLE,
    OrderSpec,
    asset_id_of,
    dec,
    invalid,
    ts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sim.assets import Asset
    from sim.clock import MarketClock, Phase
    from sim.config import SimConfig
    from sim.prices import PriceModel, Quote
    from sim.store import StoredState, VenueStore
    from sim.wire import OrderTypeName, Side, TimeInForceName

log = structlog.get_logger(__name__)

QTY_STEP = Decimal("0.000000001")
PRICE_STEP = Decimal("0.0001")
CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
GTC_LIFETIME = timedelta(days=90)
PDT_EQUITY = Decimal(25_000)
MIN_SHORT_EQUITY = Decimal(2_000)
MIN_ORDER_VALUE = Decimal(1)
INITIAL_MARGIN = Decimal("0.5")
MAINTENANCE_MARGIN = Decimal("0.3")
HISTORY_SIZE = 1_000
FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
OPEN_STATUSES = frozenset(
    {
        "pending_new",
        "accepted",
        "new",
        "partially_filled",
        "held",
        "pending_cancel",
        "pending_replace",
    }
)
EventName = Literal[
    "pending_new",
    "new",
    "partial_fill",
    "fill",
    "canceled",
    "expired",
    "rejected",
    "replaced",
    "pending_cancel",
    "pending_replace",
]
DEFAULT_CONFIGURATIONS: dict[str, Any] = {
    "dtbp_check": "entry",
    "trade_confirm_email": "all",
    "suspend_trade": False,
    "no_shorting": False,
    "fractional_trading": True,
    "max_margin_multiplier": "4",
    "max_options_trading_level": 0,
    "pdt_check": "entry",
    "ptp_no_exception_entry": False,
    "disable_overnight_trading": False,
}
_CONFIGURATION_CHOICES: dict[str, tuple[Any, ...]] = {
    "dtbp_check": ("both", "entry", "exit"),
    "pdt_check": ("both", "entry", "exit"),
    "trade_confirm_email": ("all", "none"),
    "max_margin_multiplier": ("1", "2", "4"),
    "max_options_trading_level": (0, 1, 2, 3),
}
_DECIMAL_FIELDS = frozenset(
    {
        "qty",
        "notional",
        "limit_price",
        "stop_price",
        "filled_qty",
        "filled_value",
        "trail_price",
        "trail_percent",
        "hwm",
    }
)
_TIME_FIELDS = frozenset(
    {
        "created_at",
        "expires_at",
        "updated_at",
        "filled_at",
        "canceled_at",
        "expired_at",
        "failed_at",
        "replaced_at",
        "auction_at",
    }
)


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
    order_class: str = "simple"
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    auction_at: datetime | None = None

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

    def to_json(self, legs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The Alpaca Order entity (``legs``: the leg entities, for ``nested`` answers)."""
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
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": dec(self.limit_price),
            "stop_price": dec(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": legs,
            "trail_percent": dec(self.trail_percent),
            "trail_price": dec(self.trail_price),
            "hwm": dec(self.hwm),
        }

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record of every field but the random generator (persistence)."""
        record: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "fill_rng":
                continue
            value = getattr(self, item.name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, list):
                value = list(value)
            record[item.name] = value
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], seed: int) -> SimOrder:
        """Rebuild an order saved by :meth:`to_record`."""
        names = {item.name for item in dataclasses.fields(cls)} - {"fill_rng"}
        values: dict[str, Any] = {k: v for k, v in record.items() if k in names}
        for name in _DECIMAL_FIELDS & values.keys():
            if values[name] is not None:
                values[name] = Decimal(values[name])
        for name in _TIME_FIELDS & values.keys():
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        rng = random.Random(f"{seed}:fill:{values['seq']}:restored")  # noqa: S311 - simulation
        return cls(fill_rng=rng, **values)


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
    regt_buying_power: Decimal = ZERO
    daytrading_buying_power: Decimal = ZERO
    non_marginable_buying_power: Decimal = ZERO
    initial_margin: Decimal = ZERO
    maintenance_margin: Decimal = ZERO
    multiplier: int = 1
    marks: dict[str, Decimal] = field(default_factory=dict)


def _refuse(message: str, extra: dict[str, str] | None = None) -> RequestRefusedError:
    return RequestRefusedError(403, FORBIDDEN, message, extra)


def _unprocessable(message: str, extra: dict[str, str] | None = None) -> RequestRefusedError:
    return RequestRefusedError(422, UNPROCESSABLE, message, extra)


def _tick_size(price: Decimal) -> Decimal:
    return CENT if price >= 1 else PRICE_STEP


def _check_increment(name: str, price: Decimal | None) -> None:
    if price is not None and price > 0 and price % _tick_size(price) != 0:
        raise _unprocessable(
            f"invalid {name} {dec(price)}. sub-penny increment does not fulfill "
            "minimum pricing criteria"
        )


class MatchingEngine:
    """Alpaca paper-trading rules over a price model and a market clock.

    Args:
        config: Venue configuration (seed, cash, partial fill probability, account type).
        clock: Market clock (sessions, time).
        prices: Price model providing quotes.
        on_event: Called synchronously with every trade event, in order.
        store: Where to persist every change (None: nothing persists). A store that
            already holds an account is resumed instead of opening a fresh one.
    """

    def __init__(
        self,
        config: SimConfig,
        clock: MarketClock,
        prices: PriceModel,
        on_event: Callable[[TradeEvent], None] | None = None,
        store: VenueStore | None = None,
    ) -> None:
        """Open a fresh account with ``config.starting_cash``, or resume the stored one."""
        self._config = config
        self._clock = clock
        self._prices = prices
        self._on_event = on_event
        self._store = store
        self.assets = AssetBook()
        stored = store.load() if store is not None else None
        if stored is None:
            self.reset()
        else:
            self._restore(stored)

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Wipe orders and positions and restore starting cash (a new account id)."""
        self.account_id = str(uuid.uuid4())
        self.account_number = f"PA{uuid.uuid4().int % 10**10:010d}"
        self.created_at = self._clock.now()
        self.cash = Decimal(repr(self._config.starting_cash))
        self.positions: dict[str, SimPosition] = {}
        self.orders: dict[str, SimOrder] = {}
        self._by_client_id: dict[str, SimOrder] = {}
        self._seq = 0
        self.rejects_armed = 0
        self.last_equity = self.cash
        self.last_maintenance_margin = ZERO
        funding = {
            "id": f"{self.created_at.strftime('%Y%m%d%H%M%S%f')}::{uuid.uuid4()}",
            "activity_type": "CSD",
            "date": ts(self.created_at),
            "created_at": ts(self.created_at),
            "net_amount": dec(self.cash),
            "currency": "USD",
            "status": "executed",
        }
        self.activities: list[dict[str, Any]] = [funding]
        self.history: list[tuple[datetime, Decimal]] = []
        self.configurations: dict[str, Any] = dict(DEFAULT_CONFIGURATIONS)
        self.next_roll = self._clock.next_close(self.created_at)
        if self._store is not None:
            self._store.wipe()
            self._save_account()
            self._store.save_activity(funding)

    def _restore(self, stored: StoredState) -> None:
        account = stored.account
        self.account_id = str(account["account_id"])
        self.account_number = str(account["account_number"])
        self.created_at = datetime.fromisoformat(account["created_at"])
        self.cash = Decimal(account["cash"])
        self.last_equity = Decimal(account["last_equity"])
        self.last_maintenance_margin = Decimal(account["last_maintenance_margin"])
        self.next_roll = datetime.fromisoformat(account["next_roll"])
        self.configurations = {**DEFAULT_CONFIGURATIONS, **account["configurations"]}
        self.history = [(datetime.fromisoformat(t), Decimal(e)) for t, e in account["history"]]
        self._prices.restore({s: (float(m), str(d)) for s, (m, d) in account["marks"].items()})
        self.positions = {
            symbol: SimPosition(symbol, Decimal(qty), Decimal(avg))
            for symbol, qty, avg in stored.positions
        }
        self.orders = {}
        self._by_client_id = {}
        for record in stored.orders:
            order = SimOrder.from_record(record, self._config.seed)
            self.orders[order.id] = order
            self._by_client_id[order.client_order_id] = order
        self._seq = max((order.seq for order in self.orders.values()), default=0)
        self.activities = list(stored.activities)
        self.rejects_armed = 0
        log.info(
            "sim.state.resumed",
            account_id=self.account_id,
            orders=len(self.orders),
            positions=len(self.positions),
        )

    def account_record(self) -> dict[str, Any]:
        """The account as persisted (everything but orders, positions, activities)."""
        return {
            "account_id": self.account_id,
            "account_number": self.account_number,
            "created_at": self.created_at.isoformat(),
            "cash": str(self.cash),
            "last_equity": str(self.last_equity),
            "last_maintenance_margin": str(self.last_maintenance_margin),
            "next_roll": self.next_roll.isoformat(),
            "configurations": self.configurations,
            "history": [(t.isoformat(), str(e)) for t, e in self.history],
            "marks": self._prices.marks(),
        }

    def _save_account(self) -> None:
        if self._store is not None:
            self._store.save_account(self.account_record())

    def _changed(self, order: SimOrder) -> None:
        if self._store is not None:
            self._store.save_order(order.to_record())

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
        self._changed(order)
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

    def legs_of(self, order: SimOrder) -> list[SimOrder]:
        """The legs of a bracket, OTO or OCO parent (empty for other orders)."""
        return [self.orders[leg_id] for leg_id in order.leg_ids if leg_id in self.orders]

    def order_json(self, order: SimOrder, *, nested: bool = True) -> dict[str, Any]:
        """The Order entity, with its legs when it has some and ``nested``."""
        legs = self.legs_of(order) if nested else []
        return order.to_json([leg.to_json() for leg in legs] if legs else None)

    def _exit_group(self, order: SimOrder) -> list[SimOrder]:
        """Orders that close the same shares as ``order`` (one-cancels-other), itself included."""
        root = self.orders.get(order.parent_id) if order.parent_id else order
        if root is None:
            return [order]
        if root.order_class == "oco":
            return [root, *self.legs_of(root)]
        if order.parent_id is not None:
            return self.legs_of(root)
        return [order]

    def _buy_holds(self, exclude: SimOrder | None = None) -> Decimal:
        holds = ZERO
        for order in self.open_orders():
            if order is exclude or order.side != "buy" or order.parent_id is not None:
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
        counted: set[str] = set()
        for order in self.open_orders():
            if order is exclude or order.symbol != symbol or order.side != "sell":
                continue
            if order.status == "held":
                continue
            group = order.parent_id or order.id
            if order.parent_id is not None or order.order_class == "oco":
                if group in counted:
                    continue
                counted.add(group)
            if order.notional is not None:
                held += _qty_for(order.remaining_notional, self._prices.quote(symbol).bid)
            else:
                held += order.remaining_qty()
        return held

    def multiplier(self) -> int:
        """Margin multiplier: 1 (cash), 2, or 4 at or above $25,000 of last equity."""
        if self._config.cash_account:
            return 1
        allowed = int(self.configurations["max_margin_multiplier"])
        if allowed >= 4 and self.last_equity >= PDT_EQUITY:
            return 4
        return min(allowed, 2)

    def account(self, exclude_hold: SimOrder | None = None) -> AccountView:
        """Cash, market values, equity, margin and buying power right now."""
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
        gross = long_mv - short_mv
        holds = self._buy_holds(exclude_hold)
        multiplier = self.multiplier()
        if multiplier == 1:
            buying_power = regt = non_marginable = equity - long_mv + short_mv - holds
            daytrading = ZERO
        else:
            regt = 2 * equity - gross - holds
            daytrading = 4 * equity - gross - holds if multiplier == 4 else ZERO
            buying_power = daytrading if multiplier == 4 else regt
            non_marginable = regt / 2
        return AccountView(
            cash=self.cash,
            long_market_value=long_mv,
            short_market_value=short_mv,
            equity=equity,
            buying_power=max(buying_power, ZERO),
            regt_buying_power=max(regt, ZERO),
            daytrading_buying_power=max(daytrading, ZERO),
            non_marginable_buying_power=max(non_marginable, ZERO),
            initial_margin=gross * INITIAL_MARGIN if multiplier > 1 else ZERO,
            maintenance_margin=gross * MAINTENANCE_MARGIN if multiplier > 1 else ZERO,
            multiplier=multiplier,
            marks=marks,
        )

    def configure(self, changes: object) -> dict[str, Any]:
        """Apply a ``PATCH /v2/account/configurations`` body; returns the configuration.

        Raises:
            RequestRefusedError: 422 naming the first invalid field.
        """
        if not isinstance(changes, dict):
            raise invalid("request body must be a JSON object")
        updated = dict(self.configurations)
        for name, value in changes.items():
            if name not in DEFAULT_CONFIGURATIONS:
                raise invalid(f"unknown configuration: {name!r}")
            if value is None:
                continue  # alpaca-py sends its unset optional fields as null
            choices = _CONFIGURATION_CHOICES.get(name)
            if choices is not None:
                if isinstance(value, bool) or value not in choices:
                    raise invalid(f"invalid {name}: {value!r}")
            elif not isinstance(value, bool):
                raise invalid(f"invalid {name}: {value!r} (true or false)")
            updated[name] = value
        self.configurations = updated
        self._save_account()
        log.info("sim.account.configured", changes=sorted(changes))
        return dict(updated)

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
        nested: bool = False,
    ) -> list[SimOrder]:
        """Orders filtered like ``GET /v2/orders`` (by submission time, exclusive bounds).

        With ``nested`` the legs of bracket, OTO and OCO orders are left out (they
        are served inside their parent).
        """
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
            and not (nested and order.parent_id is not None)
        ]
        selected.sort(key=lambda order: order.seq, reverse=direction == "desc")
        return selected[:limit]

    def _asset(self, symbol: str) -> Asset:
        asset = self.assets.get(symbol) if self.assets.listed(symbol) else None
        if asset is None:
            raise RequestRefusedError(422, INVALID_REQUEST, f'asset "{symbol}" not found')
        if not asset.tradable:
            raise _unprocessable(f"asset {symbol} is not active")
        return asset

    def _validate(self, spec: OrderSpec) -> Asset:  # noqa: C901, PLR0912 - one rule per branch
        if self.configurations["suspend_trade"]:
            raise _refuse("new orders are rejected: trading is suspended by the user")
        asset = self._asset(spec.symbol)
        if (spec.qty is None) == (spec.notional is None):
            raise invalid("qty or notional is required (exactly one)")
        fractional = spec.notional is not None
        if spec.qty is not None:
            if spec.qty <= 0:
                raise invalid("qty must be > 0")
            if spec.qty != spec.qty.quantize(QTY_STEP):
                raise invalid("qty can have at most 9 decimal places")
            fractional = spec.qty != spec.qty.to_integral_value()
            if fractional and spec.time_in_force != "day":
                raise invalid("fractional orders must be DAY orders")
        if spec.notional is not None:
            if spec.notional <= 0:
                raise invalid("notional must be > 0")
            if spec.type != "market" or spec.time_in_force != "day":
                raise invalid("notional orders must be market orders with time_in_force day")
        if fractional and not asset.fractionable:
            raise _unprocessable(f"asset {spec.symbol} is not fractionable")
        if fractional and not self.configurations["fractional_trading"]:
            raise _refuse("fractional trading is disabled for this account")
        self._validate_prices(spec)
        if spec.extended_hours and (
            spec.type != "limit"
            or spec.time_in_force not in {"day", "gtc"}
            or spec.order_class != "simple"
        ):
            raise invalid("extended hours order must be DAY or GTC limit orders")
        if spec.client_order_id is not None and spec.client_order_id in self._by_client_id:
            raise RequestRefusedError(422, INVALID_REQUEST, "client_order_id must be unique")
        self._validate_class(spec, fractional=fractional)
        return asset

    def _validate_prices(self, spec: OrderSpec) -> None:  # noqa: C901 - one rule per branch
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
        trails = [t for t in (spec.trail_price, spec.trail_percent) if t is not None]
        if spec.type == "trailing_stop":
            if len(trails) != 1:
                raise invalid("trailing_stop orders need exactly one of trail_price, trail_percent")
            if trails[0] <= 0:
                raise invalid("trail_price and trail_percent must be > 0")
            if spec.trail_percent is not None and spec.trail_percent >= 100:
                raise invalid("trail_percent must be < 100")
            if spec.time_in_force not in {"day", "gtc"}:
                raise invalid("trailing_stop orders must be DAY or GTC orders")
        elif trails:
            raise invalid("trail_price and trail_percent are only for trailing_stop orders")
        for name, price in (
            ("limit_price", spec.limit_price),
            ("stop_price", spec.stop_price),
            ("trail_price", spec.trail_price),
            ("take_profit.limit_price", spec.take_profit),
            ("stop_loss.stop_price", spec.stop_loss_stop),
            ("stop_loss.limit_price", spec.stop_loss_limit),
        ):
            if price is not None and price <= 0:
                raise invalid(f"{name} must be > 0")
            _check_increment(name, price)

    def _validate_class(self, spec: OrderSpec, *, fractional: bool) -> None:
        has_tp, has_sl = spec.take_profit is not None, spec.stop_loss_stop is not None
        if spec.order_class == "simple":
            if has_tp or has_sl:
                raise invalid("take_profit and stop_loss need order_class bracket, oco or oto")
            return
        if fractional or spec.notional is not None:
            raise invalid(f"{spec.order_class} orders must be for whole shares")
        if spec.time_in_force not in {"day", "gtc"}:
            raise invalid(f"{spec.order_class} orders must be DAY or GTC orders")
        if spec.order_class in {"bracket", "oco"} and not (has_tp and has_sl):
            raise invalid(f"{spec.order_class} orders need take_profit and stop_loss")
        if spec.order_class == "oto" and has_tp == has_sl:
            raise invalid("oto orders need exactly one of take_profit and stop_loss")
        if spec.order_class == "oco" and spec.type != "limit":
            raise invalid("oco orders must be limit orders")
        if spec.order_class != "oco" and spec.type not in {"market", "limit"}:
            raise invalid(f"{spec.order_class} entry orders must be market or limit orders")

    def _check_market(self, spec: OrderSpec, quote: Quote) -> None:
        """Rules that depend on the current price: stop side, leg prices, minimum value."""
        if spec.type in {"stop", "stop_limit"} and spec.stop_price is not None:
            if spec.side == "buy" and spec.stop_price <= quote.bid:
                raise _unprocessable(
                    f"stop price must be above the current price {dec(quote.bid)} "
                    "for buy stop orders"
                )
            if spec.side == "sell" and spec.stop_price >= quote.ask:
                raise _unprocessable(
                    f"stop price must be below the current price {dec(quote.ask)} "
                    "for sell stop orders"
                )
        if spec.order_class != "simple":
            self._check_leg_prices(spec, quote)
        touch = quote.ask if spec.side == "buy" else quote.bid
        value = spec.notional
        if value is None and spec.qty is not None and spec.qty != spec.qty.to_integral_value():
            value = spec.qty * (spec.limit_price or touch)
        if value is not None and value < MIN_ORDER_VALUE:
            raise _refuse("cost basis must be >= 1")

    def _check_leg_prices(self, spec: OrderSpec, quote: Quote) -> None:
        take_profit, stop = spec.take_profit, spec.stop_loss_stop
        if spec.order_class == "oco":
            if take_profit is not None and stop is not None:
                wrong = take_profit <= stop if spec.side == "sell" else take_profit >= stop
                if wrong:
                    relation = ">" if spec.side == "sell" else "<"
                    raise _unprocessable(
                        f"take_profit.limit_price must be {relation} stop_loss.stop_price"
                    )
            return
        base = spec.limit_price or (quote.ask if spec.side == "buy" else quote.bid)
        sign = 1 if spec.side == "buy" else -1
        if take_profit is not None and sign * (take_profit - base) < CENT:
            relation = ">=" if sign > 0 else "<="
            op = "+" if sign > 0 else "-"
            raise _unprocessable(
                f"take_profit.limit_price must be {relation} base_price {op} 0.01",
                {"base_price": dec(base) or "0"},
            )
        if stop is not None and sign * (base - stop) < CENT:
            relation = "<=" if sign > 0 else ">="
            op = "-" if sign > 0 else "+"
            raise _unprocessable(
                f"stop_loss.stop_price must be {relation} base_price {op} 0.01",
                {"base_price": dec(base) or "0"},
            )

    def _check_wash(self, spec: OrderSpec, releasing: SimOrder | None) -> None:
        """Refuse an order that could trade against one of the account's own open orders."""
        own_group = set()
        if releasing is not None:
            own_group = {o.id for o in self._exit_group(releasing)} | {releasing.id}
        mine = _crossing_price(spec.side, spec.type, spec.limit_price)
        for order in self.open_orders():
            if (
                order.symbol != spec.symbol
                or order.side == spec.side
                or order.status in {"held", "pending_cancel", "pending_replace"}
                or order.id in own_group
            ):
                continue
            theirs = _crossing_price(order.side, order.type, order.limit_price)
            buy, sell = (mine, theirs) if spec.side == "buy" else (theirs, mine)
            if buy >= sell:
                limit_only = spec.type == "limit" and order.type == "limit"
                reason = (
                    "opposite side limit order exists"
                    if limit_only
                    else "opposite side market/stop order exists"
                )
                raise _unprocessable(
                    "potential wash trade detected. use complex orders",
                    {"existing_order_id": order.id, "reject_reason": reason},
                )

    def _check_funds(
        self, spec: OrderSpec, asset: Asset, quote: Quote, releasing: SimOrder | None
    ) -> None:
        if spec.side == "buy":
            self._check_buy(spec, asset, quote, releasing)
            return
        requested = spec.qty if spec.qty is not None else _qty_for(spec.notional, quote.bid)
        existing = self.position_qty(spec.symbol)
        held = self.sell_holds(spec.symbol, releasing)
        available = max(existing, ZERO) - held
        if requested <= available:
            return
        if self._config.cash_account or not self._config.shorting_enabled:
            raise _refuse(
                f"insufficient qty available for order (requested: {dec(requested)}, "
                f"available: {dec(max(available, ZERO))})",
                {
                    "available": dec(max(available, ZERO)) or "0",
                    "existing_qty": dec(existing) or "0",
                    "held_for_orders": dec(held) or "0",
                    "symbol": spec.symbol,
                },
            )
        short_qty = requested - max(available, ZERO)
        view = self.account(exclude_hold=releasing)
        if self.configurations["no_shorting"] or view.equity < MIN_SHORT_EQUITY:
            raise _refuse("account is not allowed to short")
        if short_qty != short_qty.to_integral_value():
            raise _refuse("fractional orders are not allowed to short")
        if not asset.shortable:
            raise _unprocessable(f"asset {spec.symbol} cannot be sold short")
        if not asset.easy_to_borrow:
            raise _refuse(
                f"cannot open a short position in {spec.symbol}: the asset is hard to borrow"
            )
        short_value = short_qty * quote.bid
        if short_value > view.buying_power:
            raise _refuse(
                "insufficient buying power",
                {
                    "buying_power": dec(view.buying_power) or "0",
                    "cost_basis": dec(short_value) or "0",
                },
            )

    def _check_buy(
        self, spec: OrderSpec, asset: Asset, quote: Quote, releasing: SimOrder | None
    ) -> None:
        if spec.notional is not None:
            cost = spec.notional
        else:
            price = spec.limit_price if spec.limit_price is not None else quote.ask
            if spec.stop_price is not None and spec.limit_price is None:
                price = max(spec.stop_price, quote.ask)
            if spec.type == "trailing_stop":
                price = quote.ask + self._trail_amount(quote.ask, spec)
            cost = (spec.qty or ZERO) * price
        covering = min(spec.qty or ZERO, max(-self.position_qty(spec.symbol), ZERO))
        cost -= covering * quote.ask
        view = self.account(exclude_hold=releasing)
        buying_power = view.buying_power if asset.marginable else view.non_marginable_buying_power
        if cost > buying_power:
            raise _refuse(
                "insufficient buying power",
                {"buying_power": dec(buying_power) or "0", "cost_basis": dec(cost) or "0"},
            )

    @staticmethod
    def _trail_amount(reference: Decimal, spec: OrderSpec | SimOrder) -> Decimal:
        if spec.trail_price is not None:
            return spec.trail_price
        return (reference * (spec.trail_percent or ZERO) / 100).quantize(CENT, ROUND_HALF_UP)

    def _expiry(self, spec: OrderSpec, now: datetime) -> datetime:
        if spec.time_in_force == "gtc":
            return self._clock.next_close(now) + GTC_LIFETIME
        if spec.extended_hours and self._clock.mode == "us-equities":
            return self._clock.next_post_close(now)
        return self._clock.next_close(now)

    def _auction_time(self, spec: OrderSpec, now: datetime) -> datetime | None:
        if self._clock.mode != "us-equities":
            return None
        if spec.time_in_force == "opg":
            return self._clock.next_open(now)
        if spec.time_in_force == "cls":
            return self._clock.next_close(now)
        return None

    def _tradable_in(self, order: SimOrder, phase: Phase) -> bool:
        if order.status in {"held", "pending_cancel", "pending_replace"}:
            return False
        if order.auction_at is not None:
            return False
        if phase == "regular":
            return True
        return phase in {"pre", "post"} and order.extended_hours

    def submit(self, spec: OrderSpec, *, releasing: SimOrder | None = None) -> SimOrder:
        """Accept an order (events ``pending_new``, then ``new`` if it can trade now) or refuse it.

        Args:
            spec: The parsed request.
            releasing: An order this one replaces; its holds do not count.

        Returns:
            The accepted order: ``new``, or ``accepted`` while it waits for a session.

        Raises:
            RequestRefusedError: 422 (invalid, duplicate client_order_id, sub-penny,
                stop side, unknown asset), 403 (funds, qty, shorting, wash trade, value).
        """
        if spec.order_class == "oco" and spec.limit_price is None:
            spec = dataclasses.replace(spec, limit_price=spec.take_profit)
        asset = self._validate(spec)
        quote = self._prices.quote(spec.symbol)
        self._check_market(spec, quote)
        self._check_wash(spec, releasing)
        self._check_funds(spec, asset, quote, releasing)
        now = self._clock.now()
        order = self._new_order(spec, now, releasing)
        if spec.type == "trailing_stop":
            order.hwm = quote.bid if spec.side == "sell" else quote.ask
            order.stop_price = self._trail_stop(order)
        if self.rejects_armed > 0:
            # Armed fault: accepted now, rejected by "the exchange" at the next pass.
            self.rejects_armed -= 1
            order.doomed = True
        log.info(
            "sim.order.accepted",
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            order_class=order.order_class,
        )
        legs = self._new_legs(order, spec, now)
        if self._config.emit_pending_new:
            self._event("pending_new", order, now)
        phase = self._clock.phase(now)
        order.status = "new" if self._tradable_in(order, phase) else "accepted"
        if order.status == "new":
            self._event("new", order, now)
        else:
            self._changed(order)
        for leg in legs:
            self._changed(leg)
            if leg.status == "new":
                self._event("new", leg, now)
        return order

    def _new_order(
        self,
        spec: OrderSpec,
        now: datetime,
        releasing: SimOrder | None,
        *,
        parent: SimOrder | None = None,
    ) -> SimOrder:
        self._seq += 1
        position = self.position_qty(spec.symbol)
        if spec.side == "buy":
            intent = "buy_to_close" if position < 0 else "buy_to_open"
        else:
            intent = "sell_to_close" if position > 0 else "sell_to_open"
        client_order_id = spec.client_order_id or str(uuid.uuid4())
        order = SimOrder(
            seq=self._seq,
            id=str(uuid.uuid4()),
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
            expires_at=parent.expires_at if parent is not None else self._expiry(spec, now),
            fill_rng=random.Random(f"{self._config.seed}:fill:{self._seq}"),  # noqa: S311 - simulation
            replaces=releasing.id if releasing is not None else None,
            order_class=spec.order_class,
            trail_price=spec.trail_price,
            trail_percent=spec.trail_percent,
            parent_id=parent.id if parent is not None else None,
            auction_at=self._auction_time(spec, now),
        )
        self.orders[order.id] = order
        self._by_client_id[order.client_order_id] = order
        return order

    def _new_legs(self, parent: SimOrder, spec: OrderSpec, now: datetime) -> list[SimOrder]:
        if spec.order_class == "simple":
            return []
        exit_side: Side = "sell" if spec.side == "buy" else "buy"
        legs: list[OrderSpec] = []
        if spec.order_class == "oco":
            stop_type: OrderTypeName = "stop" if spec.stop_loss_limit is None else "stop_limit"
            legs.append(
                dataclasses.replace(
                    spec,
                    order_class="oco",
                    type=stop_type,
                    limit_price=spec.stop_loss_limit,
                    stop_price=spec.stop_loss_stop,
                    client_order_id=None,
                )
            )
        else:
            if spec.take_profit is not None:
                legs.append(
                    OrderSpec(
                        symbol=spec.symbol,
                        side=exit_side,
                        type="limit",
                        time_in_force=spec.time_in_force,
                        qty=spec.qty,
                        limit_price=spec.take_profit,
                        order_class=spec.order_class,
                    )
                )
            if spec.stop_loss_stop is not None:
                legs.append(
                    OrderSpec(
                        symbol=spec.symbol,
                        side=exit_side,
                        type="stop" if spec.stop_loss_limit is None else "stop_limit",
                        time_in_force=spec.time_in_force,
                        qty=spec.qty,
                        stop_price=spec.stop_loss_stop,
                        limit_price=spec.stop_loss_limit,
                        order_class=spec.order_class,
                    )
                )
        created: list[SimOrder] = []
        for leg_spec in legs:
            leg = self._new_order(leg_spec, now, None, parent=parent)
            leg.status = "new" if spec.order_class == "oco" else "held"
            if spec.order_class == "oco":
                leg.position_intent = parent.position_intent
            parent.leg_ids.append(leg.id)
            created.append(leg)
        return created

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
        self._settle_legs(order, now)
        return order

    def cancel(self, order_id: str) -> SimOrder:
        """Cancel an open order at the client's request (``pending_cancel``, ``canceled``).

        Canceling one leg of a one-cancels-other pair cancels the pair; canceling a
        parent whose entry has not filled cancels its held legs.

        Raises:
            RequestRefusedError: 404 unknown order, 422 if already final.
        """
        order = self.get(order_id)
        if order.is_final:
            raise RequestRefusedError(
                422, NOT_CANCELABLE, f'order is already in "{order.status}" state'
            )
        now = self._clock.now()
        order.status = "pending_cancel"
        self._event("pending_cancel", order, now)
        self._cancel(order, now)
        for sibling in self._exit_group(order):
            if not sibling.is_final:
                self._cancel(sibling, now)
        return order

    def _cancel(self, order: SimOrder, now: datetime) -> None:
        order.status = "canceled"
        order.canceled_at = now
        log.info("sim.order.canceled", order_id=order.id)
        self._event("canceled", order, now)
        self._settle_legs(order, now)

    def cancel_all(self) -> list[SimOrder]:
        """Cancel every open order (``pending_cancel`` then ``canceled``); returns them."""
        canceled = self.open_orders()
        now = self._clock.now()
        for order in canceled:
            if not order.is_final:
                order.status = "pending_cancel"
                self._event("pending_cancel", order, now)
                self._cancel(order, now)
        return canceled

    def replace(
        self,
        order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
        time_in_force: TimeInForceName | None = None,
        client_order_id: str | None = None,
    ) -> SimOrder:
        """Replace an open order without fills (``pending_replace``, the new order, ``replaced``).

        Raises:
            RequestRefusedError: 404 unknown, 422 final / notional / partially filled /
                invalid (orders of a bracket, OTO or OCO: anything but their prices).
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
        if old.order_class != "simple":
            if qty is not None or time_in_force is not None or trail is not None:
                raise invalid(
                    f"only limit_price and stop_price of {old.order_class} orders can be replaced"
                )
            return self._replace_in_group(
                old, limit_price=limit_price, stop_price=stop_price, client_order_id=client_order_id
            )
        if trail is not None and old.type != "trailing_stop":
            raise invalid("trail is only for trailing_stop orders")
        if old.type == "trailing_stop" and stop_price is not None:
            raise invalid("stop_price is not allowed for trailing_stop orders")
        trail_price, trail_percent = old.trail_price, old.trail_percent
        if trail is not None:
            if trail_price is not None:
                trail_price = trail
            else:
                trail_percent = trail
        spec = OrderSpec(
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=time_in_force or old.time_in_force,
            qty=qty if qty is not None else old.qty,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=None
            if old.type == "trailing_stop"
            else (stop_price if stop_price is not None else old.stop_price),
            client_order_id=client_order_id,
            extended_hours=old.extended_hours,
            trail_price=trail_price,
            trail_percent=trail_percent,
        )
        now = self._clock.now()
        new = self.submit(spec, releasing=old)
        old.status = "pending_replace"
        self._event("pending_replace", old, now)
        old.status = "replaced"
        old.replaced_at = now
        old.replaced_by = new.id
        log.info("sim.order.replaced", order_id=old.id, replaced_by=new.id)
        self._event("replaced", old, now)
        return new

    def _replace_in_group(
        self,
        old: SimOrder,
        *,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        client_order_id: str | None,
    ) -> SimOrder:
        """Replace one order of a bracket, OTO or OCO: new prices, same place in the group."""
        if limit_price is not None and old.limit_price is None:
            raise invalid(f"limit_price is not allowed for {old.type} orders")
        if stop_price is not None and old.stop_price is None:
            raise invalid(f"stop_price is not allowed for {old.type} orders")
        for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
            if price is not None and price <= 0:
                raise invalid(f"{name} must be > 0")
            _check_increment(name, price)
        if client_order_id is not None and client_order_id in self._by_client_id:
            raise RequestRefusedError(422, INVALID_REQUEST, "client_order_id must be unique")
        now = self._clock.now()
        self._seq += 1
        new = dataclasses.replace(
            old,
            seq=self._seq,
            id=str(uuid.uuid4()),
            client_order_id=client_order_id or str(uuid.uuid4()),
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            created_at=now,
            updated_at=None,
            replaces=old.id,
            leg_ids=list(old.leg_ids),
            fill_rng=random.Random(f"{self._config.seed}:fill:{self._seq}"),  # noqa: S311 - simulation
            passes=0,
            triggered=False,
        )
        self.orders[new.id] = new
        self._by_client_id[new.client_order_id] = new
        if old.parent_id is not None:
            parent = self.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
            self._changed(parent)
        for leg in self.legs_of(new):
            leg.parent_id = new.id
            self._changed(leg)
        old.leg_ids = []
        status, new.status = new.status, "pending_new"
        if self._config.emit_pending_new and old.parent_id is None:
            self._event("pending_new", new, now)
        new.status = status
        if status in {"new", "partially_filled"}:
            self._event("new", new, now)
        else:
            self._changed(new)
        old.status = "pending_replace"
        self._event("pending_replace", old, now)
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
            if order.is_final:
                continue
            order.status = "expired"
            order.expired_at = now
            log.info("sim.order.expired", order_id=order.id)
            self._event("expired", order, now)
            self._settle_legs(order, now)
        return expired

    def _settle_legs(self, order: SimOrder, now: datetime) -> None:
        """After ``order`` changed: release or cancel its legs, cancel its OCO siblings."""
        if order.leg_ids and order.order_class in {"bracket", "oto"}:
            self._release_legs(order, now)
        done = order.status == "filled" or (order.is_final and order.status != "replaced")
        if done and (order.parent_id is not None or order.order_class == "oco"):
            for sibling in self._exit_group(order):
                if sibling is not order and not sibling.is_final:
                    self._cancel(sibling, now)

    def _release_legs(self, parent: SimOrder, now: datetime) -> None:
        """Entry filled (or ended with fills): its held legs go live; ended without: canceled."""
        if parent.status == "filled" or (parent.is_final and parent.filled_qty > 0):
            for leg in self.legs_of(parent):
                if leg.status == "held":
                    leg.qty = parent.filled_qty
                    leg.status = "new"
                    self._event("new", leg, now)
        elif parent.is_final:
            for leg in self.legs_of(parent):
                if not leg.is_final:
                    self._cancel(leg, now)

    def _executable_price(self, order: SimOrder, quote: Quote) -> Decimal | None:
        touch = quote.ask if order.side == "buy" else quote.bid
        if order.type == "trailing_stop" and not order.triggered:
            self._follow(order, touch)
        if order.stop_price is not None and not order.triggered:
            crossed = (
                touch >= order.stop_price if order.side == "buy" else touch <= order.stop_price
            )
            if not crossed:
                return None
            order.triggered = True
            self._changed(order)
        if order.limit_price is not None:
            marketable = (
                touch <= order.limit_price if order.side == "buy" else touch >= order.limit_price
            )
            if not marketable:
                return None
        return touch

    def _follow(self, order: SimOrder, touch: Decimal) -> None:
        """Move a trailing stop's high-water mark (and so its stop) with the market."""
        hwm = order.hwm if order.hwm is not None else touch
        better = touch > hwm if order.side == "sell" else touch < hwm
        if better or order.hwm is None:
            order.hwm = touch
            order.stop_price = self._trail_stop(order)
            self._changed(order)

    def _trail_stop(self, order: SimOrder) -> Decimal:
        hwm = order.hwm or ZERO
        amount = self._trail_amount(hwm, order)
        stop = hwm - amount if order.side == "sell" else hwm + amount
        return max(stop.quantize(CENT, ROUND_HALF_UP), CENT)

    def _fill_qty(self, order: SimOrder, price: Decimal) -> Decimal:
        if order.notional is not None:
            return _qty_for(order.remaining_notional, price)
        remaining = order.remaining_qty()
        group = self._exit_group(order)
        if len(group) > 1:
            # One-cancels-other: never close more shares than the pair is for.
            remaining -= sum((o.filled_qty for o in group if o is not order), ZERO)
        if order.time_in_force == "fok" or order.auction_at is not None:
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
        """One matching pass: auctions, session roll, expiry, then fill marketable orders.

        Returns:
            True if some order was partially filled in this pass and is still open
            (its remainder deserves another pass soon).
        """
        now = self._clock.now()
        self._run_auctions(now)
        self._roll_sessions(now)
        self.expire_due()
        for order in self.open_orders():
            if order.doomed and not order.is_final:
                self.reject_accepted(order.id, now)
        phase = self._clock.phase(now)
        if phase == "closed":
            return False
        again = False
        quotes: dict[str, Quote] = {}  # prices hold still during a pass: one quote a symbol
        for order in sorted(self.open_orders(), key=lambda o: o.seq):
            if order.is_final or not self._tradable_in(order, phase):
                continue
            if order.status == "accepted":
                order.status = "new"
                self._event("new", order, now)
            quote = quotes.get(order.symbol)
            if quote is None:
                quote = quotes[order.symbol] = self._prices.quote(order.symbol)
            again = self._match_one(order, now, quote) or again
        return again

    def _run_auctions(self, now: datetime) -> None:
        """Fill ``opg``/``cls`` orders whose auction time has come (in full, or cancel)."""
        due = [
            order
            for order in sorted(self.open_orders(), key=lambda o: o.seq)
            if order.auction_at is not None and order.auction_at <= now
        ]
        for order in due:
            if order.is_final or order.status == "held":
                continue
            if order.status == "accepted":
                order.status = "new"
                self._event("new", order, now)
            price = self._executable_price(order, self._prices.quote(order.symbol))
            qty = order.remaining_qty() if price is not None else ZERO
            if price is None or qty <= 0:
                self._cancel(order, now)
            elif not self._affordable(order, qty, price):
                self._finish_unfillable(order, now)
            else:
                self._fill(order, qty, price, now)

    def _roll_sessions(self, now: datetime) -> None:
        """At each session close: ``last_equity`` and ``lastday_price`` become today's."""
        rolled = False
        while self.next_roll <= now:
            view = self.account()
            self.last_equity = view.equity
            self.last_maintenance_margin = view.maintenance_margin
            self.history.append((self.next_roll, view.equity))
            del self.history[:-HISTORY_SIZE]
            self._prices.roll_day()
            self.next_roll = self._clock.next_close(self.next_roll)
            rolled = True
        if rolled:
            log.info("sim.session.rolled", last_equity=str(self.last_equity))
            self._save_account()

    def _match_one(self, order: SimOrder, now: datetime, quote: Quote) -> bool:
        """Try to fill ``order`` at ``quote``; True if it was partially filled and stays open."""
        order.passes += 1
        price = self._executable_price(order, quote)
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
        if not self._config.cash_account and self._config.shorting_enabled:
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
            self._settle_legs(order, now)

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, now: datetime) -> None:
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        self._apply_position(order.symbol, signed, price)
        order.filled_qty += qty
        order.filled_value += qty * price
        done = order.notional is not None or order.filled_qty >= (order.qty or ZERO)
        group = self._exit_group(order)
        if len(group) > 1 and order.qty is not None:
            done = done or sum((o.filled_qty for o in group), ZERO) >= order.qty
        order.status = "filled" if done else "partially_filled"
        if done:
            order.filled_at = now
        position_qty = self.position_qty(order.symbol)
        execution_id = str(uuid.UUID(int=order.fill_rng.getrandbits(128), version=4))
        log.info(
            "sim.order.filled" if done else "sim.order.partially_filled",
            order_id=order.id,
            qty=str(qty),
            price=str(price),
            position_qty=str(position_qty),
        )
        activity = {
            "id": f"{now.strftime('%Y%m%d%H%M%S%f')}::{execution_id}",
            "activity_type": "FILL",
            "transaction_time": ts(now),
            "type": "fill" if done else "partial_fill",
            "price": dec(price),
            "qty": dec(qty),
            "side": order.side,
            "symbol": order.symbol,
            "leaves_qty": dec(max(order.remaining_qty(), ZERO)) if not done else "0",
            "order_id": order.id,
            "cum_qty": dec(order.filled_qty),
            "order_status": order.status,
            # "Null for trading activities" (the spec); it also tells the two kinds apart.
            "created_at": None,
        }
        self.activities.append(activity)
        if self._store is not None:
            position = self.positions.get(order.symbol)
            self._store.save_fill(
                order=order.to_record(),
                position=(order.symbol, str(position.qty), str(position.avg_entry_price))
                if position is not None
                else (order.symbol, None, None),
                activity=activity,
                account=self.account_record(),
            )
        self._event(
            "fill" if done else "partial_fill",
            order,
            now,
            price=price,
            qty=qty,
            position_qty=position_qty,
            execution_id=execution_id,
        )
        if done:
            self._settle_legs(order, now)

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


def _crossing_price(side: str, order_type: str, limit_price: Decimal | None) -> Decimal:
    """The price at which an order would trade against the opposite side (wash check)."""
    if order_type in {"limit", "stop_limit"} and limit_price is not None:
        return limit_price
    return Decimal("Infinity") if side == "buy" else ZERO


def _qty_for(notional: Decimal | None, price: Decimal) -> Decimal:
    if notional is None or price <= 0:
        return ZERO
    return (notional / price).quantize(QTY_STEP, ROUND_DOWN)
