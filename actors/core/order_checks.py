"""The checks of one order on its own: circuit, restricted symbols, prices, notional, risk.

``CIRCUIT_OPEN``, ``RESTRICTED_SYMBOL``, ``PRICE_DEVIATION`` and ``MAX_NOTIONAL``
apply to every order; ``MIN_PRICE`` and ``RISK_PER_TRADE`` to opening orders only.
The definitions are those of :mod:`actors.core.risk_limits`. Each check returns the
reasons it finds, in the fixed order :func:`~actors.core.risk_limits.check_order` keeps.
"""

from __future__ import annotations

from actors.core.limit_bounds import above, below
from actors.core.order_terms import OrderTerms
from actors.core.risk_views import EffectiveLimits, Quote
from protocol.messages import CircuitState, OrderIntent, Reason
from protocol.reasons import ReasonCode

__all__ = ["circuit_reasons", "price_reasons", "restricted_reasons"]


def circuit_reasons(circuit: CircuitState) -> list[Reason]:
    """``CIRCUIT_OPEN`` when the circuit breaker is open."""
    if circuit != "open":
        return []
    return [
        Reason(
            code=ReasonCode.CIRCUIT_OPEN,
            message="circuit breaker is open: no orders until `tradeguard reset-circuit`",
        )
    ]


def restricted_reasons(intent: OrderIntent, limits: EffectiveLimits) -> list[Reason]:
    """``RESTRICTED_SYMBOL`` when the strategy may not trade ``intent.symbol``."""
    if intent.symbol not in limits.restricted_symbols:
        return []
    return [
        Reason(code=ReasonCode.RESTRICTED_SYMBOL, message=f"{intent.symbol} is a restricted symbol")
    ]


def price_reasons(
    intent: OrderIntent,
    *,
    terms: OrderTerms,
    limits: EffectiveLimits,
    quote: Quote | None,
    live_quote: Quote | None,
    now: float,
    equity: float,
) -> list[Reason]:
    """Quote, deviation, minimum price, notional and risk per trade, in that order.

    Args:
        intent: the order intent.
        terms: what it amounts to (priced with ``live_quote``).
        limits: the strategy's effective limits.
        quote: the latest quote, usable or not (for the message when it is not).
        live_quote: ``quote`` if usable, else None.
        now: the decision time, epoch seconds.
        equity: the account equity the risk per trade is relative to.
    """
    reasons = _quote_reasons(intent, limits, quote, live_quote, now)
    price_ref = terms.reference_price
    if terms.opening and price_ref is not None and below(price_ref, limits.min_price):
        reasons.append(
            Reason(
                code=ReasonCode.MIN_PRICE,
                message=f"price {price_ref:.2f} < minimum {limits.min_price:.2f}",
            )
        )
    notional = terms.notional
    if notional is not None and above(notional, limits.max_notional):
        reasons.append(
            Reason(
                code=ReasonCode.MAX_NOTIONAL,
                message=f"notional {notional:.2f} > limit {limits.max_notional:.2f}",
            )
        )
    if terms.opening and price_ref is not None and terms.opening_qty is not None:
        message = _risk_message(intent, price_ref, terms.opening_qty, limits, equity)
        if message is not None:
            reasons.append(Reason(code=ReasonCode.RISK_PER_TRADE, message=message))
    return reasons


def _quote_reasons(
    intent: OrderIntent,
    limits: EffectiveLimits,
    quote: Quote | None,
    live_quote: Quote | None,
    now: float,
) -> list[Reason]:
    """``PRICE_DEVIATION``: no usable quote, or a limit or stop price too far from the mid."""
    if live_quote is None:
        return [
            Reason(
                code=ReasonCode.PRICE_DEVIATION,
                message=_no_quote_message(intent.symbol, quote, now, limits.quote_max_age_s),
            )
        ]
    reasons: list[Reason] = []
    mid = live_quote.mid
    allowed = limits.max_price_deviation * mid
    for name, price in (("limit_price", intent.limit_price), ("stop_price", intent.stop_price)):
        if price is not None and above(abs(price - mid), allowed):
            reasons.append(
                Reason(
                    code=ReasonCode.PRICE_DEVIATION,
                    message=f"{name} {price:.2f} is {abs(price - mid) / mid:.2%} "
                    f"from mid {mid:.2f} (limit {limits.max_price_deviation:.2%})",
                )
            )
    return reasons


def _no_quote_message(symbol: str, quote: Quote | None, now: float, max_age_s: float) -> str:
    if quote is not None and quote.bid > 0 and quote.ask >= quote.bid:
        return (
            f"no quote for {symbol} within {max_age_s:g} s (latest is {now - quote.ts:.1f} s old)"
        )
    if quote is not None:
        return f"no usable quote for {symbol} (bid {quote.bid:.2f}, ask {quote.ask:.2f})"
    return f"no quote for {symbol} within {max_age_s:g} s"


def _risk_message(
    intent: OrderIntent,
    entry: float,
    opening_qty: float,
    limits: EffectiveLimits,
    equity: float,
) -> str | None:
    """The ``RISK_PER_TRADE`` message, or None when the trade's risk is within the limit."""
    allowed = limits.max_risk_per_trade * equity
    stop = intent.stop_loss
    trail = _trail_distance(intent, entry)
    if stop is None and trail is not None:
        risk = opening_qty * trail
        what = f"risk {risk:.2f} ({opening_qty:g} x {trail:.2f} trail)"
    elif stop is not None:
        # The opening part of a buy is a long, of a sell a short.
        if intent.side == "buy" and stop >= entry:
            return f"stop_loss {stop:.2f} is not below entry {entry:.2f} for a buy"
        if intent.side == "sell" and stop <= entry:
            return f"stop_loss {stop:.2f} is not above entry {entry:.2f} for a sell"
        risk = opening_qty * abs(entry - stop)
        what = f"risk {risk:.2f} ({opening_qty:g} x {abs(entry - stop):.2f} to stop_loss)"
    else:
        risk = opening_qty * entry
        what = f"no stop_loss: whole notional {risk:.2f} at risk"
    if equity > 0 and not above(risk, allowed):
        return None
    return f"{what} > limit {allowed:.2f} ({limits.max_risk_per_trade:.2%} of equity {equity:.2f})"


def _trail_distance(intent: OrderIntent, entry: float) -> float | None:
    """A trailing stop's distance from the reference price: its trail, in dollars."""
    if intent.trail_price is not None:
        return intent.trail_price
    if intent.trail_percent is not None:
        return entry * intent.trail_percent / 100
    return None
