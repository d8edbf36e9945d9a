"""The matching engine's state: the account, its orders and positions, and their persistence.

:class:`EngineState` is the base of :class:`~sim.engine.MatchingEngine`. It opens
(or resumes) the account, looks orders up, values the account and hands every
change to the store and every trade event to the ``on_event`` callback. The
layers above it change orders: :mod:`sim.order_entry` (submit),
:mod:`sim.cancel_replace` (cancel, replace, legs) and :mod:`sim.matching` (fills).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import structlog

from sim.account import (
    DEFAULT_CONFIGURATIONS,
    AccountView,
    BuyHolds,
    SimPosition,
    account_view,
    configured,
    margin_multiplier,
)
from sim.assets import AssetBook
from sim.errors import RequestRefusedError
from sim.order_rules import qty_for
from sim.orders import ZERO, SimOrder, TradeEvent
from sim.wire import NOT_FOUND, dec, ts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sim.clock import MarketClock
    from sim.config import SimConfig
    from sim.orders import EventName
    from sim.prices import PriceModel
    from sim.store import StoredState, VenueStore

log = structlog.get_logger(__name__)


class EngineState:
    """The account, its orders and positions; persistence and trade events.

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

    def reset(self) -> None:
        """Wipe orders and positions and restore starting cash (a new account id)."""
        self.account_id = str(uuid.uuid4())
        self.account_number = f"PA{uuid.uuid4().int % 10**10:010d}"
        self.created_at = self._clock.now()
        self.cash = Decimal(repr(self._config.starting_cash))
        self.positions: dict[str, SimPosition] = {}
        self.orders: dict[str, SimOrder] = {}
        self._by_client_id: dict[str, SimOrder] = {}
        self._holds = BuyHolds()
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
        self._holds = BuyHolds()
        for record in stored.orders:
            order = SimOrder.from_record(record, self._config.seed)
            self.orders[order.id] = order
            self._by_client_id[order.client_order_id] = order
            self._holds.update(order)
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
        """Every change to an order ends here: count its hold anew, persist it."""
        self._holds.update(order)
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
        return self._holds.total(lambda symbol: self._prices.quote(symbol).ask, exclude)

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
                held += qty_for(order.remaining_notional, self._prices.quote(symbol).bid)
            else:
                held += order.remaining_qty()
        return held

    def multiplier(self) -> int:
        """Margin multiplier: 1 (cash), 2, or 4 at or above $25,000 of last equity."""
        return margin_multiplier(
            cash_account=self._config.cash_account,
            configurations=self.configurations,
            last_equity=self.last_equity,
        )

    def account(self, exclude_hold: SimOrder | None = None) -> AccountView:
        """Cash, market values, equity, margin and buying power right now."""
        marks = {symbol: self.mark(symbol) for symbol in self.positions}
        holds = self._buy_holds(exclude_hold)
        return account_view(
            self.cash, self.positions, marks, holds=holds, multiplier=self.multiplier()
        )

    def configure(self, changes: object) -> dict[str, Any]:
        """Apply a ``PATCH /v2/account/configurations`` body; returns the configuration.

        Raises:
            RequestRefusedError: 422 naming the first invalid field.
        """
        updated = configured(self.configurations, changes)
        self.configurations = updated
        self._save_account()
        log.info("sim.account.configured", changes=sorted(cast("dict[str, Any]", changes)))
        return dict(updated)

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
