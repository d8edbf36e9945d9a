"""Order entry: the checks that need the account, then the accepted order and its legs.

:class:`OrderEntry` adds :meth:`~OrderEntry.submit` to the engine state. A request
passes the pure rules of :mod:`sim.order_rules`, then the account's: the asset is
listed and active, no wash trade with an open order, the funds or shares are
there (shorting only on a margin account, for shortable, easy-to-borrow assets).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from sim.account import MIN_SHORT_EQUITY
from sim.engine_state import EngineState
from sim.errors import RequestRefusedError
from sim.order_rules import (
    check_extended_hours,
    check_market,
    check_order_class,
    check_prices,
    check_quantity,
    check_wash,
    qty_for,
    refuse,
    trail_amount,
    trail_stop,
    unprocessable,
)
from sim.orders import ZERO, SimOrder
from sim.wire import INVALID_REQUEST, OrderSpec, dec

if TYPE_CHECKING:
    from sim.assets import Asset
    from sim.clock import Phase
    from sim.prices import Quote
    from sim.wire import OrderTypeName, Side

log = structlog.get_logger(__name__)

GTC_LIFETIME = timedelta(days=90)


class OrderEntry(EngineState):
    """Accepts or refuses new orders (the engine state plus :meth:`submit`)."""

    def _asset(self, symbol: str) -> Asset:
        asset = self.assets.get(symbol) if self.assets.listed(symbol) else None
        if asset is None:
            raise RequestRefusedError(422, INVALID_REQUEST, f'asset "{symbol}" not found')
        if not asset.tradable:
            raise unprocessable(f"asset {symbol} is not active")
        return asset

    def _validate(self, spec: OrderSpec) -> Asset:
        """Every rule that needs no quote; returns the listed, active asset."""
        if self.configurations["suspend_trade"]:
            raise refuse("new orders are rejected: trading is suspended by the user")
        asset = self._asset(spec.symbol)
        fractional = check_quantity(
            spec, asset, fractional_trading=self.configurations["fractional_trading"]
        )
        check_prices(spec)
        check_extended_hours(spec)
        if spec.client_order_id is not None and spec.client_order_id in self._by_client_id:
            raise RequestRefusedError(422, INVALID_REQUEST, "client_order_id must be unique")
        check_order_class(spec, fractional=fractional)
        return asset

    def _check_wash(self, spec: OrderSpec, releasing: SimOrder | None) -> None:
        """Refuse an order that could trade against one of the account's own open orders."""
        own_group = set()
        if releasing is not None:
            own_group = {o.id for o in self._exit_group(releasing)} | {releasing.id}
        check_wash(spec, self.open_orders(), own_group)

    def _check_funds(
        self, spec: OrderSpec, asset: Asset, quote: Quote, releasing: SimOrder | None
    ) -> None:
        if spec.side == "buy":
            self._check_buy(spec, asset, quote, releasing)
            return
        requested = spec.qty if spec.qty is not None else qty_for(spec.notional, quote.bid)
        existing = self.position_qty(spec.symbol)
        held = self.sell_holds(spec.symbol, releasing)
        available = max(existing, ZERO) - held
        if requested <= available:
            return
        if self._config.cash_account or not self._config.shorting_enabled:
            raise refuse(
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
            raise refuse("account is not allowed to short")
        if short_qty != short_qty.to_integral_value():
            raise refuse("fractional orders are not allowed to short")
        if not asset.shortable:
            raise unprocessable(f"asset {spec.symbol} cannot be sold short")
        if not asset.easy_to_borrow:
            raise refuse(
                f"cannot open a short position in {spec.symbol}: the asset is hard to borrow"
            )
        short_value = short_qty * quote.bid
        if short_value > view.buying_power:
            raise refuse(
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
                price = quote.ask + trail_amount(quote.ask, spec)
            cost = (spec.qty or ZERO) * price
        covering = min(spec.qty or ZERO, max(-self.position_qty(spec.symbol), ZERO))
        cost -= covering * quote.ask
        view = self.account(exclude_hold=releasing)
        buying_power = view.buying_power if asset.marginable else view.non_marginable_buying_power
        if cost > buying_power:
            raise refuse(
                "insufficient buying power",
                {"buying_power": dec(buying_power) or "0", "cost_basis": dec(cost) or "0"},
            )

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
        check_market(spec, quote)
        self._check_wash(spec, releasing)
        self._check_funds(spec, asset, quote, releasing)
        now = self._clock.now()
        order = self._new_order(spec, now, releasing)
        if spec.type == "trailing_stop":
            order.hwm = quote.bid if spec.side == "sell" else quote.ask
            order.stop_price = trail_stop(order)
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
