"""The paper account's money: positions, margin, buying power and account configurations.

Pure functions over plain values: the matching engine owns the state and calls
these to value it (:func:`account_view`), to book a fill into the positions
(:func:`apply_fill`) and to check a configuration change (:func:`configured`).
:class:`BuyHolds` keeps the money held for open buy orders up to date order by
order, so that valuing the account does not walk every open order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sim.orders import ZERO
from sim.wire import invalid

if TYPE_CHECKING:
    from collections.abc import Callable

    from sim.orders import SimOrder

PDT_EQUITY = Decimal(25_000)
MIN_SHORT_EQUITY = Decimal(2_000)
INITIAL_MARGIN = Decimal("0.5")
MAINTENANCE_MARGIN = Decimal("0.3")
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


class BuyHolds:
    """Money held for open buy orders, kept up to date as each order changes.

    A limit or stop-limit buy holds its remaining shares at its limit, a notional
    buy its remaining notional: those are dollar amounts, summed as they change.
    Other buys (market, stop, trailing stop) hold their remaining shares at the
    current ask, so their shares are summed per symbol and priced when asked.
    Orders that are final, sells and the legs of bracket, OTO and OCO orders hold
    nothing. The sums are exact decimals: the total equals a walk over the open
    orders, at any count of them.
    """

    def __init__(self) -> None:
        """Start with no holds."""
        self._dollars = ZERO
        self._shares: dict[str, Decimal] = {}
        self._by_order: dict[str, tuple[str | None, Decimal]] = {}
        """Each holding order's part: (None, dollars) or (symbol, shares at the ask)."""

    def update(self, order: SimOrder) -> None:
        """Count ``order`` as it is now (call after every change to it)."""
        previous = self._by_order.pop(order.id, None)
        if previous is not None:
            self._add(*previous, sign=-1)
        held = _hold_of(order)
        if held is not None:
            self._by_order[order.id] = held
            self._add(*held, sign=1)

    def total(self, ask: Callable[[str], Decimal], exclude: SimOrder | None = None) -> Decimal:
        """Money held now, ``ask`` pricing the shares held at the ask.

        Args:
            ask: The current ask of a symbol.
            exclude: An order whose hold does not count (the order being replaced).
        """
        dollars, shares = self._dollars, self._shares
        excluded = self._by_order.get(exclude.id) if exclude is not None else None
        if excluded is not None:
            symbol, amount = excluded
            if symbol is None:
                dollars -= amount
            else:
                shares = {**shares, symbol: shares[symbol] - amount}
        return dollars + sum((qty * ask(s) for s, qty in shares.items() if qty != 0), ZERO)

    def _add(self, symbol: str | None, amount: Decimal, *, sign: int) -> None:
        if symbol is None:
            self._dollars += sign * amount
            return
        shares = self._shares.get(symbol, ZERO) + sign * amount
        if shares == 0:
            self._shares.pop(symbol, None)
        else:
            self._shares[symbol] = shares


def _hold_of(order: SimOrder) -> tuple[str | None, Decimal] | None:
    """What ``order`` holds: (None, dollars), (symbol, shares at the ask), or None."""
    if order.is_final or order.side != "buy" or order.parent_id is not None:
        return None
    if order.notional is not None:
        return None, order.remaining_notional
    price = order.limit_price if order.type in {"limit", "stop_limit"} else None
    if price is None:
        return order.symbol, order.remaining_qty()
    return None, order.remaining_qty() * price


def margin_multiplier(
    *, cash_account: bool, configurations: dict[str, Any], last_equity: Decimal
) -> int:
    """Margin multiplier: 1 (cash), 2, or 4 at or above $25,000 of last equity."""
    if cash_account:
        return 1
    allowed = int(configurations["max_margin_multiplier"])
    if allowed >= 4 and last_equity >= PDT_EQUITY:
        return 4
    return min(allowed, 2)


def market_values(
    positions: dict[str, SimPosition], marks: dict[str, Decimal]
) -> tuple[Decimal, Decimal]:
    """Long and short (negative) market value of ``positions`` at ``marks``."""
    long_mv = short_mv = ZERO
    for symbol, position in positions.items():
        value = position.qty * marks[symbol]
        if value >= 0:
            long_mv += value
        else:
            short_mv += value
    return long_mv, short_mv


def account_view(
    cash: Decimal,
    positions: dict[str, SimPosition],
    marks: dict[str, Decimal],
    *,
    holds: Decimal,
    multiplier: int,
) -> AccountView:
    """Cash, market values, equity, margin and buying power.

    Args:
        cash: Cash balance (negative when borrowing).
        positions: Open positions by symbol.
        marks: Mark price of every position's symbol.
        holds: Money held for open buy orders.
        multiplier: From :func:`margin_multiplier`.
    """
    long_mv, short_mv = market_values(positions, marks)
    equity = cash + long_mv + short_mv
    gross = long_mv - short_mv
    if multiplier == 1:
        buying_power = regt = non_marginable = equity - long_mv + short_mv - holds
        daytrading = ZERO
    else:
        regt = 2 * equity - gross - holds
        daytrading = 4 * equity - gross - holds if multiplier == 4 else ZERO
        buying_power = daytrading if multiplier == 4 else regt
        non_marginable = regt / 2
    return AccountView(
        cash=cash,
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


def apply_fill(
    positions: dict[str, SimPosition], symbol: str, signed_qty: Decimal, price: Decimal
) -> None:
    """Book a fill of ``signed_qty`` (negative: sold) at ``price`` into ``positions``."""
    position = positions.get(symbol)
    if position is None:
        positions[symbol] = SimPosition(symbol, signed_qty, price)
        return
    new_qty = position.qty + signed_qty
    if new_qty == 0:
        del positions[symbol]
    elif position.qty * signed_qty > 0:
        total = position.qty * position.avg_entry_price + signed_qty * price
        position.avg_entry_price = total / new_qty
        position.qty = new_qty
    elif position.qty * new_qty > 0:
        position.qty = new_qty
    else:
        position.qty = new_qty
        position.avg_entry_price = price


def configured(current: dict[str, Any], changes: object) -> dict[str, Any]:
    """``current`` with a ``PATCH /v2/account/configurations`` body applied.

    Raises:
        RequestRefusedError: 422 naming the first invalid field.
    """
    if not isinstance(changes, dict):
        raise invalid("request body must be a JSON object")
    updated = dict(current)
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
    return updated
