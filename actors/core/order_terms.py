"""What an order intent amounts to: its reference price, size, and whether it opens.

The definitions (opening vs reducing, the reference price, a usable quote) are the
ones :mod:`actors.core.risk_limits` documents; strategies rely on them.
"""

from __future__ import annotations

import msgspec

from actors.core.limit_bounds import tolerance
from actors.core.risk_views import Quote, StrategyView
from protocol.messages import OrderIntent

__all__ = ["OrderTerms", "order_terms", "reference_price", "usable_quote"]


class OrderTerms(msgspec.Struct, frozen=True, kw_only=True):
    """What an intent amounts to, given the strategy's position and the quote.

    The guardian can reuse it after acceptance (to reserve exposure, or to
    compare the notional with ``approval_above_notional``).

    Attributes:
        reference_price: the price the checks use; None without one.
        qty: shares; None for a ``notional`` intent without a reference price.
        notional: ``qty * reference``; None when neither is known.
        opening: whether the order opens or increases a position (see
            :mod:`actors.core.risk_limits`).
        opening_qty: the part of ``qty`` beyond what reduces the position.
        added_exposure: ``opening_qty * reference``; the full notional when
            ``qty`` is unknown; None when the notional is unknown.
    """

    reference_price: float | None
    qty: float | None
    notional: float | None
    opening: bool
    opening_qty: float | None
    added_exposure: float | None


def usable_quote(quote: Quote | None, now: float, max_age_s: float) -> Quote | None:
    """``quote`` if it can price an order at ``now``, else None.

    See "No usable quote" in :mod:`actors.core.risk_limits`.
    """
    if quote is None or quote.bid <= 0 or quote.ask < quote.bid:
        return None
    if now - quote.ts > max_age_s:
        return None
    return quote


def reference_price(intent: OrderIntent, quote: Quote | None) -> float | None:
    """The price the checks use for ``intent``; ``quote`` must be usable.

    See "Reference price" in :mod:`actors.core.risk_limits`.
    """
    if intent.limit_price is not None:
        return intent.limit_price
    if intent.stop_price is not None:
        return intent.stop_price
    if quote is None:
        return None
    return quote.ask if intent.side == "buy" else quote.bid


def _reducible_qty(intent: OrderIntent, strategy: StrategyView) -> float:
    position = strategy.positions.get(intent.symbol)
    if position is None:
        return 0.0
    if intent.side == "sell" and position.qty > 0:
        return max(0.0, position.qty - position.pending_sell_qty)
    if intent.side == "buy" and position.qty < 0:
        return max(0.0, -position.qty - position.pending_buy_qty)
    return 0.0


def order_terms(
    intent: OrderIntent, *, strategy_view: StrategyView, quote: Quote | None
) -> OrderTerms:
    """Price ``intent`` and classify it as opening or reducing; ``quote`` must be usable."""
    price = reference_price(intent, quote)
    qty = intent.qty
    notional = intent.notional
    if qty is None and notional is not None and price is not None:
        qty = notional / price
    elif qty is not None and price is not None:
        notional = qty * price
    if qty is None:
        # Unknown size: cannot prove it reduces, so it is opening at its full notional.
        return OrderTerms(
            reference_price=price,
            qty=None,
            notional=notional,
            opening=True,
            opening_qty=None,
            added_exposure=notional,
        )
    reducible = _reducible_qty(intent, strategy_view)
    opening_qty = qty - min(qty, reducible)
    # A tiny float residue of a full close must not turn it into an opening order.
    opening = opening_qty > tolerance(qty)
    if not opening:
        opening_qty = 0.0
    return OrderTerms(
        reference_price=price,
        qty=qty,
        notional=notional,
        opening=opening,
        opening_qty=opening_qty,
        added_exposure=None if price is None else opening_qty * price,
    )
