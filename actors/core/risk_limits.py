"""Pre-trade risk limits: pure, synchronous checks of one order intent.

The :class:`~actors.risk_guardian.RiskGuardian` builds immutable snapshots
(:class:`Quote`, :class:`StrategyView`, :class:`PortfolioView`) and calls
:func:`check_order`, which returns every limit the intent breaks as a
:class:`~protocol.messages.Reason` (empty list: the intent may trade). Nothing
here does I/O, reads a clock or keeps state, except :class:`RateLimiter` and
:class:`DuplicateDetector`, which take ``now`` explicitly.

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

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

import msgspec

from actors.core.settings import RiskConfig, StrategyConfig
from protocol.messages import CircuitState, OrderIntent, Reason
from protocol.reasons import ReasonCode

__all__ = [
    "DuplicateDetector",
    "EffectiveLimits",
    "OrderTerms",
    "PortfolioView",
    "PositionView",
    "Quote",
    "RateLimiter",
    "StrategyView",
    "TokenBucket",
    "check_order",
    "effective_limits",
    "order_terms",
    "reference_price",
    "usable_quote",
]

_REL_TOL: Final = 1e-9


def _tol(bound: float) -> float:
    return _REL_TOL * max(abs(bound), 1.0)


def _above(value: float, bound: float) -> bool:
    """``value`` breaks an "at most ``bound``" limit."""
    return value > bound + _tol(bound)


def _below(value: float, bound: float) -> bool:
    """``value`` breaks an "at least ``bound``" limit."""
    return value < bound - _tol(bound)


def _reaches(value: float, bound: float) -> bool:
    """``value`` breaks a "must stay below ``bound``" limit (drawdowns, daily loss)."""
    return value >= bound - _tol(bound)


def _drawdown(base: float, equity: float) -> float:
    """Fractional fall of ``equity`` from ``base``; 0 for a gain or without a base."""
    if base <= 0:
        return 0.0
    return max(0.0, (base - equity) / base)


# --------------------------------------------------------------------------- snapshots


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """The latest top of book of one symbol; ``ts`` in epoch seconds."""

    bid: float
    ask: float
    ts: float

    @property
    def mid(self) -> float:
        """The mid price."""
        return (self.bid + self.ask) / 2


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """One strategy's position in one symbol.

    ``pending_buy_qty`` / ``pending_sell_qty`` are the unfilled quantities of
    the strategy's open orders in the symbol; they keep two "reducing" orders
    from flipping the position together.
    """

    qty: float
    avg_price: float
    market_price: float
    pending_buy_qty: float = 0.0
    pending_sell_qty: float = 0.0


class StrategyView(msgspec.Struct, frozen=True, kw_only=True):
    """One strategy at the moment of the check.

    Attributes:
        gross_exposure: sum of ``|qty| * market price`` of its positions plus
            the notional of its open opening orders.
        session_pnl: realized plus unrealized P&L since the session started
            (negative: a loss).
        paused: whether the strategy may only reduce.
        positions: symbol to position; flat symbols may be absent.
    """

    gross_exposure: float
    session_pnl: float
    paused: bool = False
    positions: Mapping[str, PositionView] = msgspec.field(default_factory=dict)


class PortfolioView(msgspec.Struct, frozen=True, kw_only=True):
    """The whole account at the moment of the check.

    Attributes:
        equity: current account equity.
        start_of_day_equity: equity when the trading session started.
        peak_equity: highest equity ever seen (persisted by the circuit breaker).
        gross_exposure: sum of ``|qty| * market price`` of every position.
        held_symbols: symbols with a non-zero account position.
        pending_opening: symbol to notional of open opening orders (all strategies).
    """

    equity: float
    start_of_day_equity: float
    peak_equity: float
    gross_exposure: float
    held_symbols: frozenset[str] = frozenset()
    pending_opening: Mapping[str, float] = msgspec.field(default_factory=dict)


# --------------------------------------------------------------------------- limits


class EffectiveLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one strategy: ``[risk]`` merged with its own table.

    Built once per strategy at start-up by :func:`effective_limits`.
    """

    # Order limits (a strategy may override them).
    max_notional: float
    min_price: float
    max_price_deviation: float
    max_risk_per_trade: float
    max_intent_age_s: float
    max_intents_per_second: float
    duplicate_window_s: float
    restricted_symbols: frozenset[str]
    # The strategy's own limits.
    allocation: float
    max_daily_loss: float
    min_confidence: float | None
    approval_above_notional: float | None
    # Account limits (``[risk]`` only).
    max_daily_drawdown: float
    max_total_drawdown: float
    max_capital_deployed: float
    max_positions: int
    quote_max_age_s: float


def effective_limits(risk: RiskConfig, strategy: StrategyConfig) -> EffectiveLimits:
    """Merge ``[risk]`` with one strategy's overrides.

    A value set in the strategy table replaces the ``[risk]`` one, except
    ``restricted_symbols``: the two lists are united, so that a strategy table
    can never lift a restriction the operator set for the whole account (a
    strategy that lists one extra symbol would otherwise silently un-restrict
    all the others).
    """

    def pick(override: float | None, default: float) -> float:
        return default if override is None else override

    restricted = {s.upper() for s in risk.restricted_symbols}
    restricted.update(s.upper() for s in strategy.restricted_symbols or ())
    return EffectiveLimits(
        max_notional=pick(strategy.max_notional, risk.max_notional),
        min_price=pick(strategy.min_price, risk.min_price),
        max_price_deviation=pick(strategy.max_price_deviation, risk.max_price_deviation),
        max_risk_per_trade=pick(strategy.max_risk_per_trade, risk.max_risk_per_trade),
        max_intent_age_s=pick(strategy.max_intent_age_s, risk.max_intent_age_s),
        max_intents_per_second=pick(strategy.max_intents_per_second, risk.max_intents_per_second),
        duplicate_window_s=pick(strategy.duplicate_window_s, risk.duplicate_window_s),
        restricted_symbols=frozenset(restricted),
        allocation=strategy.allocation,
        max_daily_loss=strategy.max_daily_loss,
        min_confidence=strategy.min_confidence,
        approval_above_notional=strategy.approval_above_notional,
        max_daily_drawdown=risk.max_daily_drawdown,
        max_total_drawdown=risk.max_total_drawdown,
        max_capital_deployed=risk.max_capital_deployed,
        max_positions=risk.max_positions,
        quote_max_age_s=risk.quote_max_age_s,
    )


# --------------------------------------------------------------------------- order terms


class OrderTerms(msgspec.Struct, frozen=True, kw_only=True):
    """What an intent amounts to, given the strategy's position and the quote.

    The guardian can reuse it after acceptance (to reserve exposure, or to
    compare the notional with ``approval_above_notional``).

    Attributes:
        reference_price: the price the checks use; None without one.
        qty: shares; None for a ``notional`` intent without a reference price.
        notional: ``qty * reference``; None when neither is known.
        opening: whether the order opens or increases a position (see module doc).
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
    """``quote`` if it can price an order at ``now``, else None (see module doc)."""
    if quote is None or quote.bid <= 0 or quote.ask < quote.bid:
        return None
    if now - quote.ts > max_age_s:
        return None
    return quote


def reference_price(intent: OrderIntent, quote: Quote | None) -> float | None:
    """The price the checks use for ``intent`` (see module doc); ``quote`` must be usable."""
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
    opening = opening_qty > _tol(qty)
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


# --------------------------------------------------------------------------- the check


def _reason(code: ReasonCode, message: str) -> Reason:
    return Reason(code=code, message=message)


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
    reasons: list[Reason] = []
    live_quote = usable_quote(quote, now, limits.quote_max_age_s)
    terms = order_terms(intent, strategy_view=strategy_view, quote=live_quote)
    if circuit == "open":
        reasons.append(
            _reason(
                ReasonCode.CIRCUIT_OPEN,
                "circuit breaker is open: no orders until `tradeguard reset-circuit`",
            )
        )
    if terms.opening:
        _check_opening_gates(
            reasons,
            intent,
            limits=limits,
            strategy_view=strategy_view,
            portfolio=portfolio,
            reduce_only=reduce_only,
        )
    if intent.symbol in limits.restricted_symbols:
        reasons.append(
            _reason(ReasonCode.RESTRICTED_SYMBOL, f"{intent.symbol} is a restricted symbol")
        )
    _check_prices(
        reasons,
        intent,
        terms=terms,
        limits=limits,
        quote=quote,
        live_quote=live_quote,
        now=now,
        equity=portfolio.equity,
    )
    if terms.opening:
        _check_exposure(
            reasons,
            intent.symbol,
            terms=terms,
            limits=limits,
            strategy_view=strategy_view,
            portfolio=portfolio,
        )
    return reasons


def _check_opening_gates(
    reasons: list[Reason],
    intent: OrderIntent,
    *,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
    reduce_only: bool,
) -> None:
    """Reduce-only, drawdowns, pause, daily loss and confidence: opening orders only."""
    if reduce_only:
        reasons.append(_reason(ReasonCode.REDUCE_ONLY, _reduce_only_message(intent, strategy_view)))
    equity = portfolio.equity
    start = portfolio.start_of_day_equity
    daily = _drawdown(start, equity)
    if daily > 0 and _reaches(daily, limits.max_daily_drawdown):
        reasons.append(
            _reason(
                ReasonCode.DAILY_DRAWDOWN,
                f"daily drawdown {daily:.2%} >= limit {limits.max_daily_drawdown:.2%} "
                f"(equity {equity:.2f}, start of day {start:.2f})",
            )
        )
    peak = portfolio.peak_equity
    total = _drawdown(peak, equity)
    if total > 0 and _reaches(total, limits.max_total_drawdown):
        reasons.append(
            _reason(
                ReasonCode.TOTAL_DRAWDOWN,
                f"total drawdown {total:.2%} >= limit {limits.max_total_drawdown:.2%} "
                f"(equity {equity:.2f}, peak {peak:.2f})",
            )
        )
    if strategy_view.paused:
        reasons.append(
            _reason(ReasonCode.STRATEGY_PAUSED, "strategy is paused: only reducing orders")
        )
    loss = -strategy_view.session_pnl
    if _reaches(loss, limits.max_daily_loss):
        reasons.append(
            _reason(
                ReasonCode.STRATEGY_DAILY_LOSS,
                f"strategy loss this session {loss:.2f} >= limit {limits.max_daily_loss:.2f}",
            )
        )
    minimum = limits.min_confidence
    if minimum is None:
        return
    if intent.confidence is None:
        reasons.append(
            _reason(
                ReasonCode.LOW_CONFIDENCE,
                f"confidence missing; this strategy needs >= {minimum:.2f}",
            )
        )
    elif _below(intent.confidence, minimum):
        reasons.append(
            _reason(
                ReasonCode.LOW_CONFIDENCE,
                f"confidence {intent.confidence:.2f} < minimum {minimum:.2f}",
            )
        )


def _check_prices(
    reasons: list[Reason],
    intent: OrderIntent,
    *,
    terms: OrderTerms,
    limits: EffectiveLimits,
    quote: Quote | None,
    live_quote: Quote | None,
    now: float,
    equity: float,
) -> None:
    """Quote, deviation, minimum price, notional and risk per trade."""
    if live_quote is None:
        reasons.append(
            _reason(
                ReasonCode.PRICE_DEVIATION,
                _no_quote_message(intent.symbol, quote, now, limits.quote_max_age_s),
            )
        )
    else:
        mid = live_quote.mid
        allowed = limits.max_price_deviation * mid
        for name, price in (("limit_price", intent.limit_price), ("stop_price", intent.stop_price)):
            if price is not None and _above(abs(price - mid), allowed):
                reasons.append(
                    _reason(
                        ReasonCode.PRICE_DEVIATION,
                        f"{name} {price:.2f} is {abs(price - mid) / mid:.2%} from mid {mid:.2f} "
                        f"(limit {limits.max_price_deviation:.2%})",
                    )
                )
    price_ref = terms.reference_price
    if terms.opening and price_ref is not None and _below(price_ref, limits.min_price):
        reasons.append(
            _reason(ReasonCode.MIN_PRICE, f"price {price_ref:.2f} < minimum {limits.min_price:.2f}")
        )
    notional = terms.notional
    if notional is not None and _above(notional, limits.max_notional):
        reasons.append(
            _reason(
                ReasonCode.MAX_NOTIONAL,
                f"notional {notional:.2f} > limit {limits.max_notional:.2f}",
            )
        )
    if terms.opening and price_ref is not None and terms.opening_qty is not None:
        message = _risk_message(intent, price_ref, terms.opening_qty, limits, equity)
        if message is not None:
            reasons.append(_reason(ReasonCode.RISK_PER_TRADE, message))


def _check_exposure(
    reasons: list[Reason],
    symbol: str,
    *,
    terms: OrderTerms,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
) -> None:
    """Allocation, capital deployed and position count: opening orders only."""
    equity = portfolio.equity
    added = terms.added_exposure
    if added is not None:
        allowed = limits.allocation * equity
        exposure = strategy_view.gross_exposure + added
        if equity <= 0 or _above(exposure, allowed):
            reasons.append(
                _reason(
                    ReasonCode.STRATEGY_ALLOCATION,
                    f"strategy exposure {strategy_view.gross_exposure:.2f} + order {added:.2f} "
                    f"= {exposure:.2f} > allocation {allowed:.2f} "
                    f"({limits.allocation:.2%} of equity {equity:.2f})",
                )
            )
        deployed = portfolio.gross_exposure + sum(portfolio.pending_opening.values()) + added
        if equity <= 0 or _above(deployed, limits.max_capital_deployed * equity):
            share = f"{deployed / equity:.2%}" if equity > 0 else "all"
            reasons.append(
                _reason(
                    ReasonCode.CAPITAL_DEPLOYED,
                    f"capital deployed {share} > limit {limits.max_capital_deployed:.2%} "
                    f"(exposure {deployed:.2f} of equity {equity:.2f})",
                )
            )
    held_symbols = portfolio.held_symbols
    pending_opening = portfolio.pending_opening
    if symbol in held_symbols or symbol in pending_opening:
        return
    held = len(held_symbols)
    pending = sum(1 for s in pending_opening if s not in held_symbols)
    if held + pending + 1 > limits.max_positions:
        reasons.append(
            _reason(
                ReasonCode.MAX_POSITIONS,
                f"{symbol} would be position {held + pending + 1} > limit "
                f"{limits.max_positions} ({held} held, {pending} pending)",
            )
        )


def _reduce_only_message(intent: OrderIntent, strategy_view: StrategyView) -> str:
    position = strategy_view.positions.get(intent.symbol)
    held = 0.0 if position is None else position.qty
    size = f"{intent.qty:g}" if intent.qty is not None else f"notional {intent.notional:.2f} of"
    return (
        f"reduce-only mode (daily drawdown warning): {intent.side} {size} {intent.symbol} "
        f"does not shrink the strategy's position {held:g}"
    )


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
    if equity > 0 and not _above(risk, allowed):
        return None
    return f"{what} > limit {allowed:.2f} ({limits.max_risk_per_trade:.2%} of equity {equity:.2f})"


def _trail_distance(intent: OrderIntent, entry: float) -> float | None:
    """A trailing stop's distance from the reference price: its trail, in dollars."""
    if intent.trail_price is not None:
        return intent.trail_price
    if intent.trail_percent is not None:
        return entry * intent.trail_percent / 100
    return None


# --------------------------------------------------------------------------- rate and duplicates


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``.

    It starts full. ``now`` going backwards (a clock step) refills nothing.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, *, now: float | None = None) -> None:
        """A full bucket; ``now`` is the time of the first take (default: at the first take)."""
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def _refill(self, now: float) -> None:
        last = self._last
        if last is None or now <= last:
            if last is None:
                self._last = now
            return
        self._tokens = min(self.burst, self._tokens + (now - last) * self.rate)
        self._last = now

    def available(self, now: float) -> bool:
        """Whether a token can be taken at ``now`` (refills, takes nothing)."""
        self._refill(now)
        return self._tokens >= 1

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class RateLimiter:
    """``RATE_LIMIT``: one token bucket per strategy plus an optional global one.

    Each bucket refills at its rate (``max_intents_per_second``) and holds one
    second's worth, at least one intent. An intent takes a token from both its
    strategy's bucket and the global one, or from neither: a strategy refused
    by the global bucket keeps its own tokens.
    """

    def __init__(
        self,
        strategy_rates: Mapping[str, float],
        *,
        global_rate: float | None = None,
    ) -> None:
        """Buckets for the strategies in ``strategy_rates``; ``global_rate`` None: no global cap."""
        self._buckets = {
            sid: TokenBucket(rate, max(1.0, rate)) for sid, rate in strategy_rates.items()
        }
        self._global = (
            None if global_rate is None else TokenBucket(global_rate, max(1.0, global_rate))
        )

    def check(self, strategy_id: str, now: float) -> Reason | None:
        """Admit one intent of ``strategy_id`` at ``now``, or say why not.

        Raises:
            KeyError: ``strategy_id`` was not configured (unknown strategies are
                rejected before any limit is checked).
        """
        bucket = self._buckets[strategy_id]
        glob = self._global
        if not bucket.available(now):
            return _reason(
                ReasonCode.RATE_LIMIT,
                f"more than {bucket.rate:g} intents/s from strategy {strategy_id} "
                f"(burst {bucket.burst:g})",
            )
        if glob is not None and not glob.take(now):
            return _reason(
                ReasonCode.RATE_LIMIT,
                f"more than {glob.rate:g} intents/s across all strategies (burst {glob.burst:g})",
            )
        bucket.take(now)
        return None


_ContentKey = tuple[
    str,
    str,
    str,
    float | None,
    float | None,
    str,
    float | None,
    float | None,
    str,
    bool,
    tuple[str, float | None, float | None, float | None, float | None],
]


class DuplicateDetector:
    """``DUPLICATE_INTENT``: the same order under a new ``intent_id``, too soon.

    The content is what the broker would receive: symbol, side, qty, notional,
    order type, limit and stop price, time in force, extended hours, trail and
    order class with its take-profit and (for a bracket, where it is a broker-held
    stop) ``stop_loss`` (not a simple order's ``stop_loss``, ``confidence`` or ``ts``),
    per strategy: two strategies may
    send the same order. It is a duplicate when an *accepted* intent of the same
    content and another id was recorded less than ``window_s`` before (at
    exactly ``window_s`` it is new again). A re-sent intent with the *same* id
    is not a duplicate: the order manager answers it from the journal.

    Memory is bounded: expired entries are dropped as they reach the front of
    the insertion order, and beyond ``max_entries`` the oldest ones go.
    """

    def __init__(self, *, max_entries: int = 10_000) -> None:
        """An empty detector keeping at most ``max_entries`` recent orders."""
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        # key -> (intent_id, recorded at, expires at); insertion order ~ time order.
        self._seen: OrderedDict[_ContentKey, tuple[str, float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many orders are remembered."""
        return len(self._seen)

    @staticmethod
    def _key(strategy_id: str, intent: OrderIntent) -> _ContentKey:
        return (
            strategy_id,
            intent.symbol,
            intent.side,
            intent.qty,
            intent.notional,
            intent.order_type,
            intent.limit_price,
            intent.stop_price,
            intent.time_in_force,
            intent.extended_hours,
            (
                intent.order_class,
                intent.take_profit,
                intent.stop_loss if intent.order_class == "bracket" else None,
                intent.trail_percent,
                intent.trail_price,
            ),
        )

    def check(
        self, strategy_id: str, intent: OrderIntent, *, now: float, window_s: float
    ) -> Reason | None:
        """Whether ``intent`` repeats a recorded order inside ``window_s`` (0: never)."""
        if window_s <= 0:
            return None
        entry = self._seen.get(self._key(strategy_id, intent))
        if entry is None:
            return None
        first_id, recorded_at, _ = entry
        age = now - recorded_at
        if first_id == intent.intent_id or age >= window_s:
            return None
        return _reason(
            ReasonCode.DUPLICATE_INTENT,
            f"same order as intent {first_id} {max(age, 0.0):.1f} s ago "
            f"(window {window_s:g} s); send it again after the window or change it",
        )

    def record(self, strategy_id: str, intent: OrderIntent, *, now: float, window_s: float) -> None:
        """Remember an accepted ``intent`` for ``window_s`` (0: not at all)."""
        seen = self._seen
        while seen:
            _, (_, _, expires) = next(iter(seen.items()))
            if expires > now and len(seen) < self._max_entries:
                break
            seen.popitem(last=False)
        if window_s <= 0:
            return
        key = self._key(strategy_id, intent)
        seen.pop(key, None)
        seen[key] = (intent.intent_id, now, now + window_s)
