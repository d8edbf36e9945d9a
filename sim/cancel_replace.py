"""Cancel, reject and replace, and what they do to the legs of bracket, OTO and OCO orders.

:class:`CancelReplace` adds the client's cancel and replace requests (and the
exchange's late reject) to order entry. When an order ends, its group follows:
a filled entry releases its held legs, an entry that ends without fills cancels
them, and one order of a one-cancels-other pair ending cancels the other.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from typing import TYPE_CHECKING

import structlog

from sim.errors import RequestRefusedError
from sim.order_entry import OrderEntry
from sim.order_rules import check_replacement_prices
from sim.wire import INVALID_REQUEST, NOT_CANCELABLE, OrderSpec, invalid

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    from sim.orders import SimOrder
    from sim.wire import TimeInForceName

log = structlog.get_logger(__name__)


class CancelReplace(OrderEntry):
    """Order entry plus cancel, replace and late rejects, with their effect on order groups."""

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
        spec = replacement_spec(
            old,
            qty=qty,
            limit_price=limit_price,
            stop_price=stop_price,
            trail=trail,
            time_in_force=time_in_force,
            client_order_id=client_order_id,
        )
        now = self._clock.now()
        new = self.submit(spec, releasing=old)
        self._retire_replaced(old, new, now)
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
        check_replacement_prices(old, limit_price=limit_price, stop_price=stop_price)
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
        self._take_place_in_group(old, new)
        status, new.status = new.status, "pending_new"
        if self._config.emit_pending_new and old.parent_id is None:
            self._event("pending_new", new, now)
        new.status = status
        if status in {"new", "partially_filled"}:
            self._event("new", new, now)
        else:
            self._changed(new)
        self._retire_replaced(old, new, now)
        return new

    def _take_place_in_group(self, old: SimOrder, new: SimOrder) -> None:
        """``new`` replaces ``old`` among its parent's legs, or as the parent of its legs."""
        if old.parent_id is not None:
            parent = self.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
            self._changed(parent)
        for leg in self.legs_of(new):
            leg.parent_id = new.id
            self._changed(leg)
        old.leg_ids = []

    def _retire_replaced(self, old: SimOrder, new: SimOrder, now: datetime) -> None:
        """``old`` ends as ``replaced`` by ``new`` (events ``pending_replace``, ``replaced``)."""
        old.status = "pending_replace"
        self._event("pending_replace", old, now)
        old.status = "replaced"
        old.replaced_at = now
        old.replaced_by = new.id
        log.info("sim.order.replaced", order_id=old.id, replaced_by=new.id)
        self._event("replaced", old, now)

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


def replacement_spec(
    old: SimOrder,
    *,
    qty: Decimal | None,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    trail: Decimal | None,
    time_in_force: TimeInForceName | None,
    client_order_id: str | None,
) -> OrderSpec:
    """The request a simple order's replacement is submitted as (unset fields: the old ones)."""
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
    return OrderSpec(
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
