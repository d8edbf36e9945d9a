"""The checks of an intent that never depend on prices: halt, kill switches, staleness.

They come first in every decision (and again when a person approves a waiting
intent), before the limits of :mod:`actors.core.risk_limits`.
"""

from __future__ import annotations

from protocol.messages import OrderIntent, Reason
from protocol.reasons import ReasonCode

__all__ = ["gate_reasons"]


def gate_reasons(
    strategy_id: str,
    intent: OrderIntent,
    *,
    now: float,
    received_at: float | None,
    halt_reason: str | None,
    blocked: ReasonCode | None,
    max_intent_age_s: float,
) -> list[Reason]:
    """``TRADING_HALTED``, the kill switches and ``STALE_INTENT``, in that order.

    Staleness counts twice: the intent's own ``ts`` against now, and for every
    intent, how long it waited in the daemon (say, while the broker was unreachable
    at start-up) -- so nothing queued is traded late, with or without a ``ts``.

    Args:
        strategy_id: the strategy that sent ``intent``.
        intent: the order intent.
        now: the decision time, epoch seconds.
        received_at: when the daemon received it (None: not counted).
        halt_reason: why trading is halted, None while it is not.
        blocked: the kill switch that blocks the strategy
            (:meth:`~actors.core.trading_state.KillGate.blocked`), or None.
        max_intent_age_s: the strategy's ``max_intent_age_s``.
    """
    reasons: list[Reason] = []
    if halt_reason is not None:
        reasons.append(
            Reason(code=ReasonCode.TRADING_HALTED, message=f"trading halted: {halt_reason}")
        )
    if blocked is ReasonCode.KILL_SWITCH_GLOBAL:
        reasons.append(Reason(code=blocked, message="global kill switch is engaged"))
    elif blocked is ReasonCode.KILL_SWITCH_STRATEGY:
        reasons.append(
            Reason(code=blocked, message=f"kill switch of strategy {strategy_id} is engaged")
        )
    stale = _staleness(intent, now, received_at, max_intent_age_s)
    if stale is not None:
        reasons.append(Reason(code=ReasonCode.STALE_INTENT, message=stale))
    return reasons


def _staleness(
    intent: OrderIntent, now: float, received_at: float | None, max_age: float
) -> str | None:
    """Why the intent is too old (or too far ahead) to trade, or None."""
    if received_at is not None and now - received_at > max_age:
        return (
            f"intent waited {now - received_at:.1f} s in the daemon before it could be "
            f"decided (limit {max_age:g} s)"
        )
    if intent.ts is not None and abs(now - intent.ts) > max_age:
        direction = "old" if intent.ts < now else "in the future"
        return f"intent ts is {abs(now - intent.ts):.1f} s {direction} (limit {max_age:g} s)"
    return None
