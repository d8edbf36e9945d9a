"""Pre-trade risk limits: pure, synchronous checks of one order intent.

The :class:`~actors.risk_guardian.RiskGuardian` builds immutable snapshots
(:class:`Quote`, :class:`StrategyView`, :class:`PortfolioView`) and calls
:func:`check_order`, which returns every limit the intent breaks as a
:class:`~protocol.messages.Reason` (empty list: the intent may trade). Nothing
here does I/O, reads a clock or keeps state, except :class:`IntentRateLimit` and
:class:`DuplicateDetector`, which take ``now`` explicitly.

This module is the specification and the entry point; the parts live beside it:
:mod:`~actors.core.risk_views` (the snapshots and the merged limits),
:mod:`~actors.core.order_terms` (reference price, size, opening or reducing),
:mod:`~actors.core.order_checks` (the checks of the order itself),
:mod:`~actors.core.opening_checks` (what blocks opening orders only),
:mod:`~actors.core.intent_admission` (rate and duplicates) and
:mod:`~actors.core.limit_bounds` (bounds with float tolerance). The snapshots, the
limits, the order terms, the rate limit and the duplicate detector are also importable
from here (see ``__all__``).

Definitions and decisions (they are part of the behaviour strategies see):

Opening vs reducing
    Only the strategy's *own* position in the symbol counts. An order is
    *reducing* when it is on the opposite side of that position and its
    quantity is at most the position minus the strategy's open orders on the
    same side as the new order (``sell qty <= long - open sells``,
    ``buy qty <= short - open buys``): even if every such open order fills
    first, it only shrinks the position towards zero and never crosses it.
    Everything else is *opening*, including a flip (selling more than the
    long): only the part beyond the reducible quantity adds exposure and risk,
    but the order as a whole is blocked wherever opening orders are blocked.
    A ``notional`` sell whose quantity cannot be estimated (no usable quote)
    counts as opening.

Reference price
    ``limit_price`` for ``limit`` and ``stop_limit``, ``stop_price`` for
    ``stop``, else the ask for a buy and the bid for a sell. Strategies can
    compute it themselves, and because every limit and stop price must lie
    within ``max_price_deviation`` of the mid, it is never further than that
    from the market. ``notional = qty * reference``, or the intent's own
    ``notional`` (then ``qty = notional / reference``).

No usable quote
    A quote is usable when it exists, has ``bid > 0``, ``ask >= bid`` and is
    at most ``quote_max_age_s`` old. Without one, *every* order (market or
    not, opening or reducing) is rejected with ``PRICE_DEVIATION``
    (``"no quote for AAPL within 10 s"``): a market order cannot be priced
    and a limit price cannot be checked against the market. The way out of a
    position during a data outage is the kill switch with ``flatten``. Checks
    that need a price the intent does not carry are then skipped, since the
    intent is rejected anyway.

Risk per trade and a missing ``stop_loss``
    ``risk = opening qty * |reference - stop_loss|`` must be at most
    ``max_risk_per_trade * equity``. A bracket's ``stop_loss`` is its broker-held
    stop leg and counts the same way. A ``trailing_stop`` without a ``stop_loss``
    risks its trail: ``opening qty * trail_price``, or ``opening qty * reference *
    trail_percent / 100``. Without a ``stop_loss`` nothing limits
    the loss of the position (gaps, halts, a dead strategy), so the whole
    opening notional counts as risk: un-stopped positions are allowed, but
    only up to ``max_risk_per_trade`` of equity; larger ones must say where
    their stop is. A ``stop_loss`` on the wrong side of the reference price
    (at or above it for a new long, at or below it for a new short) is a
    ``RISK_PER_TRADE`` rejection that says so.

What blocks what
    ``CIRCUIT_OPEN``, ``RESTRICTED_SYMBOL``, ``PRICE_DEVIATION`` and
    ``MAX_NOTIONAL`` (a fat-finger limit: closing a larger position takes
    several orders) apply to every order. All other limits block opening
    orders only, so that a strategy can always shrink its risk: that includes
    ``MIN_PRICE`` (a stock that fell below it must still be sellable),
    ``STRATEGY_PAUSED``, ``STRATEGY_DAILY_LOSS``, ``LOW_CONFIDENCE``
    (an exit carries no signal confidence), the drawdowns, the exposure
    limits and ``REDUCE_ONLY``.

Exposure
    ``STRATEGY_ALLOCATION``: the strategy's gross exposure (positions at
    market and open orders) plus the order's added exposure must be at most
    ``allocation * equity``. ``CAPITAL_DEPLOYED``: the account's gross
    exposure at market plus all pending opening orders plus the added exposure
    must be at most ``max_capital_deployed * equity``. ``MAX_POSITIONS``: an
    order in a symbol the account neither holds nor has a pending opening
    order in opens a new position; held symbols plus pending new symbols plus
    this one must be at most ``max_positions``.

Bounds
    Limits written "at most" pass at the bound; drawdowns and the daily loss
    reject at the bound ("reaches"; a drawdown limit of 0 means no loss at all is
    tolerated, not that trading is always off). Comparisons allow ``1e-9`` relative so a
    value equal to its bound up to float rounding counts as at the bound.
    With ``equity <= 0`` every equity-relative limit is broken.

The order of reasons is fixed: gates, then prices, then exposure.
"""

from __future__ import annotations

from actors.core.intent_admission import DuplicateDetector, IntentBucket, IntentRateLimit
from actors.core.opening_checks import exposure_reasons, opening_gate_reasons
from actors.core.order_checks import circuit_reasons, price_reasons, restricted_reasons
from actors.core.order_terms import OrderTerms, order_terms, reference_price, usable_quote
from actors.core.risk_views import (
    EffectiveLimits,
    PortfolioView,
    PositionView,
    Quote,
    StrategyView,
    effective_limits,
)
from protocol.messages import CircuitState, OrderIntent, Reason

__all__ = [
    "DuplicateDetector",
    "EffectiveLimits",
    "IntentBucket",
    "IntentRateLimit",
    "OrderTerms",
    "PortfolioView",
    "PositionView",
    "Quote",
    "StrategyView",
    "check_order",
    "effective_limits",
    "order_terms",
    "reference_price",
    "usable_quote",
]


def check_order(
    intent: OrderIntent,
    *,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
    quote: Quote | None,
    now: float,
    circuit: CircuitState,
    reduce_only: bool,
) -> list[Reason]:
    """Every limit ``intent`` breaks; an empty list means it may trade.

    Args:
        intent: the decoded order intent.
        limits: the strategy's effective limits.
        strategy_view: the strategy's exposure, P&L, pause flag and positions.
        portfolio: the account's equity, baselines, exposure and positions.
        quote: the latest quote of ``intent.symbol``, if any (it may be stale).
        now: the decision time, epoch seconds.
        circuit: the circuit breaker's state; ``open`` rejects every order.
        reduce_only: whether only reducing orders may trade (``half_open``
            with ``reduce_only_on_warn``).

    Returns:
        One :class:`Reason` per broken limit, in a fixed order (see module doc).
    """
    live_quote = usable_quote(quote, now, limits.quote_max_age_s)
    terms = order_terms(intent, strategy_view=strategy_view, quote=live_quote)
    reasons = circuit_reasons(circuit)
    if terms.opening:
        reasons += opening_gate_reasons(
            intent,
            limits=limits,
            strategy_view=strategy_view,
            portfolio=portfolio,
            reduce_only=reduce_only,
        )
    reasons += restricted_reasons(intent, limits)
    reasons += price_reasons(
        intent,
        terms=terms,
        limits=limits,
        quote=quote,
        live_quote=live_quote,
        now=now,
        equity=portfolio.equity,
    )
    if terms.opening:
        reasons += exposure_reasons(
            intent.symbol,
            terms=terms,
            limits=limits,
            strategy_view=strategy_view,
            portfolio=portfolio,
        )
    return reasons
