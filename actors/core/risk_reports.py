"""What the risk guardian publishes, built from its state: pure, the caller passes ``ts``.

The retained daemon state (``P/v1/daemon/state``) and the list of intents waiting for
a person's approval (``P/v1/approval/pending``).
"""

from __future__ import annotations

from collections.abc import Iterable

from actors.core.circuit_breaker import CircuitBreaker, SessionState
from protocol.messages import (
    ApprovalPending,
    BrokerKind,
    DaemonState,
    PendingApproval,
    TradingMode,
)

__all__ = ["EXTERNAL_ORDERS_SHOWN", "approval_list", "daemon_state"]

EXTERNAL_ORDERS_SHOWN = 50
"""The daemon state lists this many of the latest orders placed outside the daemon."""


def daemon_state(
    *,
    version: str,
    mode: TradingMode,
    broker: BrokerKind,
    broker_connected: bool,
    breaker: CircuitBreaker,
    equity: float | None,
    halt_reason: str | None,
    strategies: Iterable[str],
    session: SessionState,
    external_orders: list[str],
    ts: float,
) -> DaemonState:
    """The retained daemon state message (drawdowns rounded to 6 places).

    Args:
        version: the daemon's version.
        mode: paper or live.
        broker: the broker's kind.
        broker_connected: whether the broker is reachable.
        breaker: the circuit breaker (state, reason, baselines, drawdowns).
        equity: the broker's equity at the last poll.
        halt_reason: why trading is halted, None while it is not.
        strategies: the configured strategy ids.
        session: the trading session the daily limits count from.
        external_orders: client order ids of orders placed outside the daemon.
        ts: the time of the message.
    """
    return DaemonState(
        version=version,
        mode=mode,
        broker=broker,
        broker_connected=broker_connected,
        circuit=breaker.state,
        equity=equity,
        daily_drawdown=_round(breaker.daily_drawdown),
        total_drawdown=_round(breaker.total_drawdown),
        ts=ts,
        trading_halted=halt_reason is not None,
        halt_reason=halt_reason,
        strategies=sorted(strategies),
        start_of_day_equity=breaker.start_of_day_equity,
        peak_equity=breaker.peak_equity,
        circuit_reason=breaker.reason,
        session=session.session,
        external_orders=external_orders[-EXTERNAL_ORDERS_SHOWN:],
    )


def approval_list(approvals: Iterable[PendingApproval], ts: float) -> ApprovalPending:
    """The retained pending-approval list, oldest request first."""
    return ApprovalPending(pending=sorted(approvals, key=lambda a: a.requested_at), ts=ts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
