"""Matching: each pass runs the auctions, rolls the session, expires orders and fills.

:class:`Matcher` adds :meth:`~Matcher.match` to the engine. Market orders fill at
the touch (ask for buys, bid for sells), limit orders when marketable, stops once
the touch crosses them; ``opg``/``cls`` orders only at their auction. A fill the
account can no longer pay for rejects the order (or cancels its remainder).
"""

from __future__ import annotations

import uuid
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

import structlog

from sim.account import apply_fill
from sim.cancel_replace import CancelReplace
from sim.order_rules import qty_for, trail_stop
from sim.orders import QTY_STEP, ZERO
from sim.wire import dec, ts

if TYPE_CHECKING:
    from datetime import datetime

    from sim.orders import SimOrder
    from sim.prices import Quote

log = structlog.get_logger(__name__)

HISTORY_SIZE = 1_000


class Matcher(CancelReplace):
    """Cancel and replace plus the matching pass: fills, auctions, expiry, session roll."""

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
            order.stop_price = trail_stop(order)
            self._changed(order)

    def _fill_qty(self, order: SimOrder, price: Decimal) -> Decimal:
        if order.notional is not None:
            return qty_for(order.remaining_notional, price)
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
        apply_fill(self.positions, order.symbol, signed, price)
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
        activity = fill_activity(order, qty, price, now, execution_id, done=done)
        self.activities.append(activity)
        self._save_fill(order, activity)
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

    def _save_fill(self, order: SimOrder, activity: dict[str, Any]) -> None:
        """Persist a fill: the order, the position, the activity and the account at once."""
        if self._store is None:
            return
        position = self.positions.get(order.symbol)
        self._store.save_fill(
            order=order.to_record(),
            position=(order.symbol, str(position.qty), str(position.avg_entry_price))
            if position is not None
            else (order.symbol, None, None),
            activity=activity,
            account=self.account_record(),
        )


def fill_activity(
    order: SimOrder,
    qty: Decimal,
    price: Decimal,
    now: datetime,
    execution_id: str,
    *,
    done: bool,
) -> dict[str, Any]:
    """The ``FILL`` account activity of one (partial) fill of ``order``."""
    return {
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
