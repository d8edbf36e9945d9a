"""Order rules that need no account state: the shape of a request, its prices, its class.

Pure functions: each takes the request (and the quote where the rule depends on
the market) and raises :class:`~sim.errors.RequestRefusedError` worded as Alpaca
words it, or returns. The matching engine runs them before it looks at the
account (funds, shares, wash trades).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from sim.errors import RequestRefusedError
from sim.orders import CENT, PRICE_STEP, QTY_STEP, ZERO
from sim.wire import FORBIDDEN, UNPROCESSABLE, dec, invalid

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sim.assets import Asset
    from sim.orders import SimOrder
    from sim.prices import Quote
    from sim.wire import OrderSpec

MIN_ORDER_VALUE = Decimal(1)


def refuse(message: str, extra: dict[str, str] | None = None) -> RequestRefusedError:
    """A 403 refusal (funds, shares, shorting, account settings)."""
    return RequestRefusedError(403, FORBIDDEN, message, extra)


def unprocessable(message: str, extra: dict[str, str] | None = None) -> RequestRefusedError:
    """A 422 refusal of a well-formed request the market or the asset does not allow."""
    return RequestRefusedError(422, UNPROCESSABLE, message, extra)


def tick_size(price: Decimal) -> Decimal:
    """The price increment allowed at ``price``: a cent, or 1/100 cent under $1."""
    return CENT if price >= 1 else PRICE_STEP


def check_increment(name: str, price: Decimal | None) -> None:
    """Refuse a sub-penny ``price`` (field ``name``)."""
    if price is not None and price > 0 and price % tick_size(price) != 0:
        raise unprocessable(
            f"invalid {name} {dec(price)}. sub-penny increment does not fulfill "
            "minimum pricing criteria"
        )


def check_quantity(  # noqa: C901 - one rule per branch
    spec: OrderSpec, asset: Asset, *, fractional_trading: bool
) -> bool:
    """Check ``qty`` / ``notional``; returns whether the order is fractional."""
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
        raise unprocessable(f"asset {spec.symbol} is not fractionable")
    if fractional and not fractional_trading:
        raise refuse("fractional trading is disabled for this account")
    return fractional


def check_extended_hours(spec: OrderSpec) -> None:
    """Only simple DAY or GTC limit orders may trade outside the regular session."""
    if spec.extended_hours and (
        spec.type != "limit"
        or spec.time_in_force not in {"day", "gtc"}
        or spec.order_class != "simple"
    ):
        raise invalid("extended hours order must be DAY or GTC limit orders")


def check_prices(spec: OrderSpec) -> None:  # noqa: C901 - one rule per branch
    """Limit, stop and trail prices: present where the type needs them, positive, no sub-pennies."""
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
        check_increment(name, price)


def check_order_class(spec: OrderSpec, *, fractional: bool) -> None:
    """Bracket, OTO and OCO orders: whole shares, DAY or GTC, the legs their class needs."""
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


def check_market(spec: OrderSpec, quote: Quote) -> None:
    """Rules that depend on the current price: stop side, leg prices, minimum value."""
    if spec.type in {"stop", "stop_limit"} and spec.stop_price is not None:
        if spec.side == "buy" and spec.stop_price <= quote.bid:
            raise unprocessable(
                f"stop price must be above the current price {dec(quote.bid)} for buy stop orders"
            )
        if spec.side == "sell" and spec.stop_price >= quote.ask:
            raise unprocessable(
                f"stop price must be below the current price {dec(quote.ask)} for sell stop orders"
            )
    if spec.order_class != "simple":
        check_leg_prices(spec, quote)
    touch = quote.ask if spec.side == "buy" else quote.bid
    value = spec.notional
    if value is None and spec.qty is not None and spec.qty != spec.qty.to_integral_value():
        value = spec.qty * (spec.limit_price or touch)
    if value is not None and value < MIN_ORDER_VALUE:
        raise refuse("cost basis must be >= 1")


def check_leg_prices(spec: OrderSpec, quote: Quote) -> None:
    """Take-profit and stop-loss on the right side of the entry (or of each other: OCO)."""
    take_profit, stop = spec.take_profit, spec.stop_loss_stop
    if spec.order_class == "oco":
        if take_profit is not None and stop is not None:
            wrong = take_profit <= stop if spec.side == "sell" else take_profit >= stop
            if wrong:
                relation = ">" if spec.side == "sell" else "<"
                raise unprocessable(
                    f"take_profit.limit_price must be {relation} stop_loss.stop_price"
                )
        return
    base = spec.limit_price or (quote.ask if spec.side == "buy" else quote.bid)
    sign = 1 if spec.side == "buy" else -1
    if take_profit is not None and sign * (take_profit - base) < CENT:
        relation = ">=" if sign > 0 else "<="
        op = "+" if sign > 0 else "-"
        raise unprocessable(
            f"take_profit.limit_price must be {relation} base_price {op} 0.01",
            {"base_price": dec(base) or "0"},
        )
    if stop is not None and sign * (base - stop) < CENT:
        relation = "<=" if sign > 0 else ">="
        op = "-" if sign > 0 else "+"
        raise unprocessable(
            f"stop_loss.stop_price must be {relation} base_price {op} 0.01",
            {"base_price": dec(base) or "0"},
        )


def check_replacement_prices(
    old: SimOrder, *, limit_price: Decimal | None, stop_price: Decimal | None
) -> None:
    """New prices for one order of a bracket, OTO or OCO: only those it has, valid ones."""
    if limit_price is not None and old.limit_price is None:
        raise invalid(f"limit_price is not allowed for {old.type} orders")
    if stop_price is not None and old.stop_price is None:
        raise invalid(f"stop_price is not allowed for {old.type} orders")
    for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
        if price is not None and price <= 0:
            raise invalid(f"{name} must be > 0")
        check_increment(name, price)


def check_wash(spec: OrderSpec, open_orders: Iterable[SimOrder], own_group: set[str]) -> None:
    """Refuse an order that could trade against one of the account's own open orders.

    Args:
        spec: The new order.
        open_orders: The account's open orders.
        own_group: Ids of orders ``spec`` replaces (with their one-cancels-other group).
    """
    mine = crossing_price(spec.side, spec.type, spec.limit_price)
    for order in open_orders:
        if (
            order.symbol != spec.symbol
            or order.side == spec.side
            or order.status in {"held", "pending_cancel", "pending_replace"}
            or order.id in own_group
        ):
            continue
        theirs = crossing_price(order.side, order.type, order.limit_price)
        buy, sell = (mine, theirs) if spec.side == "buy" else (theirs, mine)
        if buy >= sell:
            limit_only = spec.type == "limit" and order.type == "limit"
            reason = (
                "opposite side limit order exists"
                if limit_only
                else "opposite side market/stop order exists"
            )
            raise unprocessable(
                "potential wash trade detected. use complex orders",
                {"existing_order_id": order.id, "reject_reason": reason},
            )


def crossing_price(side: str, order_type: str, limit_price: Decimal | None) -> Decimal:
    """The price at which an order would trade against the opposite side (wash check)."""
    if order_type in {"limit", "stop_limit"} and limit_price is not None:
        return limit_price
    return Decimal("Infinity") if side == "buy" else ZERO


def trail_amount(reference: Decimal, spec: OrderSpec | SimOrder) -> Decimal:
    """How far a trailing stop sits from ``reference`` (its trail price, or percent of it)."""
    if spec.trail_price is not None:
        return spec.trail_price
    return (reference * (spec.trail_percent or ZERO) / 100).quantize(CENT, ROUND_HALF_UP)


def trail_stop(order: SimOrder) -> Decimal:
    """A trailing stop's stop price from its high-water mark (at least a cent)."""
    hwm = order.hwm or ZERO
    amount = trail_amount(hwm, order)
    stop = hwm - amount if order.side == "sell" else hwm + amount
    return max(stop.quantize(CENT, ROUND_HALF_UP), CENT)


def qty_for(notional: Decimal | None, price: Decimal) -> Decimal:
    """Whole and fractional shares ``notional`` dollars buy at ``price`` (rounded down)."""
    if notional is None or price <= 0:
        return ZERO
    return (notional / price).quantize(QTY_STEP, ROUND_DOWN)
