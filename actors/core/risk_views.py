"""What the risk limits look at: quotes, strategy and account snapshots, merged limits.

The :class:`~actors.risk_guardian.RiskGuardian` builds these immutable snapshots right
before a check (:mod:`actors.core.risk_limits`); :func:`effective_limits` merges
``[risk]`` with one strategy's table once, at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from actors.core.settings import RiskConfig, StrategyConfig

__all__ = [
    "EffectiveLimits",
    "PortfolioView",
    "PositionView",
    "Quote",
    "StrategyView",
    "effective_limits",
]


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
