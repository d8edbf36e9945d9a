"""The checks that block opening orders only, so that a strategy can always shrink its risk.

Gates: ``REDUCE_ONLY``, the account's drawdowns, ``STRATEGY_PAUSED``,
``STRATEGY_DAILY_LOSS`` and ``LOW_CONFIDENCE``. Exposure: ``STRATEGY_ALLOCATION``,
``CAPITAL_DEPLOYED`` and ``MAX_POSITIONS``. The definitions and bounds are those of
:mod:`actors.core.risk_limits`; each check returns the reasons it finds, in order.
"""

from __future__ import annotations

from actors.core.limit_bounds import above, below, drawdown, reaches
from actors.core.order_terms import OrderTerms
from actors.core.risk_views import EffectiveLimits, PortfolioView, StrategyView
from protocol.messages import OrderIntent, Reason
from protocol.reasons import ReasonCode

__all__ = ["exposure_reasons", "opening_gate_reasons"]


def opening_gate_reasons(
    intent: OrderIntent,
    *,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
    reduce_only: bool,
) -> list[Reason]:
    """Reduce-only, drawdowns, pause, daily loss and confidence, in that order."""
    reasons: list[Reason] = []
    if reduce_only:
        reasons.append(
            Reason(code=ReasonCode.REDUCE_ONLY, message=_reduce_only_message(intent, strategy_view))
        )
    reasons += _drawdown_reasons(limits, portfolio)
    if strategy_view.paused:
        reasons.append(
            Reason(
                code=ReasonCode.STRATEGY_PAUSED,
                message="strategy is paused: only reducing orders",
            )
        )
    loss = -strategy_view.session_pnl
    if reaches(loss, limits.max_daily_loss):
        reasons.append(
            Reason(
                code=ReasonCode.STRATEGY_DAILY_LOSS,
                message=f"strategy loss this session {loss:.2f} >= limit "
                f"{limits.max_daily_loss:.2f}",
            )
        )
    reasons += _confidence_reasons(intent, limits)
    return reasons


def _drawdown_reasons(limits: EffectiveLimits, portfolio: PortfolioView) -> list[Reason]:
    """``DAILY_DRAWDOWN`` and ``TOTAL_DRAWDOWN`` (a limit of 0: no loss tolerated)."""
    reasons: list[Reason] = []
    equity = portfolio.equity
    start = portfolio.start_of_day_equity
    daily = drawdown(start, equity)
    if daily > 0 and reaches(daily, limits.max_daily_drawdown):
        reasons.append(
            Reason(
                code=ReasonCode.DAILY_DRAWDOWN,
                message=f"daily drawdown {daily:.2%} >= limit {limits.max_daily_drawdown:.2%} "
                f"(equity {equity:.2f}, start of day {start:.2f})",
            )
        )
    peak = portfolio.peak_equity
    total = drawdown(peak, equity)
    if total > 0 and reaches(total, limits.max_total_drawdown):
        reasons.append(
            Reason(
                code=ReasonCode.TOTAL_DRAWDOWN,
                message=f"total drawdown {total:.2%} >= limit {limits.max_total_drawdown:.2%} "
                f"(equity {equity:.2f}, peak {peak:.2f})",
            )
        )
    return reasons


def _confidence_reasons(intent: OrderIntent, limits: EffectiveLimits) -> list[Reason]:
    """``LOW_CONFIDENCE``: missing or below the strategy's ``min_confidence``."""
    minimum = limits.min_confidence
    if minimum is None:
        return []
    if intent.confidence is None:
        return [
            Reason(
                code=ReasonCode.LOW_CONFIDENCE,
                message=f"confidence missing; this strategy needs >= {minimum:.2f}",
            )
        ]
    if below(intent.confidence, minimum):
        return [
            Reason(
                code=ReasonCode.LOW_CONFIDENCE,
                message=f"confidence {intent.confidence:.2f} < minimum {minimum:.2f}",
            )
        ]
    return []


def _reduce_only_message(intent: OrderIntent, strategy_view: StrategyView) -> str:
    position = strategy_view.positions.get(intent.symbol)
    held = 0.0 if position is None else position.qty
    size = f"{intent.qty:g}" if intent.qty is not None else f"notional {intent.notional:.2f} of"
    return (
        f"reduce-only mode (daily drawdown warning): {intent.side} {size} {intent.symbol} "
        f"does not shrink the strategy's position {held:g}"
    )


def exposure_reasons(
    symbol: str,
    *,
    terms: OrderTerms,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
) -> list[Reason]:
    """Allocation, capital deployed and position count, in that order."""
    reasons: list[Reason] = []
    added = terms.added_exposure
    if added is not None:
        reasons += _allocation_reasons(added, limits, strategy_view, portfolio)
    reasons += _position_count_reasons(symbol, limits, portfolio)
    return reasons


def _allocation_reasons(
    added: float,
    limits: EffectiveLimits,
    strategy_view: StrategyView,
    portfolio: PortfolioView,
) -> list[Reason]:
    """``STRATEGY_ALLOCATION`` and ``CAPITAL_DEPLOYED`` with ``added`` exposure."""
    reasons: list[Reason] = []
    equity = portfolio.equity
    allowed = limits.allocation * equity
    exposure = strategy_view.gross_exposure + added
    if equity <= 0 or above(exposure, allowed):
        reasons.append(
            Reason(
                code=ReasonCode.STRATEGY_ALLOCATION,
                message=f"strategy exposure {strategy_view.gross_exposure:.2f} + order "
                f"{added:.2f} = {exposure:.2f} > allocation {allowed:.2f} "
                f"({limits.allocation:.2%} of equity {equity:.2f})",
            )
        )
    deployed = portfolio.gross_exposure + sum(portfolio.pending_opening.values()) + added
    if equity <= 0 or above(deployed, limits.max_capital_deployed * equity):
        share = f"{deployed / equity:.2%}" if equity > 0 else "all"
        reasons.append(
            Reason(
                code=ReasonCode.CAPITAL_DEPLOYED,
                message=f"capital deployed {share} > limit {limits.max_capital_deployed:.2%} "
                f"(exposure {deployed:.2f} of equity {equity:.2f})",
            )
        )
    return reasons


def _position_count_reasons(
    symbol: str, limits: EffectiveLimits, portfolio: PortfolioView
) -> list[Reason]:
    """``MAX_POSITIONS``: an order in a symbol neither held nor pending opens a new one."""
    held_symbols = portfolio.held_symbols
    pending_opening = portfolio.pending_opening
    if symbol in held_symbols or symbol in pending_opening:
        return []
    held = len(held_symbols)
    pending = sum(1 for s in pending_opening if s not in held_symbols)
    if held + pending + 1 <= limits.max_positions:
        return []
    return [
        Reason(
            code=ReasonCode.MAX_POSITIONS,
            message=f"{symbol} would be position {held + pending + 1} > limit "
            f"{limits.max_positions} ({held} held, {pending} pending)",
        )
    ]
